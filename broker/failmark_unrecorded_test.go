package broker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

// When the fail mark cannot be recorded after a failed fsync of the log, the restart must still
// not serve the bytes whose fsync failed: the broker cuts the log at once, or, if it cannot,
// makes the next start refuse until an operator has cut it.
//
// The mark's overwrite fails here through the fsync seam (fsutil.SetHook), a fake: a real btrfs
// or NFS that answers ENOSPC to an overwrite in place cannot be produced on demand (a full tmpfs
// takes the overwrite of allocated bytes). The hook, at the mark's fdatasync, puts the mark's
// old bytes back and fails, as if the write had been refused. As everywhere in these tests, a failed fdatasync of
// the log leaves its bytes in the page cache, where a restart without a reboot reads them.

// failMarkFaults installs a hook under which the first fdatasync of the log fails (failLog
// makes every later one fail as well) and the fail mark cannot be recorded: a sync of the
// failmark file at its full size fails with ENOSPC. A sync of the emptied mark succeeds. The
// returned function removes the hook (the disk is well again).
func failMarkFaults(t *testing.T, dir string, failLog bool) (restore func()) {
	t.Helper()
	logFile := fileSyncUnder(filepath.Join(dir, "log"))
	var mu sync.Mutex
	failed := false
	restore = fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if filepath.Base(ev.Path) == failMarkName && ev.Size == failMarkSize {
			// The overwrite did not happen: put the old bytes back (no mark) and fail.
			if err := unwriteFailMark(ev.Path); err != nil {
				return err
			}
			return syscall.ENOSPC
		}
		if logFile(ev) {
			mu.Lock()
			fail := !failed || failLog
			failed = true
			mu.Unlock()
			if fail {
				return syscall.EIO
			}
		}
		return do()
	})
	t.Cleanup(restore)
	return restore
}

// unwriteFailMark zeroes the fail mark at path (the state with no mark), through its own
// descriptor and without a sync, so that the hook does not see it.
func unwriteFailMark(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(make([]byte, failMarkSize), 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// TestUnrecordedFailMarkCutsTheLog: the fsync of a produce fails and so does recording the
// durable end; the broker cuts the log there at once, so the request, answered with a storage
// failure (not outcome unknown), is not served after the restart, and its retry with the same
// key is stored once, as a new message.
func TestUnrecordedFailMarkCutsTheLog(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	produceN(t, b, 1)
	durable := b.log.durable.Load()
	heal := failMarkFaults(t, dir, false)
	_, err := b.Produce(context.Background(), "t", []Message{msg("failed")}, "k")
	if err == nil || errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrStorage) {
		t.Errorf("produce whose fsync failed, the log cut: %v; want a storage failure (not stored)", err)
	}
	if fi, err := os.Stat(lastSegment(t, dir)); err != nil {
		t.Fatal(err)
	} else if fi.Size() != durable {
		t.Errorf("segment after the failure: %d bytes, want it cut at the durable end %d", fi.Size(), durable)
	}
	b.abandon()
	heal()

	b = mustOpen(t, o)
	defer b.Close()
	wantValues(t, fetchAll(t, b, "t", 0), 1)
	res, err := b.Produce(context.Background(), "t", []Message{msg("v1")}, "k")
	if err != nil || res.Duplicate || res.Offsets[0].Offset != 1 {
		t.Fatalf("retry after the restart: %+v %v, want a new message at offset 1", res, err)
	}
	wantValues(t, fetchAll(t, b, "t", 0), 2)
}

// TestUnrecordedFailMarkRefusesStart: neither the mark nor the cut of the log can be made
// durable (every fdatasync of the log fails). The request is answered outcome unknown, and the
// next start refuses, naming the fail mark and the runbook, instead of serving the request from
// the page cache. After the runbook's steps (cut the log at the durable end, remove the mark)
// the start serves what was stored before the failure.
func TestUnrecordedFailMarkRefusesStart(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	produceN(t, b, 1)
	durable := b.log.durable.Load()
	heal := failMarkFaults(t, dir, true)
	if _, err := b.Produce(context.Background(), "t", []Message{msg("failed")}, ""); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("produce whose fsync failed, neither marked nor cut: %v; want ErrOutcomeUnknown", err)
	}
	b.abandon()
	heal()

	mark := filepath.Join(dir, failMarkName)
	if b, err := Open(o); err == nil {
		got := values(fetchAll(t, b, "t", 0))
		b.Close()
		t.Fatalf("the start after an unrecorded failure opened and serves %v", got)
	} else if !strings.Contains(err.Error(), mark) || !strings.Contains(err.Error(), `docs/runbooks.md, "An empty fail mark"`) {
		t.Fatalf("the refused start says %q; want the fail mark %s and the runbook named", err, mark)
	}
	if _, err := VerifyLog(dir); err == nil || !strings.Contains(err.Error(), mark) {
		t.Fatalf("imago log verify after an unrecorded failure: %v; want the refusal naming %s", err, mark)
	}

	// The runbook: cut the last segment (here the only one, at log position 0) at the durable
	// end the error log named, and remove the mark.
	seg := lastSegment(t, dir)
	if err := os.Truncate(seg, durable); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(mark); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, o)
	defer b.Close()
	wantValues(t, fetchAll(t, b, "t", 0), 1)
}

// TestFailingDiskKeepsTheMark: every fdatasync fails (a dying disk), but writes still reach the
// page cache, so the mark's write took although its sync failed. The broker must not empty the
// mark (the start would then refuse, and the emptied file is no more durable than the mark): a
// restart without a reboot reads the mark, cuts the log there and serves what was stored before.
func TestFailingDiskKeepsTheMark(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	produceN(t, b, 1)
	heal := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if ev.Kind == fsutil.File {
			return syscall.EIO
		}
		return do()
	})
	t.Cleanup(heal)
	if _, err := b.Produce(context.Background(), "t", []Message{msg("failed")}, "k"); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("produce on a disk whose every fsync fails: %v; want ErrOutcomeUnknown (nothing could be made durable)", err)
	}
	b.abandon()
	heal()

	b = mustOpen(t, o)
	defer b.Close()
	wantValues(t, fetchAll(t, b, "t", 0), 1)
	res, err := b.Produce(context.Background(), "t", []Message{msg("v1")}, "k")
	if err != nil || res.Duplicate || res.Offsets[0].Offset != 1 {
		t.Fatalf("retry after the restart: %+v %v, want a new message at offset 1", res, err)
	}
}
