//go:build !unix

package fsutil

import (
	"errors"
	"os"
)

// ErrNoMmap: shared memory maps are not supported on this platform.
var ErrNoMmap = errors.New("memory-mapped files are not supported on this platform")

// MapShared is not available off unix.
func MapShared(f *os.File, size int) ([]byte, error) { return nil, ErrNoMmap }

// Unmap is not available off unix.
func Unmap(data []byte) error { return ErrNoMmap }
