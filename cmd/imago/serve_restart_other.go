//go:build !unix

package main

import "errors"

// execSelf cannot replace the process on this system: the supervisor restarts it.
func execSelf(string, []string, []string) error {
	return errors.New("re-executing is not supported on this system")
}
