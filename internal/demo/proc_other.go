//go:build !unix

package demo

import (
	"errors"
	"syscall"
)

func checkPlatform() error { return errors.New("the demo cluster needs a Unix system") }

func detachedAttr() *syscall.SysProcAttr { return nil }

func signal(pid int, sig syscall.Signal) error { return checkPlatform() }

func processAlive(pid int) bool { return false }

func isDemoService(pid int, name, dir string) bool { return false }
