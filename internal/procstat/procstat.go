// Package procstat reads a local process's CPU time from /proc, so a
// capture can show whether profiling itself moved the target's CPU use.
package procstat

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"strconv"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports (the kernel fixes the
// user-visible value regardless of CONFIG_HZ).
const clockTicks = 100

// CPUTime returns the user+system CPU time the process (all its threads)
// has used so far.
func CPUTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStat(data)
}

// parseStat reads utime and stime (fields 14 and 15) from a /proc/PID/stat
// line. The command name (field 2) is in parentheses and may contain spaces
// and parentheses itself, so fields are counted from the last ')'.
func parseStat(data []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat line")
	}
	f := bytes.Fields(data[i+1:])
	// After ')': state(3) ppid(4) ... utime is field 14, the 12th after ')'.
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc stat line: %d fields", len(f)+2)
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc stat line: utime %q stime %q", f[11], f[12])
	}
	// No process has used ~2.9 million years of CPU: more ticks than a
	// Duration holds is a corrupt line, not a reading.
	const maxTicks = math.MaxInt64 / uint64(time.Second/clockTicks)
	if ut > maxTicks || st > maxTicks-ut {
		return 0, fmt.Errorf("malformed /proc stat line: utime %d stime %d ticks out of range", ut, st)
	}
	return time.Duration(ut+st) * (time.Second / clockTicks), nil
}
