package tmpfs

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fatalTB records a Fatal and ends the calling goroutine, as testing.T does, so that a test
// can look at what a failing helper left behind.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestFillThatFailsLeavesTheMountFree: a Fill that cannot write what it meant to (here it is
// asked to leave less than nothing free; in a test it happens when the code under test takes
// space between Fill's measure and its writes) fails the test without keeping its file open.
// An open file keeps the tmpfs busy: the unmount at the end of the test fails and the mount
// stays on the machine.
func TestFillThatFailsLeavesTheMountFree(t *testing.T) {
	mnt := Mount(t, "1m")
	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Fill(tb, mnt, -1<<20)
	}()
	<-done
	if tb.msg == "" {
		t.Fatal("Fill of more than the file system holds did not fail")
	}
	t.Logf("Fill failed as it should: %s", tb.msg)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list this process's descriptors: %v", err)
	}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, mnt+string(filepath.Separator)) {
			t.Errorf("descriptor %s is still open on %s", fd.Name(), target)
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "filler")); !os.IsNotExist(err) {
		t.Errorf("the filler is left behind: %v", err)
	}
}
