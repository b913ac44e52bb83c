package outbox_test

import "syscall"

// childSysProcAttr makes the kernel kill a child when the test binary dies, so no orphan
// relay or broker outlives the test.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
