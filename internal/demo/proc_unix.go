//go:build unix

package demo

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

func checkPlatform() error { return nil }

func detachedAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }

func signal(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

// processAlive reports whether pid is a live process; a zombie (exited,
// not yet reaped) is not.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		// pid (comm) STATE ...; comm may hold spaces and parentheses.
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return false
		}
	}
	return true
}

// isDemoService reports whether pid runs `profcap demo-service` for the
// service name of the cluster in dir, so that a stale PID file whose PID was
// reused by something else never gets that process signalled.
func isDemoService(pid int, name, dir string) bool {
	args, err := cmdline(pid)
	if err != nil {
		return false
	}
	var isService, nameOK, dirOK bool
	for i, a := range args {
		next := ""
		if i+1 < len(args) {
			next = args[i+1]
		}
		switch {
		case a == ServiceCommand:
			isService = true
		case a == "--name" && next == name, a == "--name="+name:
			nameOK = true
		case a == "--cluster" && next == dir, a == "--cluster="+dir:
			dirOK = true
		}
	}
	return isService && nameOK && dirOK
}

// cmdline returns the arguments of pid: from /proc where there is one,
// else from ps (split on spaces, which is enough for the demo's arguments).
func cmdline(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err == nil {
		return strings.Split(strings.TrimRight(string(data), "\x00"), "\x00"), nil
	}
	if _, statErr := os.Stat("/proc/self"); statErr == nil {
		return nil, err // a Linux /proc without this pid
	}
	out, err := exec.Command("ps", "-ww", "-o", "command=", "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}
