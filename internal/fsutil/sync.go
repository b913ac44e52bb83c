package fsutil

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Fdatasync makes f's contents durable (and the metadata needed to read them back, such as
// its size). On Linux it is fdatasync(2), retried on EINTR; elsewhere it falls back to fsync.
//
// A failed Fdatasync must be treated as final by the caller: Linux reports a writeback error
// once, so a second call may succeed although the pages it was about are gone.
func Fdatasync(f *os.File) error {
	return run(File, f, f.Name(), func() error { return fdatasync(f) })
}

// Fsync makes f's contents and all its metadata durable (fsync(2)).
func Fsync(f *os.File) error {
	return run(File, f, f.Name(), func() error { return retryEINTR(f.Sync) })
}

// SyncDir fsyncs the directory dir, which makes the names created, renamed or removed in it
// durable. Its error is always returned: a caller that renamed a file into place must not go on
// as if the rename were durable when this failed.
func SyncDir(dir string) error {
	return run(Dir, nil, dir, func() error {
		d, err := os.Open(dir)
		if err != nil {
			return fmt.Errorf("open dir %s: %w", dir, err)
		}
		defer d.Close()
		if err := retryEINTR(d.Sync); err != nil && !errors.Is(err, os.ErrInvalid) {
			// os.ErrInvalid: the file system does not sync directories (some do not); there is
			// nothing more to do there.
			return fmt.Errorf("sync dir %s: %w", dir, err)
		}
		return nil
	})
}

// MkdirAll creates dir and any missing parents, and fsyncs each directory that received a new
// entry, so that a power loss cannot take a freshly created data directory with its first files.
func MkdirAll(dir string, perm os.FileMode) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("mkdir %s: not a directory", dir)
		}
		return nil
	}
	parent := parentDir(dir)
	if parent != dir {
		if err := MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return err
	}
	return SyncDir(parent)
}

func retryEINTR(fn func() error) error {
	for {
		err := fn()
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
