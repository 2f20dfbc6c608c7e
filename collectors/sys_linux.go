package collectors

import "syscall"

// toolProcAttr starts a profiling tool (perf, samply, py-spy) in its own
// process group, so a Ctrl-C in the terminal reaches profcap only (which
// then stops the tool with SIGINT so it flushes), and has the kernel send it
// SIGTERM if profcap dies first, so no tool outlives the capture.
func toolProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
