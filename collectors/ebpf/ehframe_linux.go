//go:build linux && amd64

package ebpf

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// frameless are the libraries whose code is built without frame pointers
// and that every native process calls through: glibc's system-call
// wrappers (read, write, clock_nanosleep, futex waits) are leaves without
// a frame, so frame-pointer unwinding loses their caller. The fix-up
// covers these.
func frameless(path string) bool {
	b := filepath.Base(path)
	return strings.HasPrefix(b, "libc.so") || strings.HasPrefix(b, "libc-") || strings.HasPrefix(b, "libpthread") || strings.HasPrefix(b, "ld-linux")
}

// maxRows bounds the table (the search takes 20 steps: 2^20 rows).
const maxRows = 1 << 20

// addLibraries builds the fix-up table for the frameless libraries the
// target maps, keyed by the file's device and inode as the kernel sees
// them (the columns of /proc/PID/maps), which BPF reads from the VMA.
func (u *unwindInfo) addLibraries(pid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	seen := map[profcapFileKey]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || !strings.Contains(f[1], "x") {
			continue
		}
		// libc and ld.so by their .eh_frame; the executable when it is a
		// Go program, by its pclntab (Go's frameless leaf functions).
		isExe := exe != "" && strings.Join(f[5:], " ") == exe
		if !frameless(f[5]) && !isExe {
			continue
		}
		maj, min, _ := strings.Cut(f[3], ":")
		ma, _ := strconv.ParseUint(maj, 16, 32)
		mi, _ := strconv.ParseUint(min, 16, 32)
		ino, _ := strconv.ParseUint(f[4], 10, 64)
		key := profcapFileKey{Ino: ino, Dev: uint32(ma<<20 | mi)}
		if seen[key] {
			continue
		}
		seen[key] = true
		path := strings.Join(f[5:], " ")
		ef, err := elf.Open(fmt.Sprintf("/proc/%d/root%s", pid, path))
		if err != nil {
			u.notes = append(u.notes, fmt.Sprintf("%sno leaf fix-up for %s: %v", warningPrefix, path, err))
			continue
		}
		var rows []cfaRow
		if isExe {
			if ef.Section(".gopclntab") == nil {
				ef.Close()
				continue // not a Go program: its frames are its own
			}
			rows, err = goSPRows(ef)
			ef.Close()
			if err != nil || len(rows) == 0 {
				u.notes = append(u.notes, fmt.Sprintf("ebpf: no leaf fix-up for the Go program %s: its pclntab: %v", path, err))
				continue
			}
		} else {
			rows, err = spRows(ef)
			ef.Close()
			if err != nil || len(rows) == 0 {
				u.notes = append(u.notes, fmt.Sprintf("%sno leaf fix-up for %s: its .eh_frame: %v", warningPrefix, path, err))
				continue
			}
		}
		if len(u.rows)+len(rows) > maxRows {
			u.notes = append(u.notes, fmt.Sprintf("%sno leaf fix-up for %s: the table is full", warningPrefix, path))
			continue
		}
		u.files[key] = profcapFileRows{First: uint32(len(u.rows)), Count: uint32(len(rows))}
		for _, r := range rows {
			u.rows = append(u.rows, profcapRow{Off: uint32(r.Off), Cfa: r.CFA})
		}
		if isExe {
			u.libs = append(u.libs, fmt.Sprintf("%s (Go pclntab: %d rows)", filepath.Base(path), len(rows)))
		} else {
			u.libs = append(u.libs, fmt.Sprintf("%s (%d rows)", filepath.Base(path), len(rows)))
		}
	}
}
