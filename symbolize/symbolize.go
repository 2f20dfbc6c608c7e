// Package symbolize names the addresses of native stacks: user space from
// the ELF files a process maps (.symtab, .dynsym, MiniDebugInfo in
// .gnu_debugdata, separate debug files by build-id or .gnu_debuglink), JIT
// code from perf maps (/tmp/perf-PID.map) and jitdump files, and the
// kernel from /proc/kallsyms; C++ and Rust names demangled, source lines
// from DWARF where the files have it. It is the one symbolizer every native
// collector and importer calls (perf.data, samply, eBPF).
//
// Names follow perf's rules (which symbol table wins, unsized symbols
// running to the next one, which of several symbols at one address is
// shown, PLT entries as name@plt, demangling without parameters), so
// that a stack symbolised here folds exactly as `perf script` prints it.
//
// A Symbolizer caches parsed ELF files by build-id (else by path, size and
// modification time) and is safe for concurrent use.
package symbolize

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Symbolizer. The zero value is usable.
type Options struct {
	// DebugDirs are where separate debug files are looked for, by build-id
	// (DIR/.build-id/ab/cdef….debug) and by .gnu_debuglink
	// (DIR/path/of/the/binary/LINK). Default: /usr/lib/debug.
	DebugDirs []string
	// NoLines skips DWARF line tables: frames get names only. Reading line
	// tables costs memory and time on large binaries; names alone are what
	// a flame graph shows.
	NoLines bool
	// PerfMapDir is where perf maps (perf-PID.map) and jitdumps of
	// processes no longer running are looked for. Default: /tmp.
	PerfMapDir string
	// Kallsyms is the kernel symbol file. Default: /proc/kallsyms.
	Kallsyms string
	// ProcRoot is the proc file system. Default: /proc.
	ProcRoot string
	// BuildIDCache is perf's build-id cache, where perf record keeps a
	// copy of each file it recorded (and of its debug file): its copies
	// stand in for files since replaced, and its debug files are used as
	// perf uses them. Default: $HOME/.debug; "-" turns it off.
	BuildIDCache string
}

// Frame is one symbolised address.
type Frame struct {
	Function string // demangled name; "" when unknown
	File     string // source file from DWARF or a jitdump, "" when unknown
	Line     int
	// Module is the file the address is in, as the process maps it
	// ("/usr/lib/x86_64-linux-gnu/libc.so.6"); KernelModule or "[name]"
	// for the kernel and its modules; the perf map or jitdump for JIT
	// code; "[vdso]"; "" when no mapping holds the address.
	Module  string
	BuildID string // hex GNU build-id of Module, "" when unknown
	// Offset is the address in Module's terms: the file offset for an ELF
	// file (what perf script prints as the address), the address itself
	// for the kernel and JIT code.
	Offset uint64
	Known  bool // Function was found
	// FuncOffset is the address's distance from the start of Function
	// (perf script's "+0x…"), or of the nameless function it is in.
	FuncOffset uint64
	// InFunc says that a frame without a name is in a function whose
	// start a stripped file's .eh_frame_hdr gives: FuncStart, a file
	// offset as Offset is.
	InFunc    bool
	FuncStart uint64
}

// Name is the frame's function, or "MODULE+0xOFFSET" (the module's base
// name) when unknown, or "[unknown]" when the module is unknown too: the
// names perf script and profcap show for unnamed frames. A nameless
// function whose start is known is "MODULE+0xSTART" for all its
// addresses, so that its samples add up in one frame.
func (f Frame) Name() string {
	if f.Known {
		return f.Function
	}
	if f.Module == "" {
		return "[unknown]"
	}
	if f.InFunc {
		return filepath.Base(f.Module) + "+0x" + strconv.FormatUint(f.FuncStart, 16)
	}
	return filepath.Base(f.Module) + "+0x" + strconv.FormatUint(f.Offset, 16)
}

// Symbolizer names addresses. Create one with New; it is safe for
// concurrent use.
type Symbolizer struct {
	opt Options

	mu      sync.Mutex
	objects map[string]*object // by key: "b:BUILDID" or "p:PATH\x00SIZE\x00MTIME"
	procs   map[int]*process
	maps    map[int]*jitSource // perf maps by pid, for PerfMap
	vdso    *object

	kernelOnce    sync.Once
	kernel        *kernelSyms
	kernelNamed   atomic.Int64
	kernelUnnamed atomic.Int64
}

