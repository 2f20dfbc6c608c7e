package collectors

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/profcap/profcap/formats/firefox"
	"github.com/profcap/profcap/symbolize"
)

// ELFSymbolizer names the library-relative addresses samply leaves
// unsymbolicated, with the symbolize package: it finds a library's file by
// its path (through /proc/PID/root, then as is) or by the process's memory
// map, checks its GNU build-id against the profile's codeId, and maps the
// relative address (SVMA − vaddr of the first PT_LOAD, samply's
// relative_address_base) to the function containing it.
//
// Use Symbolize as firefox.Options.Symbolize, then Notes for what could not
// be named. Safe for concurrent use.
type ELFSymbolizer struct {
	pid  int
	sym  *symbolize.Symbolizer
	mu   sync.Mutex
	maps map[string]bool // paths mapped by the process (from /proc/PID/maps)
	libs map[string]*elfLib
}

type elfLib struct {
	lib     firefox.Lib
	file    *symbolize.File // nil when no file fits
	base    uint64
	problem string // why frames of this library stay unnamed (set here), or ""
	asked   int
}

// NewELFSymbolizer returns a symbolizer for the libraries of pid (0: use
// only the paths the profile names). It reads /proc/PID/maps now, while the
// process still runs; call AddMaps again later to catch libraries loaded
// meanwhile.
func NewELFSymbolizer(pid int) *ELFSymbolizer {
	s := &ELFSymbolizer{pid: pid, sym: symbolize.New(symbolize.Options{NoLines: true}), maps: map[string]bool{}, libs: map[string]*elfLib{}}
	s.AddMaps()
	return s
}

// AddMaps (re)reads /proc/PID/maps, adding the files mapped now (and
// holding them open, so that a container's files outlive it).
func (s *ELFSymbolizer) AddMaps() {
	if s.pid <= 0 {
		return
	}
	_ = s.sym.Snapshot(s.pid)
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", s.pid))
	if err != nil {
		return
	}
	defer f.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) >= 6 && strings.HasPrefix(fields[5], "/") {
			s.maps[strings.Join(fields[5:], " ")] = true
		}
	}
}

// Symbolize names addr (relative to lib) or returns false.
func (s *ELFSymbolizer) Symbolize(lib firefox.Lib, addr uint64) (string, bool) {
	key := lib.CodeID + "\x00" + lib.Path + "\x00" + lib.Name
	s.mu.Lock()
	el := s.libs[key]
	s.mu.Unlock()
	if el == nil {
		el = s.load(lib)
		s.mu.Lock()
		if prev := s.libs[key]; prev != nil {
			el = prev
		} else {
			s.libs[key] = el
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	el.asked++
	s.mu.Unlock()
	if el.file == nil {
		return "", false
	}
	fr := el.file.LookupVaddr(addr + el.base)
	if !fr.Known {
		return "", false
	}
	return fr.Function, true
}

// candidates lists the files that may hold lib, best first.
func (s *ELFSymbolizer) candidates(lib firefox.Lib) []string {
	var out []string
	seen := map[string]bool{}
	add := func(p string) {
		if p != "" && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	s.mu.Lock()
	var mapped []string
	for p := range s.maps {
		if p == lib.Path || filepath.Base(p) == lib.Name || lib.DebugName != "" && filepath.Base(p) == lib.DebugName {
			mapped = append(mapped, p)
		}
	}
	s.mu.Unlock()
	sort.Strings(mapped)
	for _, p := range append([]string{lib.Path}, mapped...) {
		if !strings.HasPrefix(p, "/") {
			continue
		}
		if s.pid > 0 {
			// The target's own view of its files (containers, chroots).
			add(fmt.Sprintf("/proc/%d/root%s", s.pid, p))
		}
		add(p)
	}
	if strings.HasPrefix(lib.DebugPath, "/") {
		add(lib.DebugPath)
	}
	return out
}

func (s *ELFSymbolizer) load(lib firefox.Lib) *elfLib {
	el := &elfLib{lib: lib}
	name := lib.Name
	if name == "" {
		name = filepath.Base(lib.Path)
	}
	if strings.HasPrefix(name, "[") {
		// [kernel.kallsyms], [vdso], [virtio_net]: not files profcap reads.
		el.problem = "kernel or virtual object, not an ELF file on disk"
		return el
	}
	cands := s.candidates(lib)
	if len(cands) == 0 {
		el.problem = "the profile gives no path and the process maps no file of that name"
		return el
	}
	want := symbolize.NormBuildID(lib.CodeID)
	var mismatch, unreadable []string
	for _, path := range cands {
		f, err := elf.Open(path)
		if err != nil {
			if !os.IsNotExist(err) {
				unreadable = append(unreadable, fmt.Sprintf("%s: %v", path, err))
			}
			continue
		}
		got := symbolize.BuildIDOf(f)
		f.Close()
		if want != "" && got != "" && got != want {
			mismatch = append(mismatch, path)
			continue
		}
		shown := lib.Path
		if !strings.HasPrefix(shown, "/") {
			shown = strings.TrimPrefix(path, fmt.Sprintf("/proc/%d/root", s.pid))
		}
		el.file = s.sym.File(shown, path, got)
		el.base = el.file.Base()
		return el
	}
	switch {
	case len(mismatch) > 0:
		el.problem = fmt.Sprintf("%s has another build-id than the one recorded (%s): the file was replaced after the recording", mismatch[0], lib.CodeID)
	case len(unreadable) > 0:
		el.problem = "cannot read " + unreadable[0]
	default:
		el.problem = fmt.Sprintf("file gone (looked for %s)", strings.Join(cands, ", "))
	}
	return el
}

// normBuildID lower-cases a codeId; Mach-O UUIDs and PE ids that are not
// build-ids give "".
func normBuildID(id string) string { return symbolize.NormBuildID(id) }

// buildID returns the GNU build-id of f in hex, or "".
func buildID(f *elf.File) string { return symbolize.BuildIDOf(f) }

// Notes says which libraries' frames stay unnamed, and why (with the fix,
// from the symbolize package); "" when every library asked about was
// read.
func (s *ELFSymbolizer) Notes() string {
	s.mu.Lock()
	var probs []string
	for _, el := range s.libs {
		if el.asked > 0 && el.problem != "" {
			probs = append(probs, fmt.Sprintf("%s (%s)", el.lib.Name, el.problem))
		}
	}
	s.mu.Unlock()
	probs = append(probs, s.sym.Notes()...)
	if len(probs) == 0 {
		return ""
	}
	sort.Strings(probs)
	return "frames left as LIB+0xADDR: " + strings.Join(probs, "; ")
}
