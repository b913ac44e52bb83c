//go:build !linux

package outbox_test

import "syscall"

func childSysProcAttr() *syscall.SysProcAttr { return nil }
