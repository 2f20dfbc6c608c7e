package pyroscopetest

import "syscall"

// dieWithParent makes the server die with the test process.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
