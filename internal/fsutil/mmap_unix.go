//go:build unix

package fsutil

import (
	"fmt"
	"os"
	"syscall"
)

// MapShared maps the first size bytes of f read-write and shared: stores reach the file through
// the page cache. Reserve the bytes first (Preallocate): a store into a page the file system
// cannot allocate is a SIGBUS, not an error.
func MapShared(f *os.File, size int) ([]byte, error) {
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", f.Name(), err)
	}
	return data, nil
}

// Unmap releases a mapping made by MapShared.
func Unmap(data []byte) error { return syscall.Munmap(data) }
