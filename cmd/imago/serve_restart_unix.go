//go:build unix

package main

import "syscall"

// execSelf runs exe in place of this process (execve): it returns only on failure. Every file
// and socket Go opened is close-on-exec, so the new run starts with none of them.
func execSelf(exe string, args, env []string) error {
	return syscall.Exec(exe, args, env)
}
