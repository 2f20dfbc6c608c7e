//go:build linux && amd64

package ebpf

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/symbolize"
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

// codeMapping is one executable file mapping of /proc/PID/maps.
type codeMapping struct {
	start, end, off uint64
	key             profcapFileKey // the file's device and inode, as BPF reads them from the VMA
	path            string
}

// vdsoKey stands for the vDSO among the files (it has no inode): its rows
// serve the CFI walk, never the fix-up's lookup by inode.
var vdsoKey = profcapFileKey{Ino: 0, Dev: ^uint32(0)}

// codeMappings reads pid's executable file mappings and its vDSO, in
// address order.
func codeMappings(pid int) ([]codeMapping, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	var out []codeMapping
	for _, e := range symbolize.ParseMaps(b) {
		if !e.Exec || !strings.HasPrefix(e.Path, "/") && e.Path != "[vdso]" {
			continue
		}
		key := profcapFileKey{Ino: e.Inode, Dev: e.Dev}
		if e.Path == "[vdso]" {
			key = vdsoKey
		}
		out = append(out, codeMapping{start: e.Start, end: e.End, off: e.Offset, key: key, path: e.Path})
	}
	return out, nil
}

// addFile loads the rows of one file (CFI from .eh_frame; a Go program's
// from its pclntab when goExe) once; ok says it has rows.
func (u *unwindInfo) addFile(pid int, m codeMapping, goExe bool) (profcapFileRows, bool) {
	if fr, seen := u.files[m.key]; seen {
		return fr, fr.Count > 0
	}
	u.files[m.key] = profcapFileRows{} // tried: no rows, until it has some
	var ef *elf.File
	var err error
	if m.path == "[vdso]" {
		// Not a file: the kernel's image, the same in every process
		// (clock_gettime and gettimeofday run there).
		var img []byte
		if img, err = symbolize.VDSOImage(); err == nil {
			ef, err = elf.NewFile(bytes.NewReader(img))
		}
	} else {
		ef, err = elf.Open(fmt.Sprintf("/proc/%d/root%s", pid, m.path))
	}
	if err != nil {
		u.notes = append(u.notes, fmt.Sprintf("%sno unwind table for %s: %v", warningPrefix, m.path, err))
		return profcapFileRows{}, false
	}
	defer ef.Close()
	var rows []cfaRow
	how := "rows"
	if goExe {
		if ef.Section(".gopclntab") == nil {
			delete(u.files, m.key) // not a Go program: its frames are its own (or its CFI's)
			return profcapFileRows{}, false
		}
		how = "Go pclntab: rows"
		if rows, err = goSPRows(ef); err != nil || len(rows) == 0 {
			u.notes = append(u.notes, fmt.Sprintf("ebpf: no leaf fix-up for the Go program %s: its pclntab: %v", m.path, err))
			return profcapFileRows{}, false
		}
	} else if rows, err = cfiRows(ef); err != nil || len(rows) == 0 {
		if ef.Section(".eh_frame") != nil {
			u.notes = append(u.notes, fmt.Sprintf("%sno unwind table for %s: its .eh_frame: %v", warningPrefix, m.path, err))
		}
		return profcapFileRows{}, false
	}
	if len(u.rows)+len(rows) > maxRows {
		u.notes = append(u.notes, fmt.Sprintf("%sno unwind table for %s: the table is full (%d rows)", warningPrefix, m.path, maxRows))
		return profcapFileRows{}, false
	}
	fr := profcapFileRows{First: uint32(len(u.rows)), Count: uint32(len(rows))}
	u.files[m.key] = fr
	for _, r := range rows {
		u.rows = append(u.rows, profcapRow{Off: uint32(r.Off), Cfa: r.CFA, Rbp: r.RBP})
	}
	u.libs = append(u.libs, fmt.Sprintf("%s (%s %d)", filepath.Base(m.path), how, len(rows)))
	return fr, true
}

// addLibraries builds the fix-up table for the frameless libraries the
// target maps, and for its executable when it is a Go program (its
// pclntab: Go's frameless leaf functions).
func (u *unwindInfo) addLibraries(pid int) {
	maps, err := codeMappings(pid)
	if err != nil {
		return
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	for _, m := range maps {
		isExe := exe != "" && m.path == exe
		if frameless(m.path) || isExe {
			u.addFile(pid, m, isExe && !frameless(m.path))
		}
	}
}

// addCFI makes pid a process the programs walk by CFI when its executable
// sets up no frame pointers: every file it maps as code gets its
// .eh_frame rows, and cfi_procs its mappings. Its frames are then whole
// where frame pointers would end after the sampled function.
func (u *unwindInfo) addCFI(pid int) {
	fp := collectors.FramePointersOf(fmt.Sprintf("/proc/%d/exe", pid))
	if !fp.Known || fp.Present {
		return
	}
	maps, err := codeMappings(pid)
	if err != nil {
		return
	}
	var cm profcapCfiMaps
	withRows := 0
	for _, m := range maps {
		if int(cm.N) == len(cm.M) {
			u.notes = append(u.notes, fmt.Sprintf("%spid %d maps more than %d code segments: those above %#x are walked by frame pointer", warningPrefix, pid, len(cm.M), m.start))
			break
		}
		fr, ok := u.addFile(pid, m, false)
		if ok {
			withRows++
		}
		cm.M[cm.N] = profcapCfiMap{Start: m.start, End: m.end, Off: m.off, First: fr.First, Count: fr.Count}
		cm.N++
	}
	if withRows == 0 {
		return
	}
	u.cfi[uint32(pid)] = cm
	u.cfiWhy = append(u.cfiWhy, fmt.Sprintf("pid %d (%s: %s)", pid, filepath.Base(exePath(pid)), fp))
}

func exePath(pid int) string {
	p, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return p
}
