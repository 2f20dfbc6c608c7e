//go:build unix && !linux

package perfscript

import (
	"os"
	"syscall"
)

// mapFile maps f read-only (macOS and the BSDs: no MAP_POPULATE).
func mapFile(f *os.File, size int) ([]byte, func(), error) {
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return data, func() { _ = syscall.Munmap(data) }, nil
}
