//go:build !linux

package pyroscopetest

import "syscall"

// dieWithParent: no parent-death signal here; the test's cleanup stops
// the server.
func dieWithParent() *syscall.SysProcAttr { return nil }
