//go:build linux

package fsutil

import (
	"errors"
	"os"
	"syscall"
)

// Preallocate reserves size bytes of disk for f from offset 0 without changing its apparent
// contents (fallocate(2), mode 0: the file grows to size if shorter, blocks are allocated and
// read as zeros). After it succeeds, stores into the first size bytes, through write(2) or a
// shared mapping, cannot fail for lack of space; when the disk is full it returns ENOSPC here,
// as an error, instead of a SIGBUS at the first store into a mapped page. File systems that do
// not support fallocate get the file extended with zero writes instead.
func Preallocate(f *os.File, size int64) error {
	for {
		err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EOPNOTSUPP):
			return zeroFill(f, size)
		default:
			return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
		}
	}
}
