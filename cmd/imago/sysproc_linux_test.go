package main

import "syscall"

// childSysProcAttr makes the kernel kill a server child when the test binary dies (a panic or
// a test timeout), so no orphan keeps a port and a data directory.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