// New returns a Symbolizer.
func New(opt Options) *Symbolizer {
	if len(opt.DebugDirs) == 0 {
		opt.DebugDirs = []string{"/usr/lib/debug"}
	}
	if opt.PerfMapDir == "" {
		opt.PerfMapDir = "/tmp"
	}
	if opt.Kallsyms == "" {
		opt.Kallsyms = "/proc/kallsyms"
	}
	if opt.ProcRoot == "" {
		opt.ProcRoot = "/proc"
	}
	switch opt.BuildIDCache {
	case "":
		if home, err := os.UserHomeDir(); err == nil {
			opt.BuildIDCache = filepath.Join(home, ".debug")
		}
	case "-":
		opt.BuildIDCache = ""
	}
	return &Symbolizer{opt: opt, objects: map[string]*object{}, procs: map[int]*process{}, maps: map[int]*jitSource{}}
}

// mapping is one executable mapping of a process.
type mapping struct {
	start, end, off uint64
	path            string // as in /proc/PID/maps, " (deleted)" removed
	obj             *object
	anon            bool // anonymous executable memory: JIT code
}

// process is what Snapshot recorded of one process.
type process struct {
	pid   int
	nspid int // the pid in its own namespace (names its perf map there)
	comm  string
	exe   string
	maps  []mapping // sorted by start
	taken time.Time

	perfMap *jitSource
	jitDump *jitSource

	jitAsked, jitNamed atomic.Int64
	noMapAsked         atomic.Int64
}

// jitSource is a perf map or jitdump file, held open so that it can be read
// after the process (and its container) is gone, and read again when it
// grew.
type jitSource struct {
	mu    sync.Mutex
	path  string // the path as the process names it
	file  *os.File
	dump  bool
	table *jitTable
	err   error
}

func (j *jitSource) get() *jitTable {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.file == nil {
		return j.table
	}
	st, err := j.file.Stat()
	if err != nil || j.table != nil && st.Size() == j.table.size {
		return j.table
	}
	var t *jitTable
	if j.dump {
		syms, perr := ParseJITDump(io.NewSectionReader(j.file, 0, st.Size()))
		if perr != nil && len(syms) == 0 {
			j.err = perr
			return j.table
		}
		t = &jitTable{path: j.path, size: st.Size(), syms: syms}
		t.sort()
	} else {
		t, err = readPerfMapFrom(io.NewSectionReader(j.file, 0, st.Size()), j.path, st.Size())
		if err != nil {
			j.err = err
			return j.table
		}
	}
	j.table = t
	return t
}

