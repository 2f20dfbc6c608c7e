package taskdump

import (
	"bufio"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/formats/firefox"
	"github.com/profcap/profcap/targets"
)

// symbolizer returns a Symbolizer for the "?? at 0xADDR" frames of the
// process that served d, or nil: the addresses are the process's own, so
// they can be named only from its memory map, on its host, while it runs.
// The dump's pid is taken for this host's only where the target says so:
// its pid (or pid file) is that pid, or it has no pid and its URL is on
// loopback.
func (c *Collector) symbolizer(t *targets.Target, u string, d *Dump) Symbolizer {
	if d.PID <= 0 {
		return nil
	}
	if t.HasPID() {
		if pid, err := t.ResolvePID(); err != nil || pid != d.PID {
			return nil
		}
	} else if !loopback(u) {
		return nil
	}
	s, err := newProcSymbolizer(d.PID, c.opt.DebugDirs)
	if err != nil {
		return nil
	}
	return s
}

func loopback(u string) bool {
	pu, err := url.Parse(u)
	if err != nil {
		return false
	}
	h := pu.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

type procMap struct {
	start, end, off uint64
	path            string
}

type elfFile struct {
	path    string // as read (under /proc/PID/root where that works)
	buildID string
	progs   []elf.ProgHeader
	base    uint64 // vaddr of the first PT_LOAD
	lib     firefox.Lib
	bad     bool
}

// procSymbolizer names addresses of one local process: the mapping from
// /proc/PID/maps, the ELF file's load segments to turn the file offset into
// the file's own address, and its symbols (or, for a stripped file, those of
// its separate debug file found by build id) through collectors.ELFSymbolizer.
type procSymbolizer struct {
	pid       int
	maps      []procMap
	files     map[string]*elfFile
	elf       *collectors.ELFSymbolizer
	debugDirs []string
	cache     map[uint64]Symbol
}

func newProcSymbolizer(pid int, debugDirs []string) (*procSymbolizer, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := &procSymbolizer{pid: pid, files: map[string]*elfFile{}, elf: collectors.NewELFSymbolizer(0), debugDirs: debugDirs, cache: map[uint64]Symbol{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || !strings.HasPrefix(fs[5], "/") || !strings.Contains(fs[1], "x") {
			continue
		}
		a, b, ok := strings.Cut(fs[0], "-")
		if !ok {
			continue
		}
		start, e1 := strconv.ParseUint(a, 16, 64)
		end, e2 := strconv.ParseUint(b, 16, 64)
		off, e3 := strconv.ParseUint(fs[2], 16, 64)
		if e1 != nil || e2 != nil || e3 != nil {
			continue
		}
		s.maps = append(s.maps, procMap{start: start, end: end, off: off, path: strings.Join(fs[5:], " ")})
	}
	if len(s.maps) == 0 {
		return nil, fmt.Errorf("no executable mappings in /proc/%d/maps", pid)
	}
	return s, nil
}

func (s *procSymbolizer) file(path string) *elfFile {
	if ef := s.files[path]; ef != nil {
		return ef
	}
	ef := &elfFile{bad: true}
	s.files[path] = ef
	for _, p := range []string{fmt.Sprintf("/proc/%d/root%s", s.pid, path), path} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		ef.path, ef.bad = p, false
		ef.buildID = buildID(f)
		for _, pr := range f.Progs {
			if pr.Type == elf.PT_LOAD {
				if len(ef.progs) == 0 {
					ef.base = pr.Vaddr
				}
				ef.progs = append(ef.progs, pr.ProgHeader)
			}
		}
		f.Close()
		break
	}
	if ef.bad {
		return ef
	}
	ef.lib = firefox.Lib{Name: filepath.Base(path), Path: ef.path, CodeID: ef.buildID}
	if ef.buildID != "" && len(ef.buildID) > 2 {
		for _, dir := range s.debugDirs {
			dbg := filepath.Join(dir, ".build-id", ef.buildID[:2], ef.buildID[2:]+".debug")
			if _, err := os.Stat(dbg); err == nil {
				ef.lib.Path = dbg // its symbols, checked against the build id
				break
			}
		}
	}
	return ef
}

// Symbolize implements Symbolizer.
func (s *procSymbolizer) Symbolize(addr uint64) (Symbol, bool) {
	if sym, ok := s.cache[addr]; ok {
		return sym, sym.Func != ""
	}
	var sym Symbol
	for _, m := range s.maps {
		if addr < m.start || addr >= m.end {
			continue
		}
		ef := s.file(m.path)
		sym.Mapping = &Mapping{Start: m.start, Limit: m.end, Offset: m.off, File: m.path, BuildID: ef.buildID}
		if ef.bad {
			break
		}
		off := addr - m.start + m.off
		for _, p := range ef.progs {
			if off >= p.Off && off < p.Off+p.Filesz {
				svma := off - p.Off + p.Vaddr
				if name, ok := s.elf.Symbolize(ef.lib, svma-ef.base); ok {
					sym.Func = funcName(name)
				}
				break
			}
		}
		break
	}
	if len(s.cache) < 1<<16 {
		s.cache[addr] = sym
	}
	return sym, sym.Func != ""
}

// buildID returns the GNU build id of f in hex, or "".
func buildID(f *elf.File) string {
	for _, sec := range f.Sections {
		if sec.Type != elf.SHT_NOTE {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			continue
		}
		bo := f.ByteOrder
		for len(data) >= 12 {
			nsz, dsz, typ := uint64(bo.Uint32(data)), uint64(bo.Uint32(data[4:])), bo.Uint32(data[8:])
			nEnd := 12 + (nsz+3)&^3
			dEnd := nEnd + (dsz+3)&^3
			if dEnd > uint64(len(data)) || 12+nsz > uint64(len(data)) {
				break
			}
			if typ == 3 && strings.TrimRight(string(data[12:12+nsz]), "\x00") == "GNU" {
				return hex.EncodeToString(data[nEnd : nEnd+dsz])
			}
			data = data[dEnd:]
		}
	}
	return ""
}
