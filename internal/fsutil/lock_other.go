//go:build !unix

package fsutil

import (
	"errors"
	"fmt"
	"os"
)

// ErrLocked is returned by LockFile when another process holds the lock.
var ErrLocked = errors.New("locked by another process")

// LockFile opens path. Without flock it cannot exclude another process: Imago's supported
// platforms are unix; this keeps the package building elsewhere.
func LockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
