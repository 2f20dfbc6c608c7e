package symbolize

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ulikunitz/xz"
)

// maxDebugData bounds what a .gnu_debugdata section may inflate to: real
// MiniDebugInfo is a few MiB (symbols only); a hostile file cannot cost
// more than this.
const maxDebugData = 256 << 20

// symbol is one function (or object) of an ELF file, in the file's
// virtual addresses, after perf's fix-ups (end of unsized symbols,
// duplicates removed).
type symbol struct {
	start, end uint64
	name       string // as in the file; demangled on first use
	bind, typ  uint8
	demangled  bool
	strtab     *strtabRef // the string table name is read from, on first use
	nameOff    uint32
	nameLen    uint32 // 0: NUL-terminated
	module     bool   // a kallsyms name with a "[module]"
}

// segment is a PT_LOAD program header.
type segment struct {
	vaddr, off, filesz, memsz uint64
	flags                     elf.ProgFlag
}

// object is one ELF file's symbols, loaded once and shared by every process
// that maps the file (the cache key is its build-id, else path, size and
// modification time).
type object struct {
	key     string
	path    string   // the path as mapped (what frames name as Module)
	open    string   // the file opened (e.g. through /proc/PID/root)
	file    *os.File // held open from Snapshot until loaded, so a container's file survives the process
	buildID string   // hex, "" if the file has none

	once sync.Once
	mu   sync.Mutex // guards names (lazy demangling)

	loads   []segment
	syms    []symbol
	machine elf.Machine
	// starts are the function starts of a stripped file (.eh_frame_hdr):
	// a nameless function's addresses share one frame, named by its start.
	starts []uint64

	// Where the symbols came from, for Notes.
	source      string // ".symtab", ".dynsym", ".gnu_debugdata + .dynsym", "debug file /usr/lib/debug/..."
	hasSymtab   bool   // the file itself has .symtab
	hasDynsym   bool
	debugFile   string // separate debug file used, "" if none
	debugLink   string // .gnu_debuglink name, "" if none
	debugCRCBad string // a debuglink candidate whose CRC did not match
	miniErr     string // why .gnu_debugdata could not be read
	stripped    bool   // an executable without .symtab, or a file without any symbols
	problem     string // why no symbol at all can be named, or ""

	lines     *lineTable // DWARF lines, nil until first asked
	linesOnce sync.Once

	asked, named atomic.Int64
}

// loadObject reads the symbols of o (once).
func (s *Symbolizer) loadObject(o *object) {
	o.once.Do(func() {
		s.readObject(o)
		if o.file != nil {
			if o.lines == nil && !s.opt.NoLines {
				// Keep the file for DWARF lines; it is closed with the
				// Symbolizer's cache.
				return
			}
			o.file.Close()
			o.file = nil
		}
	})
}

