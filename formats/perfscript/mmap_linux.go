package perfscript

import (
	"os"
	"syscall"
)

// mapFile maps f read-only. MAP_POPULATE maps every page of the file now,
// in one call, instead of one page fault per 64 KiB as the workers reach
// them.
func mapFile(f *os.File, size int) ([]byte, func(), error) {
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		return nil, nil, err
	}
	_ = syscall.Madvise(data, syscall.MADV_SEQUENTIAL)
	return data, func() { _ = syscall.Munmap(data) }, nil
}
