package collectors

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/ianlancetaylor/demangle"

	"github.com/profcap/profcap/formats/firefox"
)

// ELFSymbolizer names the library-relative addresses samply leaves
// unsymbolicated, from the ELF files of the recorded process: it finds a
// library's file by its path (through /proc/PID/root, then as is) or by the
// process's memory map, checks its GNU build-id against the profile's
// codeId, reads .symtab and .dynsym with debug/elf and maps the relative
// address (SVMA − vmaddr of the first PT_LOAD, samply's
// relative_address_base) to the function containing it.
//
// Use Symbolize as firefox.Options.Symbolize, then Notes for what could not
// be named. Safe for one goroutine (the importer's).
type ELFSymbolizer struct {
	pid   int
	mu    sync.Mutex
	maps  map[string]bool // paths mapped by the process (from /proc/PID/maps)
	libs  map[string]*elfSyms
	kinds map[string]bool // kernel etc. libraries seen, which are not ELF files here
}

type elfSym struct {
	addr, size uint64
	name       string
}

type elfSyms struct {
	lib     firefox.Lib
	path    string // the file read, "" if none
	base    uint64 // vaddr of the first PT_LOAD
	syms    []elfSym
	problem string // why frames of this library stay unnamed, or ""
	dynOnly bool   // only .dynsym: exported functions only
	asked   int
	named   int
}

// NewELFSymbolizer returns a symbolizer for the libraries of pid (0: use
// only the paths the profile names). It reads /proc/PID/maps now, while the
// process still runs; call AddMaps again later to catch libraries loaded
// meanwhile.
func NewELFSymbolizer(pid int) *ELFSymbolizer {
	s := &ELFSymbolizer{pid: pid, maps: map[string]bool{}, libs: map[string]*elfSyms{}, kinds: map[string]bool{}}
	s.AddMaps()
	return s
}

// AddMaps (re)reads /proc/PID/maps, adding the files mapped now.
func (s *ELFSymbolizer) AddMaps() {
	if s.pid <= 0 {
		return
	}
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
	es := s.libs[key]
	s.mu.Unlock()
	if es == nil {
		es = s.load(lib)
		s.mu.Lock()
		s.libs[key] = es
		s.mu.Unlock()
	}
	es.asked++
	if es.problem != "" || len(es.syms) == 0 {
		return "", false
	}
	svma := addr + es.base
	i := sort.Search(len(es.syms), func(i int) bool { return es.syms[i].addr > svma }) - 1
	if i < 0 {
		return "", false
	}
	sym := es.syms[i]
	if sym.size > 0 && svma >= sym.addr+sym.size {
		return "", false
	}
	if sym.size == 0 && i+1 < len(es.syms) && svma >= es.syms[i+1].addr {
		return "", false
	}
	es.named++
	return sym.name, true
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

func (s *ELFSymbolizer) load(lib firefox.Lib) *elfSyms {
	es := &elfSyms{lib: lib}
	name := lib.Name
	if name == "" {
		name = filepath.Base(lib.Path)
	}
	if strings.HasPrefix(name, "[") {
		// [kernel.kallsyms], [vdso], [virtio_net]: not files profcap reads.
		es.problem = "kernel or virtual object, not an ELF file on disk"
		return es
	}
	cands := s.candidates(lib)
	if len(cands) == 0 {
		es.problem = "the profile gives no path and the process maps no file of that name"
		return es
	}
	var mismatch, unreadable []string
	for _, path := range cands {
		f, err := elf.Open(path)
		if err != nil {
			if !os.IsNotExist(err) {
				unreadable = append(unreadable, fmt.Sprintf("%s: %v", path, err))
			}
			continue
		}
		if want := normBuildID(lib.CodeID); want != "" {
			if got := buildID(f); got != "" && got != want {
				mismatch = append(mismatch, path)
				f.Close()
				continue
			}
		}
		es.path = path
		s.readSymbols(f, es)
		f.Close()
		return es
	}
	switch {
	case len(mismatch) > 0:
		es.problem = fmt.Sprintf("%s has another build-id than the one recorded (%s): the file was replaced after the recording", mismatch[0], lib.CodeID)
	case len(unreadable) > 0:
		es.problem = "cannot read " + unreadable[0]
	default:
		es.problem = fmt.Sprintf("file gone (looked for %s)", strings.Join(cands, ", "))
	}
	return es
}

func (s *ELFSymbolizer) readSymbols(f *elf.File, es *elfSyms) {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			// samply's relative_address_base: 0 for PIE executables
			// and shared objects, 0x400000 etc. for non-PIE ones.
			es.base = p.Vaddr
			break
		}
	}
	var syms []elfSym
	add := func(list []elf.Symbol) {
		for _, sym := range list {
			t := elf.ST_TYPE(sym.Info)
			if (t != elf.STT_FUNC && t != elf.STT_GNU_IFUNC) || sym.Value == 0 || sym.Section == elf.SHN_UNDEF {
				continue
			}
			syms = append(syms, elfSym{addr: sym.Value, size: sym.Size, name: demangle.Filter(sym.Name)})
		}
	}
	symtab, _ := f.Symbols()
	add(symtab)
	dyn, _ := f.DynamicSymbols()
	add(dyn)
	if len(symtab) == 0 {
		es.dynOnly = true
	}
	if len(syms) == 0 {
		es.problem = fmt.Sprintf("%s is stripped (no .symtab, no functions in .dynsym)", es.path)
		return
	}
	sort.Slice(syms, func(i, j int) bool {
		if syms[i].addr != syms[j].addr {
			return syms[i].addr < syms[j].addr
		}
		return syms[i].size > syms[j].size
	})
	// One symbol per address (aliases: keep the first, the .symtab one).
	out := syms[:1]
	for _, s := range syms[1:] {
		if s.addr != out[len(out)-1].addr {
			out = append(out, s)
		}
	}
	es.syms = out
}