func (s *Symbolizer) readObject(o *object) {
	var r io.ReaderAt
	if o.file != nil {
		r = o.file
	} else {
		fh, err := openRegular(o.open)
		if err != nil {
			if c := s.cachedCopy(o); c != nil {
				fh, err = c, nil
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				o.problem = fmt.Sprintf("%s is gone (deleted or replaced since it was mapped)", o.path)
			} else {
				o.problem = fmt.Sprintf("cannot read %s: %v", o.path, err)
			}
			return
		}
		o.file = fh
		r = fh
	}
	var f *elf.File
	var err error
	if fh, ok := r.(*os.File); ok {
		f, err = mapELF(fh)
	} else {
		f, err = elf.NewFile(r)
	}
	if err != nil {
		o.problem = fmt.Sprintf("%s is not an ELF file: %v", o.path, err)
		return
	}
	if id := buildIDOf(f); o.buildID != "" && id != "" && id != o.buildID {
		// Replaced since the recording: perf's build-id cache may keep
		// the recorded one.
		if c := s.cachedCopy(o); c != nil {
			if cf, err := mapELF(c); err == nil && buildIDOf(cf) == o.buildID {
				forget(f)
				o.file.Close()
				o.file, f = c, cf
			} else {
				forget(cf)
				c.Close()
			}
		}
	}
	o.machine = f.Machine
	id := buildIDOf(f)
	if o.buildID != "" && id != "" && id != o.buildID {
		o.problem = fmt.Sprintf("%s has build-id %s, not the %s recorded: the file was replaced after the recording", o.path, id, o.buildID)
		return
	}
	if o.buildID == "" {
		o.buildID = id
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			o.loads = append(o.loads, segment{vaddr: p.Vaddr, off: p.Off, filesz: p.Filesz, memsz: p.Memsz, flags: p.Flags})
		}
	}
	o.hasSymtab = f.Section(".symtab") != nil && f.Section(".symtab").Type == elf.SHT_SYMTAB
	o.hasDynsym = f.Section(".dynsym") != nil
	if sec := f.Section(".gnu_debuglink"); sec != nil {
		if data, err := sec.Data(); err == nil {
			if name, _, err := ParseDebugLink(data, f.ByteOrder); err == nil {
				o.debugLink = name
			}
		}
	}

	// perf's order: a separate debug file (by build-id, then by
	// .gnu_debuglink) with a .symtab wins over the file's own .symtab;
	// then .symtab; then .dynsym. MiniDebugInfo (.gnu_debugdata) comes
	// before .dynsym and is merged with it, as perf 6.9+ and gdb do.
	var syms []symbol
	if df, path := s.debugFile(o, f); df != nil {
		syms = elfSymbols(df, f, false)
		if len(syms) > 0 {
			o.debugFile = path
			o.source = "debug file " + path
		}
		forget(df)
		df.Close()
	}
	defer forget(f)
	if len(syms) == 0 && o.hasSymtab {
		syms = elfSymbols(f, f, false)
		o.source = ".symtab"
	}
	if len(syms) == 0 {
		if mini, err := miniDebugInfo(f); err == nil && mini != nil {
			syms = elfSymbols(mini, f, false)
			if len(syms) > 0 {
				syms = append(syms, elfSymbols(f, f, true)...)
				o.source = ".gnu_debugdata + .dynsym"
			}
		} else if err != nil {
			o.miniErr = err.Error()
		}
	}
	if len(syms) == 0 && o.hasDynsym {
		syms = elfSymbols(f, f, true)
		o.source = ".dynsym"
		funcs := 0
		for _, s := range syms {
			if s.typ == uint8(elf.STT_FUNC) || s.typ == uint8(elf.STT_GNU_IFUNC) {
				funcs++
			}
		}
		// An executable's .dynsym holds what it imports (and what it
		// exports for plugins, if anything): without .symtab its own
		// functions are nameless, which is what "stripped" means. A
		// library's .dynsym names what it exports.
		o.stripped = funcs == 0 || isExecutable(f)
	}
	if len(syms) == 0 && !o.hasSymtab && !o.hasDynsym {
		o.stripped = true
	}
	if f.Machine == elf.EM_X86_64 || f.Machine == elf.EM_386 {
		syms = append(syms, pltSymbols(f)...)
	}
	o.syms = fixupSymbols(syms, false)
	if o.stripped {
		o.starts = FunctionStarts(f)
	}
	if len(o.syms) == 0 && len(o.starts) == 0 {
		o.problem = fmt.Sprintf("%s is stripped (no .symtab, no functions in .dynsym)", o.path)
	}
	if o.stripped {
		o.source = "no .symtab"
	}
}

// openRegular opens a regular file only: a path from a recording may name a
// FIFO or a device, which must not block or feed the symbolizer.
func openRegular(path string) (*os.File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return os.Open(path)
}

// cachedCopy opens perf's copy of o from its build-id cache
// (~/.debug/.build-id/xx/yyyy/elf), or returns nil.
func (s *Symbolizer) cachedCopy(o *object) *os.File {
	if s.opt.BuildIDCache == "" || len(o.buildID) <= 2 {
		return nil
	}
	f, err := openRegular(filepath.Join(s.opt.BuildIDCache, ".build-id", o.buildID[:2], o.buildID[2:], "elf"))
	if err != nil {
		return nil
	}
	return f
}

