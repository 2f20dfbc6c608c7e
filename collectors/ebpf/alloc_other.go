//go:build !linux || !amd64

package ebpf

func allocMachineCheck() error { return machineCheck() }

func allocCheck(pid int) (string, error) { return "", errLack{machineCheck()} }

func notGo(pid int) error { return nil }
