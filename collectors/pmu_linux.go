package collectors

import (
	"errors"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hardwareCycles reports whether this machine offers perf's hardware CPU
// cycles event (a virtual machine without a virtual PMU does not: perf
// falls back to the cpu-clock software event there, and so do samply and
// every other sampler that checks). The answer is asked of the kernel once,
// by opening the event disabled on profcap itself, user space only (which
// any kernel.perf_event_paranoid up to 2 allows).
func hardwareCycles() bool {
	hwOnce.Do(func() {
		attr := unix.PerfEventAttr{
			Type:   unix.PERF_TYPE_HARDWARE,
			Config: unix.PERF_COUNT_HW_CPU_CYCLES,
			Bits:   unix.PerfBitDisabled | unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv,
		}
		attr.Size = uint32(unsafe.Sizeof(attr))
		fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err == nil {
			unix.Close(fd)
			hwCycles = true
			return
		}
		// No such event: ENOENT (no PMU), EOPNOTSUPP. Anything else
		// (EACCES under paranoid 3, a seccomp EPERM) says nothing about
		// the hardware: assume it is there.
		hwCycles = !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENODEV)
	})
	return hwCycles
}

var (
	hwOnce   sync.Once
	hwCycles bool
)