// debugFile finds the separate debug file of o, in perf's order: by
// .gnu_debuglink (next to the file, in its .debug directory, under each
// debug directory; the link's CRC must match), in perf's build-id cache
// (~/.debug/.build-id/xx/yyyy/debug, where perf record puts what it found),
// by build-id under each debug directory (.build-id/xx/yyyy.debug), and by
// path under each debug directory (Fedora's PATH.debug, Ubuntu's PATH). Only
// a file with a .symtab and the same build-id counts. It returns nil when
// there is none.
func (s *Symbolizer) debugFile(o *object, f *elf.File) (*elf.File, string) {
	try := func(path string) *elf.File {
		if path == o.open || path == o.path {
			return nil
		}
		df, err := openELF(path)
		if err != nil {
			return nil
		}
		if o.buildID != "" {
			if id := buildIDOf(df); id != "" && id != o.buildID {
				forget(df)
				df.Close()
				return nil
			}
		}
		if sec := df.Section(".symtab"); sec == nil || sec.Type != elf.SHT_SYMTAB {
			forget(df)
			df.Close()
			return nil
		}
		return df
	}
	if sec := f.Section(".gnu_debuglink"); sec != nil {
		if data, err := sec.Data(); err == nil {
			if name, crc, err := ParseDebugLink(data, f.ByteOrder); err == nil {
				dir := filepath.Dir(o.path)
				cands := []string{filepath.Join(dir, name), filepath.Join(dir, ".debug", name)}
				for _, d := range s.opt.DebugDirs {
					cands = append(cands, filepath.Join(d, dir, name))
				}
				if o.open != o.path && strings.HasPrefix(o.open, "/proc/") {
					// The process's own view (a container's root) first.
					root := strings.TrimSuffix(o.open, o.path)
					cands = append([]string{filepath.Join(root, dir, name), filepath.Join(root, dir, ".debug", name)}, cands...)
				}
				for _, p := range cands {
					if p == o.open || p == o.path {
						continue // the link names the file itself
					}
					got, err := fileCRC(p)
					if err != nil {
						continue
					}
					if got != crc {
						o.debugCRCBad = p
						continue
					}
					if df := try(p); df != nil {
						return df, p
					}
				}
			}
		}
	}
	if len(o.buildID) > 2 {
		if s.opt.BuildIDCache != "" {
			p := filepath.Join(s.opt.BuildIDCache, ".build-id", o.buildID[:2], o.buildID[2:], "debug")
			if df := try(p); df != nil {
				return df, p
			}
		}
		for _, dir := range s.opt.DebugDirs {
			p := filepath.Join(dir, ".build-id", o.buildID[:2], o.buildID[2:]+".debug")
			if df := try(p); df != nil {
				return df, p
			}
		}
	}
	if filepath.IsAbs(o.path) {
		for _, dir := range s.opt.DebugDirs {
			for _, p := range []string{filepath.Join(dir, o.path+".debug"), filepath.Join(dir, o.path)} {
				if df := try(p); df != nil {
					return df, p
				}
			}
		}
	}
	return nil, ""
}

// ParseDebugLink parses the contents of a .gnu_debuglink section: a
// NUL-terminated file name, padding to a multiple of 4, and the CRC-32 of
// the debug file in the ELF file's byte order.
func ParseDebugLink(data []byte, bo binary.ByteOrder) (name string, crc uint32, err error) {
	i := bytes.IndexByte(data, 0)
	if i <= 0 {
		return "", 0, errors.New(".gnu_debuglink: no file name")
	}
	off := (i + 4) &^ 3
	if off+4 > len(data) {
		return "", 0, errors.New(".gnu_debuglink: no CRC after the file name")
	}
	name = string(data[:i])
	if strings.ContainsRune(name, '/') || name == "." || name == ".." {
		// A link is a base name; anything else would let a file point
		// the symbolizer anywhere.
		return "", 0, fmt.Errorf(".gnu_debuglink: %q is not a file name", name)
	}
	return name, bo.Uint32(data[off:]), nil
}

