// Package tmpfs holds test helpers that run storage on a small tmpfs, mounted by the test, to
// make it run out of space or of inodes on demand: a real file system fault that a real disk
// cannot be made to produce when a test wants it. Mounting needs root; elsewhere the tests that
// use it skip. The disk-full tests of the gateway, the coordinator and the offset store share
// these helpers.
package tmpfs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of the given size ("2m") on a new directory, unmounted when the test
// ends, and returns the directory. It skips the test when it cannot mount (not root).
func Mount(t testing.TB, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	MountOn(t, dir, "size="+size)
	return dir
}

// MountOn mounts a tmpfs with the given options ("size=2m,uid=105,mode=0700") on the existing
// directory dir, unmounted when the test ends. It skips the test when it cannot mount (not
// root).
func MountOn(t testing.TB, dir, opts string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// Remount changes the options ("nr_inodes=100") of the tmpfs mounted on mnt.
func Remount(t testing.TB, mnt, opts string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+opts, mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount %s with %s: %v: %s", mnt, opts, err, out)
	}
}

// NoInodes remounts the tmpfs on mnt with no inode left (creating a file fails with ENOSPC)
// and returns a function that gives it room for inodes again.
func NoInodes(t testing.TB, mnt string) (free func()) {
	t.Helper()
	Remount(t, mnt, "nr_inodes="+strconv.FormatUint(UsedInodes(t, mnt), 10))
	return func() { Remount(t, mnt, "nr_inodes=10000") }
}

// Fill writes a file into dir that leaves about leave bytes free on dir's file system and
// returns a function that deletes it. With leave 0 only the unused bytes of files' last pages
// can still be written, and a file system that fills up meanwhile (what the test runs wrote
// too) is full as asked: Fill stops there.
func Fill(t testing.TB, dir string, leave int64) (free func()) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	avail := int64(st.Bavail) * int64(st.Bsize)
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for n := avail - leave; n > 0; n -= int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(int64(len(chunk)), n)]); err != nil {
			if leave == 0 && errors.Is(err, syscall.ENOSPC) {
				break // full already: something else wrote meanwhile (a database's own files)
			}
			// Closed and removed first: an open file keeps the tmpfs busy, so its unmount at
			// the end of the test would fail and leave it mounted.
			f.Close()
			os.Remove(path)
			t.Fatalf("fill: %v", err)
		}
	}
	f.Close()
	return func() {
		t.Helper()
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

// UsedInodes is the number of inodes in use on dir's file system.
func UsedInodes(t testing.TB, dir string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Files - st.Ffree
}
