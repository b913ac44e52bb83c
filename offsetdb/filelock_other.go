//go:build !unix

package offsetdb

import "os"

// lockFile opens path; without flock, nothing stops a second process.
func lockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
}