// Snapshot records the executable mappings of process pid (from
// /proc/PID/maps: path, start, end, offset and each file's build-id), its
// perf map and jitdump, and opens every mapped file through
// /proc/PID/root, so that its addresses can be named after it exits (and
// its container's files are gone). Call it while the process runs, again
// when it may have loaded libraries since. It returns an error when the
// process's memory map cannot be read.
func (s *Symbolizer) Snapshot(pid int) error {
	proc := filepath.Join(s.opt.ProcRoot, strconv.Itoa(pid))
	data, err := os.ReadFile(filepath.Join(proc, "maps"))
	if err != nil {
		return fmt.Errorf("snapshot of pid %d: %w", pid, err)
	}
	p := &process{pid: pid, nspid: pid, taken: time.Now()}
	p.comm, p.nspid = readStatus(filepath.Join(proc, "status"), pid)
	p.exe, _ = os.Readlink(filepath.Join(proc, "exe"))
	root := filepath.Join(proc, "root")
	s.mu.Lock()
	old := s.procs[pid]
	s.mu.Unlock()
	for _, m := range ParseMaps(data) {
		if !m.Exec {
			if isJITDump(m.Path) && p.jitDump == nil {
				p.jitDump = openJIT(root, m.Path, true)
			}
			continue
		}
		mp := mapping{start: m.Start, end: m.End, off: m.Offset, path: m.Path}
		switch {
		case isJITDump(m.Path):
			// JITs map their dump executable so that perf sees it.
			if p.jitDump == nil {
				p.jitDump = openJIT(root, m.Path, true)
			}
			continue
		case m.Path == "" || strings.HasPrefix(m.Path, "[anon") || m.Path == "//anon" || strings.HasPrefix(m.Path, "/memfd:"):
			// JIT code (a memfd is how some JITs double-map theirs).
			mp.anon = true
		case m.Path == "[vdso]":
			mp.obj = s.vdsoObject()
		case strings.HasPrefix(m.Path, "["):
			// [vsyscall] and the like: nothing to read.
		default:
			mp.obj = s.objectFor(pid, root, m, old)
		}
		p.maps = append(p.maps, mp)
	}
	slices.SortFunc(p.maps, func(a, b mapping) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
	if f, err := os.Open(filepath.Join(root, "tmp", fmt.Sprintf("perf-%d.map", p.nspid))); err == nil {
		p.perfMap = &jitSource{path: fmt.Sprintf("/tmp/perf-%d.map", p.nspid), file: f}
	} else if f, err := os.Open(filepath.Join(s.opt.PerfMapDir, fmt.Sprintf("perf-%d.map", pid))); err == nil {
		p.perfMap = &jitSource{path: f.Name(), file: f}
	}
	if p.jitDump == nil {
		if f, err := os.Open(filepath.Join(s.opt.PerfMapDir, fmt.Sprintf("jit-%d.dump", pid))); err == nil {
			p.jitDump = &jitSource{path: f.Name(), file: f, dump: true}
		}
	}
	s.mu.Lock()
	if old != nil {
		old.closeJIT()
		p.jitAsked.Store(old.jitAsked.Load())
		p.jitNamed.Store(old.jitNamed.Load())
	}
	s.procs[pid] = p
	s.mu.Unlock()
	return nil
}

func (p *process) closeJIT() {
	for _, j := range []*jitSource{p.perfMap, p.jitDump} {
		if j != nil {
			j.mu.Lock()
			if j.file != nil && j.table == nil {
				// Read it before letting go of it: nothing else can.
				j.mu.Unlock()
				j.get()
				j.mu.Lock()
			}
			if j.file != nil {
				j.file.Close()
				j.file = nil
			}
			j.mu.Unlock()
		}
	}
}

// Inherit gives pid, when Snapshot recorded nothing of it, the mappings
// recorded of parent: a child that exited before its own snapshot, and
// did not exec, had its parent's layout. The two share the record (and its
// JIT sources) from then on.
func (s *Symbolizer) Inherit(pid, parent int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.procs[pid]; ok {
		return
	}
	if p := s.procs[parent]; p != nil {
		s.procs[pid] = p
	}
}

// Forget drops what Snapshot recorded of pid (a process that exited and
// whose stacks are all symbolised). Files shared with other processes stay
// cached.
func (s *Symbolizer) Forget(pid int) {
	s.mu.Lock()
	p := s.procs[pid]
	delete(s.procs, pid)
	shared := false
	for _, q := range s.procs {
		shared = shared || q == p
	}
	s.mu.Unlock()
	if p != nil && !shared {
		p.closeJIT()
	}
}

// Close releases every file the Symbolizer holds open. It stays usable:
// files are opened again by path when needed.
func (s *Symbolizer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.objects {
		o.mu.Lock()
		if o.file != nil {
			o.file.Close()
			o.file = nil
		}
		o.mu.Unlock()
	}
	for _, p := range s.procs {
		p.closeJIT()
	}
	return nil
}

func isJITDump(path string) bool {
	b := filepath.Base(path)
	return strings.HasPrefix(b, "jit-") && strings.HasSuffix(b, ".dump")
}

func openJIT(root, path string, dump bool) *jitSource {
	f, err := os.Open(filepath.Join(root, path))
	if err != nil {
		if f, err = os.Open(path); err != nil {
			return &jitSource{path: path, dump: dump, err: err}
		}
	}
	return &jitSource{path: path, file: f, dump: dump}
}

// readStatus returns the comm and the innermost NSpid of a process.
func readStatus(path string, pid int) (string, int) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", pid
	}
	comm, nspid := "", pid
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Name":
			comm = v
		case "NSpid":
			f := strings.Fields(v)
			if len(f) > 0 {
				if n, err := strconv.Atoi(f[len(f)-1]); err == nil {
					nspid = n
				}
			}
		}
	}
	return comm, nspid
}

