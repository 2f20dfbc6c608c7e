//go:build linux && amd64

package ebpf

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/ianlancetaylor/demangle"
)

// elfSymbolizer names addresses from ELF .symtab/.dynsym through each
// process's memory map, and kernel addresses from /proc/kallsyms. It is
// the stand-in for the symbolize package (same method set).
type elfSymbolizer struct {
	mu      sync.Mutex
	maps    map[int][]mapping
	files   map[string]*elfFile
	kernel  []ksym
	kread   bool
	noMaps  map[int]bool
	missing int
}

type mapping struct {
	start, end, off uint64
	path            string
	root            string // /proc/PID/root when taken, to open the file
}

type esym struct {
	addr, size uint64
	name       string
}

type elfFile struct {
	syms    []esym
	loads   []elf.ProgHeader
	buildID string
	err     error
}

type ksym struct {
	addr uint64
	name string
}

func newSymbolizer() symbolizer {
	return &elfSymbolizer{maps: map[int][]mapping{}, files: map[string]*elfFile{}, noMaps: map[int]bool{}}
}

func (s *elfSymbolizer) Snapshot(pid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return err
	}
	var ms []mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || !strings.Contains(f[1], "x") {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		m := mapping{}
		m.start, _ = strconv.ParseUint(lo, 16, 64)
		m.end, _ = strconv.ParseUint(hi, 16, 64)
		m.off, _ = strconv.ParseUint(f[2], 16, 64)
		if len(f) >= 6 {
			m.path = strings.Join(f[5:], " ")
		}
		m.root = fmt.Sprintf("/proc/%d/root", pid)
		ms = append(ms, m)
	}
	s.mu.Lock()
	s.maps[pid] = ms
	s.mu.Unlock()
	// Read the files now, while /proc/PID/root still resolves.
	for _, m := range ms {
		if strings.HasPrefix(m.path, "/") {
			s.file(m)
		}
	}
	return nil
}

func (s *elfSymbolizer) Inherit(pid, parent int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ms, ok := s.maps[parent]; ok {
		if _, have := s.maps[pid]; !have {
			s.maps[pid] = ms
		}
	}
}

func (s *elfSymbolizer) file(m mapping) *elfFile {
	s.mu.Lock()
	if f, ok := s.files[m.path]; ok {
		s.mu.Unlock()
		return f
	}
	s.mu.Unlock()
	f := &elfFile{}
	ef, err := elf.Open(m.root + m.path)
	if err != nil {
		ef, err = elf.Open(m.path)
	}
	if err != nil {
		f.err = err
	} else {
		for _, p := range ef.Progs {
			if p.Type == elf.PT_LOAD {
				f.loads = append(f.loads, p.ProgHeader)
			}
		}
		for _, get := range []func() ([]elf.Symbol, error){ef.Symbols, ef.DynamicSymbols} {
			syms, _ := get()
			for _, sy := range syms {
				if elf.ST_TYPE(sy.Info) == elf.STT_FUNC && sy.Value != 0 {
					f.syms = append(f.syms, esym{addr: sy.Value, size: sy.Size, name: sy.Name})
				}
			}
		}
		sort.Slice(f.syms, func(i, j int) bool { return f.syms[i].addr < f.syms[j].addr })
		f.buildID = buildID(ef)
		ef.Close()
	}
	s.mu.Lock()
	s.files[m.path] = f
	s.mu.Unlock()
	return f
}

func buildID(f *elf.File) string {
	sec := f.Section(".note.gnu.build-id")
	if sec == nil {
		return ""
	}
	b, err := sec.Data()
	if err != nil || len(b) < 16 {
		return ""
	}
	nameSz := int(f.ByteOrder.Uint32(b[0:4]))
	descSz := int(f.ByteOrder.Uint32(b[4:8]))
	start := 12 + (nameSz+3)&^3
	if start+descSz > len(b) {
		return ""
	}
	return hex.EncodeToString(b[start : start+descSz])
}

func (s *elfSymbolizer) User(pid int, addrs []uint64) []Frame {
	s.mu.Lock()
	ms, ok := s.maps[pid]
	s.mu.Unlock()
	if !ok {
		if err := s.Snapshot(pid); err == nil {
			s.mu.Lock()
			ms = s.maps[pid]
			s.mu.Unlock()
		} else {
			s.mu.Lock()
			s.noMaps[pid] = true
			s.mu.Unlock()
		}
	}
	out := make([]Frame, len(addrs))
	for i, a := range addrs {
		j := sort.Search(len(ms), func(j int) bool { return ms[j].end > a })
		if j == len(ms) || ms[j].start > a {
			s.mu.Lock()
			s.missing++
			s.mu.Unlock()
			continue
		}
		m := ms[j]
		if !strings.HasPrefix(m.path, "/") {
			out[i] = Frame{Function: m.path, Module: m.path, Offset: a - m.start, Known: m.path != ""}
			if m.path == "" {
				out[i] = Frame{Module: "[anon]", Offset: a}
			}
			continue
		}
		off := a - m.start + m.off
		fr := Frame{Module: m.path, Offset: off}
		f := s.file(m)
		fr.BuildID = f.buildID
		for _, p := range f.loads {
			if off >= p.Off && off < p.Off+p.Filesz {
				v := off - p.Off + p.Vaddr
				k := sort.Search(len(f.syms), func(k int) bool { return f.syms[k].addr > v }) - 1
				if k >= 0 && (f.syms[k].size == 0 || v < f.syms[k].addr+f.syms[k].size) {
					fr.Function, fr.Known = demangle.Filter(f.syms[k].name), true
				}
				break
			}
		}
		out[i] = fr
	}
	return out
}

func (s *elfSymbolizer) Kernel(addrs []uint64) []Frame {
	s.mu.Lock()
	if !s.kread {
		s.kread = true
		s.kernel = readKallsyms()
	}
	ks := s.kernel
	s.mu.Unlock()
	out := make([]Frame, len(addrs))
	for i, a := range addrs {
		k := sort.Search(len(ks), func(k int) bool { return ks[k].addr > a }) - 1
		out[i] = Frame{Module: "[kernel.kallsyms]", Offset: a}
		if k >= 0 {
			out[i].Function, out[i].Offset, out[i].Known = ks[k].name, a-ks[k].addr, true
		}
	}
	return out
}

func readKallsyms() []ksym {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []ksym
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 3 || (fs[1] != "t" && fs[1] != "T" && fs[1] != "w" && fs[1] != "W") {
			continue
		}
		a, err := strconv.ParseUint(fs[0], 16, 64)
		if err != nil || a == 0 {
			continue
		}
		out = append(out, ksym{addr: a, name: fs[2]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].addr < out[j].addr })
	return out
}

func (s *elfSymbolizer) Notes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	if len(s.noMaps) > 0 {
		out = append(out, fmt.Sprintf("%d processes exited before their memory maps were read: their frames are unnamed addresses", len(s.noMaps)))
	}
	if s.kread && len(s.kernel) == 0 {
		out = append(out, "/proc/kallsyms is unreadable or hides addresses (kernel.kptr_restrict): kernel frames are unnamed")
	}
	return out
}