// fileCRC is the CRC-32 (IEEE, as gdb's gnu_debuglink_crc32) of a file.
func fileCRC(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return 0, errors.New("not a regular file")
	}
	h := crc32.NewIEEE()
	if _, err := io.Copy(h, f); err != nil {
		return 0, err
	}
	return h.Sum32(), nil
}

// miniDebugInfo opens the xz-compressed ELF file in .gnu_debugdata (gdb's
// MiniDebugInfo, which Fedora and others ship instead of .symtab), or
// returns nil when there is none.
func miniDebugInfo(f *elf.File) (*elf.File, error) {
	sec := f.Section(".gnu_debugdata")
	if sec == nil || sec.Type == elf.SHT_NOBITS {
		return nil, nil
	}
	raw, err := sec.Data()
	if err != nil {
		return nil, err
	}
	zr, err := xz.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf(".gnu_debugdata: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(zr, maxDebugData+1))
	if err != nil {
		return nil, fmt.Errorf(".gnu_debugdata: %w", err)
	}
	if len(data) > maxDebugData {
		return nil, fmt.Errorf(".gnu_debugdata: inflates beyond %d bytes", maxDebugData)
	}
	return elf.NewFile(bytes.NewReader(data))
}

// elfSymbols reads the functions and objects of f's .symtab (or .dynsym
// when dyn), as perf's dso__load_sym filters them: named, defined, not
// absolute, in an allocated section; untyped symbols (assembly labels)
// only in text or data sections and when not hidden. runtime is the
// mapped file, whose sections stand in for NOBITS ones of a debug file.
//
// The table is read raw, not with debug/elf's Symbols: names stay offsets
// into the string table until a symbol is looked up (a large C++ or Rust
// binary has hundreds of thousands, of which a profile names a few
// hundred).
func elfSymbols(f, runtime *elf.File, dyn bool) []symbol {
	name := ".symtab"
	want := elf.SHT_SYMTAB
	if dyn {
		name, want = ".dynsym", elf.SHT_DYNSYM
	}
	sec := f.Section(name)
	if sec == nil || sec.Type != want || int(sec.Link) >= len(f.Sections) {
		return nil
	}
	data, err := sectionData(f, sec)
	if err != nil {
		return nil
	}
	strs, err := sectionData(f, f.Sections[sec.Link])
	if err != nil {
		return nil
	}
	tab := &strtabRef{b: strs, mm: mappingOf(f)}
	entSize := 24
	if f.Class == elf.ELFCLASS32 {
		entSize = 16
	}
	bo := f.ByteOrder
	out := make([]symbol, 0, len(data)/entSize/2)
	for off := entSize; off+entSize <= len(data); off += entSize { // entry 0 is the null symbol
		e := data[off : off+entSize]
		var nameOff uint32
		var info, other byte
		var shndx elf.SectionIndex
		var value, size uint64
		if entSize == 24 {
			nameOff, info, other, shndx = bo.Uint32(e), e[4], e[5], elf.SectionIndex(bo.Uint16(e[6:]))
			value, size = bo.Uint64(e[8:]), bo.Uint64(e[16:])
		} else {
			nameOff, value, size = bo.Uint32(e), uint64(bo.Uint32(e[4:])), uint64(bo.Uint32(e[8:]))
			info, other, shndx = e[12], e[13], elf.SectionIndex(bo.Uint16(e[14:]))
		}
		typ := elf.ST_TYPE(info)
		if nameOff == 0 || int(nameOff) >= len(strs) || strs[nameOff] == 0 || shndx == elf.SHN_UNDEF || shndx == elf.SHN_ABS || shndx >= elf.SHN_LORESERVE {
			continue
		}
		isLabel := false
		switch typ {
		case elf.STT_FUNC, elf.STT_GNU_IFUNC, elf.STT_OBJECT:
		case elf.STT_NOTYPE:
			vis := elf.ST_VISIBILITY(other)
			if vis == elf.STV_HIDDEN || vis == elf.STV_INTERNAL {
				continue
			}
			isLabel = true
		default:
			continue
		}
		if int(shndx) >= len(f.Sections) {
			continue
		}
		s := f.Sections[shndx]
		if s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		if isLabel {
			secName := s.Name
			if s.Type == elf.SHT_NOBITS && runtime != nil && int(shndx) < len(runtime.Sections) {
				secName = runtime.Sections[shndx].Name
			}
			if !strings.Contains(secName, "text") && !strings.Contains(secName, "data") {
				continue
			}
		}
		if (f.Machine == elf.EM_ARM || f.Machine == elf.EM_AARCH64) && int(nameOff)+1 < len(strs) && strs[nameOff] == '$' && bytes.IndexByte([]byte("adtx"), strs[nameOff+1]) >= 0 {
			continue // ARM mapping symbols
		}
		if f.Machine == elf.EM_ARM && typ == elf.STT_FUNC {
			value &^= 1 // Thumb bit
		}
		out = append(out, symbol{start: value, end: value + size, strtab: tab, nameOff: nameOff, bind: uint8(elf.ST_BIND(info)), typ: uint8(typ)})
	}
	return out
}

// fixupSymbols sorts symbols and applies perf's symbols__fixup_end (an
// unsized symbol runs to the next one; the last to the end of its page plus
// a page) and then symbols__fixup_duplicate (of symbols starting at one
// address, keep the best by choose_best_symbol), in that order as perf
// does for ELF files and kallsyms alike: so of unsized symbols at one
// address the last one, which alone got a size, wins.
func fixupSymbols(syms []symbol, kallsyms bool) []symbol {
	if len(syms) == 0 {
		return nil
	}
	// In address order, symbols of one address in table order (perf's
	// rb-tree keeps them so). Sorting 16-byte keys and permuting once is
	// much faster than sorting the symbols themselves.
	type key struct {
		start uint64
		i     uint32
	}
	keys := make([]key, len(syms))
	sorted := true
	for i := range syms {
		keys[i] = key{syms[i].start, uint32(i)}
		if i > 0 && syms[i].start < syms[i-1].start {
			sorted = false
		}
	}
	if !sorted {
		slices.SortFunc(keys, func(a, b key) int {
			switch {
			case a.start < b.start:
				return -1
			case a.start > b.start:
				return 1
			case a.i < b.i:
				return -1
			case a.i > b.i:
				return 1
			}
			return 0
		})
		out := make([]symbol, len(syms))
		for i, k := range keys {
			out[i] = syms[k.i]
		}
		syms = out
	}
	fixupEnd(syms, kallsyms)
	return fixupDuplicate(syms)
}

func fixupEnd(syms []symbol, kallsyms bool) {
	for i := 1; i < len(syms); i++ {
		prev, curr := &syms[i-1], &syms[i]
		if prev.end == prev.start {
			if kallsyms && prev.module != curr.module {
				prev.end = roundUp(prev.end+4096, 4096)
			} else {
				prev.end = curr.start
			}
		}
	}
	if last := &syms[len(syms)-1]; last.end == last.start {
		last.end = roundUp(last.start, 4096) + 4096
	}
}

func roundUp(x, to uint64) uint64 { return (x + to - 1) / to * to }

func fixupDuplicate(syms []symbol) []symbol {
	out := syms[:1]
	for _, s := range syms[1:] {
		last := &out[len(out)-1]
		if s.start != last.start {
			out = append(out, s)
			continue
		}
		if !chooseFirst(last, &s) {
			*last = s
		}
	}
	return out
}

// chooseFirst is perf's choose_best_symbol: true keeps a over b. perf
// compares demangled names, so both are demangled here.
func chooseFirst(a, b *symbol) bool {
	la, lb := a.end-a.start, b.end-b.start
	if lb == 0 && la > 0 {
		return true
	} else if la == 0 && lb > 0 {
		return false
	}
	wa, wb := a.bind == uint8(elf.STB_WEAK), b.bind == uint8(elf.STB_WEAK)
	if wb && !wa {
		return true
	} else if wa && !wb {
		return false
	}
	ga, gb := a.bind == uint8(elf.STB_GLOBAL), b.bind == uint8(elf.STB_GLOBAL)
	if ga && !gb {
		return true
	} else if gb && !ga {
		return false
	}
	a.demangle()
	b.demangle()
	ua, ub := underscores(a.name), underscores(b.name)
	if ub > ua {
		return true
	} else if ua > ub {
		return false
	}
	return len(a.name) >= len(b.name)
}

func underscores(s string) int {
	n := 0
	for n < len(s) && s[n] == '_' {
		n++
	}
	return n
}

// rawName reads the name from the string table the first time.
func (s *symbol) rawName() string {
	if s.strtab != nil {
		strs := s.strtab.b
		end := int(s.nameLen)
		if end == 0 {
			end = bytes.IndexByte(strs[s.nameOff:], 0)
		}
		if end < 0 {
			end = len(strs) - int(s.nameOff)
		}
		s.name = string(strs[s.nameOff : int(s.nameOff)+end])
		s.strtab = nil
	}
	return s.name
}

func (s *symbol) demangle() {
	s.rawName()
	if !s.demangled {
		s.name = Demangle(s.name)
		s.demangled = true
	}
}

// pltSymbols synthesises "name@plt" symbols for x86 PLT entries, as perf's
// dso__synthesize_plt_symbols does: .plt (lazy: after a header entry), or
// .plt.sec where the linker made one (IBT), each entry named after the
// .rela.plt relocation's symbol, in relocation-offset order (what the
// entries' jumps say; perf 6.1 takes the relocations in file order, which
// misnames entries of files with IFUNC relocations, and knows no .plt.sec).
func pltSymbols(f *elf.File) []symbol {
	plt := f.Section(".plt")
	if plt == nil || f.Class != elf.ELFCLASS64 {
		return nil
	}
	entry := func(s *elf.Section) uint64 {
		e := s.Entsize
		if e != 8 && e != 16 {
			if s.Addralign == 8 {
				e = 8
			} else {
				e = 16
			}
		}
		return e
	}
	rel := f.Section(".rela.plt")
	if rel == nil || rel.Type != elf.SHT_RELA || rel.Entsize == 0 {
		return nil
	}
	dyn, err := f.DynamicSymbols()
	if err != nil {
		return nil
	}
	data, err := rel.Data()
	if err != nil {
		return nil
	}
	type rela struct{ off, info uint64 }
	n := len(data) / 24
	rels := make([]rela, 0, n)
	for i := 0; i < n; i++ {
		b := data[i*24:]
		rels = append(rels, rela{f.ByteOrder.Uint64(b), f.ByteOrder.Uint64(b[8:])})
	}
	slices.SortStableFunc(rels, func(a, b rela) int {
		switch {
		case a.off < b.off:
			return -1
		case a.off > b.off:
			return 1
		}
		return 0
	})
	var out []symbol
	var addr, size uint64
	if sec := f.Section(".plt.sec"); sec != nil {
		size = entry(sec)
		addr = sec.Addr
	} else {
		size = entry(plt)
		addr = plt.Addr
		if uint64(len(rels))*size != plt.Size {
			// The lazy PLT's header (the resolver stub) gets no
			// symbol, as in perf 6.1 (later perf names it ".plt").
			addr += size
		}
	}
	for _, r := range rels {
		idx := int(r.info >> 32)
		name := ""
		if idx > 0 && idx-1 < len(dyn) {
			name = Demangle(dyn[idx-1].Name)
		}
		// An entry without a symbol (an IRELATIVE relocation: a call to
		// an IFUNC of the file itself) is "@plt", as perf 6.1 names it.
		name += "@plt"
		out = append(out, symbol{start: addr, end: addr + size, name: name, bind: uint8(elf.STB_GLOBAL), typ: uint8(elf.STT_FUNC), demangled: true})
		addr += size
	}
	return out
}

// isExecutable tells an executable (also a PIE one) from a shared library
// (libc.so.6 has a PT_INTERP too: it runs, printing its version).
func isExecutable(f *elf.File) bool {
	if f.Type == elf.ET_EXEC {
		return true
	}
	flags, err := f.DynValue(elf.DT_FLAGS_1)
	return err == nil && len(flags) > 0 && flags[0]&uint64(elf.DF_1_PIE) != 0
}

// buildIDOf returns f's GNU build-id in hex, or "".
func buildIDOf(f *elf.File) string {
	for _, sec := range f.Sections {
		if sec.Type != elf.SHT_NOTE {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			continue
		}
		if id := noteBuildID(data, f.ByteOrder); id != "" {
			return id
		}
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, min(p.Filesz, 1<<16))
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		if id := noteBuildID(data, f.ByteOrder); id != "" {
			return id
		}
	}
	return ""
}