// normBuildID lower-cases a codeId; Mach-O UUIDs and PE ids that are not
// build-ids of 8 to 40 hex digits give "".
func normBuildID(id string) string {
	id = strings.ToLower(strings.TrimSpace(id))
	if len(id) < 8 || len(id) > 64 {
		return ""
	}
	if _, err := hex.DecodeString(id); err != nil {
		return ""
	}
	return id
}

// buildID returns the GNU build-id of f in hex, or "".
func buildID(f *elf.File) string {
	for _, sec := range f.Sections {
		if sec.Type != elf.SHT_NOTE {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			continue
		}
		for len(data) >= 12 {
			bo := f.ByteOrder
			nsz, dsz, typ := bo.Uint32(data), bo.Uint32(data[4:]), bo.Uint32(data[8:])
			nEnd := 12 + align4(uint64(nsz))
			dEnd := nEnd + align4(uint64(dsz))
			if dEnd > uint64(len(data)) {
				break
			}
			name := data[12 : 12+uint64(nsz)]
			if typ == 3 /* NT_GNU_BUILD_ID */ && bytes.Equal(bytes.TrimRight(name, "\x00"), []byte("GNU")) {
				return hex.EncodeToString(data[nEnd : nEnd+uint64(dsz)])
			}
			data = data[dEnd:]
		}
	}
	return ""
}

func align4(n uint64) uint64 { return (n + 3) &^ 3 }

// Notes says which libraries' frames stay unnamed, and why; "" when every
// library asked about was read.
func (s *ELFSymbolizer) Notes() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var probs []string
	for _, es := range s.libs {
		if es.asked == 0 {
			continue
		}
		name := es.lib.Name
		switch {
		case es.problem != "":
			probs = append(probs, fmt.Sprintf("%s (%s)", name, es.problem))
		case es.dynOnly && es.named < es.asked:
			probs = append(probs, fmt.Sprintf("%s (%s has no .symtab: only exported functions are named)", name, es.path))
		}
	}
	if len(probs) == 0 {
		return ""
	}
	sort.Strings(probs)
	return "frames left as LIB+0xADDR: " + strings.Join(probs, "; ")
}