// objectFor returns the cached object of a mapped file, opening it through
// the process's root (then /proc/PID/map_files, which also reaches deleted
// files).
func (s *Symbolizer) objectFor(pid int, root string, m MapsEntry, old *process) *object {
	if old != nil {
		for _, om := range old.maps {
			if om.start == m.Start && om.path == m.Path && om.obj != nil {
				return om.obj
			}
		}
	}
	cands := []string{filepath.Join(root, m.Path)}
	cands = append(cands, filepath.Join(s.opt.ProcRoot, strconv.Itoa(pid), "map_files", fmt.Sprintf("%x-%x", m.Start, m.End)))
	if !m.Deleted {
		cands = append(cands, m.Path)
	}
	var fh *os.File
	var openPath string
	for _, c := range cands {
		if f, err := os.Open(c); err == nil {
			fh, openPath = f, c
			break
		}
	}
	if fh == nil {
		key := "p:" + m.Path + "\x00gone"
		s.mu.Lock()
		defer s.mu.Unlock()
		if o := s.objects[key]; o != nil {
			return o
		}
		o := &object{key: key, path: m.Path, open: m.Path}
		if m.Deleted {
			o.problem = fmt.Sprintf("%s was deleted (replaced by an upgrade or a rebuild) while the process ran, and its old content cannot be read", m.Path)
			o.once.Do(func() {})
		}
		s.objects[key] = o
		return o
	}
	id := ""
	if f, err := elf.NewFile(fh); err == nil {
		id = buildIDOf(f)
	}
	key := "b:" + id
	if id == "" {
		st, err := fh.Stat()
		if err != nil {
			fh.Close()
			return nil
		}
		key = fmt.Sprintf("p:%s\x00%d\x00%d", m.Path, st.Size(), st.ModTime().UnixNano())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.objects[key]; o != nil {
		fh.Close()
		return o
	}
	o := &object{key: key, path: m.Path, open: openPath, file: fh, buildID: id}
	s.objects[key] = o
	return o
}

// File returns the symbols of the ELF file at path, expected to have the
// given build-id ("" when unknown; a file with another build-id names
// nothing, with a note). open is the path to read it from ("" means path),
// e.g. through /proc/PID/root.
func (s *Symbolizer) File(path, open, buildID string) *File {
	if open == "" {
		open = path
	}
	buildID = NormBuildID(buildID)
	key := "b:" + buildID
	if buildID == "" {
		st, err := os.Stat(open)
		if err != nil {
			key = "p:" + path + "\x00gone"
		} else {
			key = fmt.Sprintf("p:%s\x00%d\x00%d", path, st.Size(), st.ModTime().UnixNano())
		}
	}
	s.mu.Lock()
	o := s.objects[key]
	if o == nil {
		o = &object{key: key, path: path, open: open, buildID: buildID}
		s.objects[key] = o
	}
	s.mu.Unlock()
	return &File{s: s, o: o}
}

// File is one ELF file's symbols (see Symbolizer.File).
type File struct {
	s *Symbolizer
	o *object
}

// Lookup names the address at file offset off (a mapping's
// address − start + file offset, as perf computes it).
func (f *File) Lookup(off uint64) Frame {
	f.s.loadObject(f.o)
	return f.s.frame(f.o, f.o.vaddr(off), off)
}

// LookupVaddr names an ELF virtual address (the address space of the
// file's symbol table).
func (f *File) LookupVaddr(v uint64) Frame {
	f.s.loadObject(f.o)
	return f.s.frame(f.o, v, v)
}

// Base is the virtual address of the file's first PT_LOAD segment:
// samply's and Breakpad's "relative addresses" count from it.
func (f *File) Base() uint64 {
	f.s.loadObject(f.o)
	if len(f.o.loads) == 0 {
		return 0
	}
	return f.o.loads[0].vaddr
}

// BuildID is the file's build-id (hex), "" when unknown.
func (f *File) BuildID() string {
	f.s.loadObject(f.o)
	return f.o.buildID
}

// Problem says why none of the file's addresses can be named, "" when its
// symbols were read.
func (f *File) Problem() string {
	f.s.loadObject(f.o)
	return f.o.problem
}

// frame names virtual address v of o (already loaded); off goes to Offset.
func (s *Symbolizer) frame(o *object, v, off uint64) Frame {
	fr := Frame{Module: o.path, BuildID: o.buildID, Offset: off}
	o.asked.Add(1)
	if sym := o.lookup(v); sym != nil {
		fr.Function, fr.Known, fr.FuncOffset = o.name(sym), true, v-sym.start
		o.named.Add(1)
	} else if start, ok := o.funcStart(v); ok {
		fr.FuncStart, fr.InFunc, fr.FuncOffset = o.fileOff(start), true, v-start
	}
	if !s.opt.NoLines {
		if lt := s.lines(o); lt != nil {
			fr.File, fr.Line = lt.lookup(v)
		}
	}
	return fr
}

// lines returns o's line table, reading it the first time (from the
// separate debug file when one gave the symbols, else from the file).
func (s *Symbolizer) lines(o *object) *lineTable {
	o.linesOnce.Do(func() {
		var f *elf.File
		var err error
		if o.debugFile != "" {
			f, err = elf.Open(o.debugFile)
		} else {
			o.mu.Lock()
			fh := o.file
			o.mu.Unlock()
			if fh != nil {
				f, err = elf.NewFile(fh)
			} else {
				f, err = elf.Open(o.open)
			}
		}
		if err != nil {
			return
		}
		lt, err := newLineTable(f)
		if err == nil {
			o.lines = lt
		}
	})
	return o.lines
}

// User names the addresses of a user-space stack of process pid, with the
// mappings Snapshot recorded (taken now if there is none, or again once if
// an address falls outside every mapping while the process runs: it may
// have loaded a library since). Addresses are passed as they are: a
// caller that wants the call's line for a return address passes it minus
// one.
func (s *Symbolizer) User(pid int, addrs []uint64) []Frame {
	s.mu.Lock()
	p := s.procs[pid]
	s.mu.Unlock()
	if p == nil {
		if s.Snapshot(pid) == nil {
			s.mu.Lock()
			p = s.procs[pid]
			s.mu.Unlock()
		}
	}
	out := make([]Frame, len(addrs))
	retried := false
	for i, a := range addrs {
		if p == nil {
			out[i] = Frame{Offset: a}
			continue
		}
		m := p.find(a)
		if m == nil && !retried && time.Since(p.taken) > 100*time.Millisecond {
			retried = true
			if s.Snapshot(pid) == nil {
				s.mu.Lock()
				p = s.procs[pid]
				s.mu.Unlock()
				m = p.find(a)
			}
		}
		switch {
		case m == nil:
			p.noMapAsked.Add(1)
			out[i] = Frame{Offset: a}
		case m.anon:
			out[i] = s.jitFrame(p, a)
		case m.obj == nil:
			out[i] = Frame{Module: m.path, Offset: a - m.start + m.off}
		default:
			s.loadObject(m.obj)
			off := a - m.start + m.off
			out[i] = s.frame(m.obj, m.obj.vaddr(off), off)
			if m.path != m.obj.path {
				out[i].Module = m.path
			}
		}
	}
	return out
}

func (p *process) find(a uint64) *mapping {
	i, _ := slices.BinarySearchFunc(p.maps, a, func(m mapping, v uint64) int {
		if m.start <= v {
			return -1
		}
		return 1
	})
	if i > 0 && a < p.maps[i-1].end {
		return &p.maps[i-1]
	}
	return nil
}

// jitFrame names an address in anonymous executable memory: from the
// jitdump, else the perf map.
func (s *Symbolizer) jitFrame(p *process, a uint64) Frame {
	p.jitAsked.Add(1)
	fr := Frame{Offset: a}
	if t := p.jitDump.get(); t != nil {
		if sym := t.lookup(a); sym != nil {
			p.jitNamed.Add(1)
			return Frame{Function: sym.Name, File: sym.File, Line: sym.Line, Module: p.jitDump.path, Offset: a, Known: true, FuncOffset: a - sym.Start}
		}
	}
	if t := p.perfMap.get(); t != nil {
		fr.Module = p.perfMap.path
		if sym := t.lookup(a); sym != nil {
			p.jitNamed.Add(1)
			fr.Function, fr.Known, fr.FuncOffset = sym.Name, true, a-sym.Start
		}
		return fr
	}
	fr.Module = fmt.Sprintf("/tmp/perf-%d.map", p.nspid)
	return fr
}

// PerfMap names addresses with the perf map of process pid, as perf does
// for a process's anonymous executable memory: /tmp/perf-PID.map in the
// process's own /tmp while it runs (its container's), else
// Options.PerfMapDir/perf-PID.map. Module is the perf map's path.
func (s *Symbolizer) PerfMap(pid int, addrs []uint64) []Frame {
	s.mu.Lock()
	src := s.maps[pid]
	if src == nil {
		if p := s.procs[pid]; p != nil && p.perfMap != nil {
			src = p.perfMap
		} else {
			path := filepath.Join(s.opt.PerfMapDir, fmt.Sprintf("perf-%d.map", pid))
			src = &jitSource{path: path}
			if f, err := os.Open(path); err == nil {
				src.file = f
			} else {
				src.err = err
			}
		}
		s.maps[pid] = src
	}
	s.mu.Unlock()
	t := src.get()
	out := make([]Frame, len(addrs))
	for i, a := range addrs {
		out[i] = Frame{Module: src.path, Offset: a}
		if sym := t.lookup(a); sym != nil {
			out[i].Function, out[i].Known, out[i].FuncOffset = sym.Name, true, a-sym.Start
		}
	}
	return out
}

func readPerfMapFrom(r io.Reader, path string, size int64) (*jitTable, error) {
	t := &jitTable{path: path, size: size}
	br := bufio.NewReaderSize(io.LimitReader(r, maxPerfMap), 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && err != bufio.ErrBufferFull {
			if s, perr := ParsePerfMapLine(line); perr == nil {
				t.syms = append(t.syms, s)
			} else if len(bytes.TrimSpace(line)) > 0 {
				t.bad++
			}
		}
		if err == bufio.ErrBufferFull {
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			t.bad++
		}
		if err != nil {
			break
		}
	}
	t.sort()
	return t, nil
}

// vdsoObject is the vDSO, read from this process's own memory: the kernel
// maps the same image into every process (as perf assumes).
func (s *Symbolizer) vdsoObject() *object {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vdso != nil {
		return s.vdso
	}
	o := &object{key: "vdso", path: "[vdso]", open: "[vdso]"}
	s.vdso = o
	data, err := readOwnVDSO(s.opt.ProcRoot)
	if err != nil {
		o.problem = "cannot read the vDSO: " + err.Error()
		o.once.Do(func() {})
		return o
	}
	o.once.Do(func() {
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			o.problem = "the vDSO is not an ELF image: " + err.Error()
			return
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_LOAD {
				o.loads = append(o.loads, segment{vaddr: p.Vaddr, off: p.Off, filesz: p.Filesz, memsz: p.Memsz, flags: p.Flags})
			}
		}
		o.buildID = buildIDOf(f)
		syms := elfSymbols(f, f, false)
		o.source = ".symtab"
		if len(syms) == 0 {
			syms = elfSymbols(f, f, true)
			o.source = ".dynsym"
		}
		o.syms = fixupSymbols(syms, false)
	})
	return o
}