// noteBuildID finds an NT_GNU_BUILD_ID note in the contents of a note
// section or segment.
func noteBuildID(data []byte, bo binary.ByteOrder) string {
	for len(data) >= 12 {
		nsz, dsz, typ := uint64(bo.Uint32(data)), uint64(bo.Uint32(data[4:])), bo.Uint32(data[8:])
		nEnd := 12 + (nsz+3)&^3
		dEnd := nEnd + (dsz+3)&^3
		if nEnd > uint64(len(data)) || nEnd+dsz > uint64(len(data)) {
			return ""
		}
		if typ == 3 && nsz == 4 && string(data[12:15]) == "GNU" {
			return hex.EncodeToString(data[nEnd : nEnd+dsz])
		}
		if dEnd > uint64(len(data)) {
			return ""
		}
		data = data[dEnd:]
	}
	return ""
}

// ReadBuildID returns the GNU build-id (hex) of the ELF file at path, or ""
// when it has none.
func ReadBuildID(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return buildIDOf(f), nil
}

// vaddr turns a file offset into the ELF virtual address mapped from it.
func (o *object) vaddr(off uint64) uint64 {
	for _, l := range o.loads {
		if off >= l.off && off < l.off+max(l.filesz, 1) {
			return off - l.off + l.vaddr
		}
	}
	return off
}

