//go:build unix && !linux

package collectors

import "syscall"

// toolProcAttr starts a profiling tool in its own process group (see the
// Linux version; there is no parent-death signal here).
func toolProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
