//go:build !linux

package fsutil

import "os"

// Preallocate reserves size bytes for f by writing zeros past its current end (platforms
// without fallocate).
func Preallocate(f *os.File, size int64) error { return zeroFill(f, size) }