// fileOff turns a virtual address into the file offset mapped there.
func (o *object) fileOff(v uint64) uint64 {
	for _, l := range o.loads {
		if v >= l.vaddr && v < l.vaddr+max(l.filesz, 1) {
			return v - l.vaddr + l.off
		}
	}
	return v
}

// funcStart returns the start of the nameless function holding virtual
// address v (the last start at or below it), if o has function starts.
func (o *object) funcStart(v uint64) (uint64, bool) {
	i := sort.Search(len(o.starts), func(i int) bool { return o.starts[i] > v })
	if i == 0 {
		return 0, false
	}
	return o.starts[i-1], true
}

// lookup returns the symbol containing virtual address v, or nil. Only the
// immutable fields (start, end) are read: names are filled in under o.mu by
// other goroutines.
func (o *object) lookup(v uint64) *symbol {
	// i is the first symbol starting after v.
	i := sort.Search(len(o.syms), func(i int) bool { return o.syms[i].start > v })
	// A few symbols back, for sized symbols that overlap others.
	for k := i - 1; k >= 0 && k >= i-4; k-- {
		if v >= o.syms[k].start && v < o.syms[k].end {
			return &o.syms[k]
		}
	}
	return nil
}

// name returns the symbol's demangled name.
func (o *object) name(sym *symbol) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	sym.demangle()
	return sym.name
}

// BuildIDOf returns the GNU build-id (hex) of an open ELF file, or "".
func BuildIDOf(f *elf.File) string { return buildIDOf(f) }