// VDSO returns the vDSO's symbols (see vdsoObject).
func (s *Symbolizer) VDSO() *File { return &File{s: s, o: s.vdsoObject()} }

// VDSOImage is the vDSO's ELF image, read from this process's memory
// (the kernel maps the same one into every process).
func VDSOImage() ([]byte, error) { return readOwnVDSO("/proc") }

func readOwnVDSO(procRoot string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(procRoot, "self", "maps"))
	if err != nil {
		return nil, err
	}
	for _, m := range ParseMaps(data) {
		if m.Path != "[vdso]" {
			continue
		}
		mem, err := os.Open(filepath.Join(procRoot, "self", "mem"))
		if err != nil {
			return nil, err
		}
		defer mem.Close()
		buf := make([]byte, m.End-m.Start)
		if _, err := mem.ReadAt(buf, int64(m.Start)); err != nil {
			return nil, err
		}
		return buf, nil
	}
	return nil, errors.New("no [vdso] in this process's memory map")
}

// NormBuildID lower-cases a build-id; what is not 4 to 64 hex bytes (a
// Mach-O UUID with dashes, a PE id) gives "".
func NormBuildID(id string) string {
	id = strings.ToLower(strings.TrimSpace(id))
	if len(id) < 8 || len(id) > 128 || len(id)%2 != 0 {
		return ""
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
	}
	return id
}
