package perfdata

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/profcap/profcap/symbolize"
)

// maxStack is perf script's default --max-stack (PERF_MAX_STACK_DEPTH):
// frames past it are not shown.
const maxStack = 127

// kernelFloor is where the kernel half of the address space starts on the
// 64-bit architectures perf records (x86-64, arm64 with 48-bit VAs).
const kernelFloor = 0xffff800000000000

// session replays a file's records in time order, keeping what perf's
// "machine" keeps: threads and their comms, each process's mappings; and
// names every address of every sample.
type session struct {
	f   *File
	sym *symbolize.Symbolizer

	threads map[int32]*thread
	dsos    map[string]*dso
	frames  []frame
	kcache  map[uint64]uint32

	kernelStart, kernelEnd uint64
	kmaps                  []kmap // modules and ksymbols (BPF programs, trampolines)

	// What the consumer sees of the current sample.
	stack []uint32

	lost, samples, shortSamples uint64
	events                      map[*Attr]uint64
	dwarf                       bool
	nosym                       bool // name nothing, open nothing (Options.NoSymbols)
	jit                         map[int32]*jitCount
}

// jitCount counts a process's frames in anonymous executable memory.
type jitCount struct {
	comm           string
	asked, unnamed int64
}

// kmap is a kernel mapping other than the kernel's text: a module (its
// symbols from kallsyms) or a ksymbol (a BPF program, a trampoline: its one
// symbol from the PERF_RECORD_KSYMBOL).
type kmap struct {
	start, end uint64
	dso        string
	sym        string // the ksymbol's name; "" for a module
}

type thread struct {
	pid, tid int32
	comm     string
	commSet  bool
	proc     *proc
}

// proc is a process's address space, shared by its threads.
type proc struct {
	pid   int32
	maps  []*dmap // sorted by start, not overlapping
	cache map[uint64]uint32
}

type dmap struct {
	start, end, pgoff uint64
	dso               *dso
}

type dsoKind int

const (
	dsoFile    dsoKind = iota
	dsoPerfMap         // anonymous executable memory: the process's perf map
	dsoVDSO
	dsoNone // [heap], [stack], [vsyscall]…: no symbols
)

type dso struct {
	name    string // as perf script prints it
	kind    dsoKind
	pid     int32 // for perf maps
	buildID string
	file    *symbolize.File
}

// frame is one distinct named address.
type frame struct {
	pc    uint64 // as perf script prints it: the file offset for a file's code, the address otherwise
	sym   string // "" when unknown
	off   uint64 // from the symbol's start
	dso   string // "[unknown]" when no mapping holds the address
	line  []byte // the frame line as perf script prints it, built on first use
	known bool
}

func newSession(f *File, sym *symbolize.Symbolizer) *session {
	if sym == nil {
		sym = symbolize.New(symbolize.Options{NoLines: true})
	}
	s := &session{f: f, sym: sym, threads: map[int32]*thread{}, dsos: map[string]*dso{}, kcache: map[uint64]uint32{}, events: map[*Attr]uint64{}}
	for _, a := range f.Attrs {
		if a.DWARFStacks() {
			s.dwarf = true
		}
	}
	return s
}

// findThread is perf's machine__findnew_thread: a thread unseen so far gets
// the comm ":TID" and the address space of its process (the thread whose
// tid is the pid).
func (s *session) findThread(pid, tid int32) *thread {
	if t := s.threads[tid]; t != nil {
		if t.pid == -1 && pid != -1 {
			t.pid = pid
		}
		if t.proc == nil {
			t.proc = s.procOf(t.pid, t)
		}
		return t
	}
	t := &thread{pid: pid, tid: tid, comm: ":" + strconv.Itoa(int(tid))}
	s.threads[tid] = t
	t.proc = s.procOf(pid, t)
	return t
}

func (s *session) procOf(pid int32, t *thread) *proc {
	if pid == -1 || pid == t.tid {
		return &proc{pid: pid}
	}
	leader := s.findThread(pid, pid)
	return leader.proc
}

// replay reads every record in time order, calling sample for each sample
// (after the maps and comms in force at its time are applied) and sideband
// for context switches.
func (s *session) replay(sample func(*Sample, *thread) error, sw func(r record, id sampleIDTrailer) error) error {
	// One pass notes each record's time and offset (16 bytes a record, the
	// records themselves stay in the file), a stable sort puts them in time
	// order, a second pass replays them.
	type ref struct {
		t   uint64
		off int64
	}
	f := s.f
	refs := make([]ref, 0, (f.recEnd-f.recOff)/64)
	err := f.records(func(r record) error {
		switch r.typ {
		case recSample, recMMAP, recMMAP2, recComm, recFork, recExit, recSwitch, recSwitchCPUWide, recLost, recLostSamples, recKsymbol:
		case recCompressed:
			f.Compressed = true
			return nil
		default:
			return nil
		}
		a := f.attrOf(r)
		var t uint64
		if r.typ == recSample {
			t = f.sampleTime(r, a)
		} else if id := f.trailer(r, a); id.hasTime {
			t = id.time
		}
		refs = append(refs, ref{t, int64(r.off)})
		return nil
	})
	if f.Compressed {
		return errCompressed
	}
	// perf script orders events by time (its ordered_events queue);
	// events of one time keep their order in the file.
	if !slices.IsSortedFunc(refs, func(a, b ref) int { return cmpU64(a.t, b.t) }) {
		slices.SortStableFunc(refs, func(a, b ref) int { return cmpU64(a.t, b.t) })
	}
	var smp Sample
	for _, rf := range refs {
		r := f.recordAt(int(rf.off))
		switch r.typ {
		case recSample:
			if perr := f.parseSample(r, &smp); perr != nil {
				s.shortSamples++
				continue
			}
			s.samples++
			s.events[smp.Attr]++
			t := s.findThread(smp.PID, smp.TID)
			if e := sample(&smp, t); e != nil {
				return e
			}
		case recMMAP, recMMAP2:
			s.mmap(r)
		case recComm:
			if len(r.body) >= 8 {
				pid, tid := int32(f.bo.Uint32(r.body)), int32(f.bo.Uint32(r.body[4:]))
				t := s.findThread(pid, tid)
				t.comm, t.commSet = cstring(r.body[8:]), true
			}
		case recFork:
			s.fork(r)
		case recSwitch, recSwitchCPUWide:
			if sw != nil {
				if e := sw(r, f.trailer(r, f.attrOf(r))); e != nil {
					return e
				}
			}
		case recKsymbol:
			s.ksymbol(r)
		case recLost:
			if len(r.body) >= 16 {
				s.lost += f.bo.Uint64(r.body[8:])
			}
		case recLostSamples:
			if len(r.body) >= 8 {
				s.lost += f.bo.Uint64(r.body)
			}
		}
	}
	return err
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sampleTime reads only the time of a sample.
func (f *File) sampleTime(r record, a *Attr) uint64 {
	st := a.SampleType
	if st&sampleTime == 0 {
		return 0
	}
	pos := 0
	for _, b := range []uint64{sampleIdentifier, sampleIP, sampleTID} {
		if st&b != 0 {
			pos += 8
		}
	}
	if len(r.body) < pos+8 {
		return 0
	}
	return f.bo.Uint64(r.body[pos:])
}

// fork is machine__process_fork_event: a thread id reused drops the old
// thread; the new thread takes its parent's comm, and a new process a copy
// of its parent's mappings.
func (s *session) fork(r record) {
	b := r.body
	if len(b) < 16 {
		return
	}
	bo := s.f.bo
	pid, ppid, tid, ptid := int32(bo.Uint32(b)), int32(bo.Uint32(b[4:])), int32(bo.Uint32(b[8:])), int32(bo.Uint32(b[12:]))
	parent := s.findThread(ppid, ptid)
	if old := s.threads[tid]; old != nil && tid != ptid {
		delete(s.threads, tid)
	}
	t := s.findThread(pid, tid)
	if parent.commSet {
		t.comm, t.commSet = parent.comm, true
	}
	if parent.pid != t.pid && parent.proc != nil && t.proc != parent.proc {
		t.proc.maps = slices.Clone(parent.proc.maps)
		t.proc.cache = nil
	}
}

// mmap is machine__process_mmap(2)_event for user space; the kernel's own
// mapping only tells where the kernel starts.
func (s *session) mmap(r record) {
	b := r.body
	bo := s.f.bo
	if len(b) < 32 {
		return
	}
	pid, tid := int32(bo.Uint32(b)), int32(bo.Uint32(b[4:]))
	start, length, pgoff := bo.Uint64(b[8:]), bo.Uint64(b[16:]), bo.Uint64(b[24:])
	var name, buildID string
	prot := uint32(4) // PROT_EXEC: MMAP records only come for code
	if r.typ == recMMAP {
		name = cstring(b[32:])
	} else {
		if len(b) < 64 {
			return
		}
		if r.misc&miscMMAPBuildID != 0 {
			n := int(b[32])
			if n > 20 {
				n = 20
			}
			buildID = fmt.Sprintf("%x", b[36:36+n])
		}
		prot = bo.Uint32(b[56:])
		name = cstring(b[64:])
	}
	if r.misc&miscCPUModeMask == miscKernel {
		s.kcache = map[uint64]uint32{}
		if strings.HasPrefix(name, "[kernel.kallsyms]") {
			s.kernelStart, s.kernelEnd = start, start+length
		} else if strings.HasPrefix(name, "/") || strings.HasPrefix(name, "[") {
			s.addKmap(kmap{start: start, end: start + length, dso: moduleName(name)})
		}
		return
	}
	if length == 0 {
		return
	}
	t := s.findThread(pid, tid)
	d := s.dsoFor(name, buildID, t.pid, prot)
	m := &dmap{start: start, end: start + length, pgoff: pgoff, dso: d}
	if d.kind == dsoVDSO {
		m.pgoff = 0
	}
	t.proc.insert(m)
}

// moduleName is perf's short name of a kernel module's file:
// "/lib/modules/6.1/kernel/net/nf_tables.ko.xz" → "[nf_tables]" (dashes
// become underscores, as the kernel names modules).
func moduleName(path string) string {
	if strings.HasPrefix(path, "[") {
		return path
	}
	b := filepath.Base(path)
	for _, ext := range []string{".xz", ".gz", ".zst", ".bz2"} {
		b = strings.TrimSuffix(b, ext)
	}
	b = strings.TrimSuffix(b, ".ko")
	return "[" + strings.ReplaceAll(b, "-", "_") + "]"
}

// addKmap inserts a kernel mapping, replacing those it overlaps.
func (s *session) addKmap(m kmap) {
	out := s.kmaps[:0:0]
	for _, o := range s.kmaps {
		if o.end <= m.start || o.start >= m.end {
			out = append(out, o)
		}
	}
	s.kmaps = append(out, m)
	slices.SortFunc(s.kmaps, func(a, b kmap) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
}

// ksymbol is machine__process_ksymbol: a BPF program or trampoline gets a
// mapping of its own named after it, unless the kernel's text holds it;
// unregistering removes it.
func (s *session) ksymbol(r record) {
	b := r.body
	if len(b) < 16 {
		return
	}
	bo := s.f.bo
	addr, length, flags := bo.Uint64(b), uint64(bo.Uint32(b[8:])), bo.Uint16(b[14:])
	name := cstring(b[16:])
	s.kcache = map[uint64]uint32{}
	if flags&1 != 0 { // PERF_RECORD_KSYMBOL_FLAGS_UNREGISTER
		out := s.kmaps[:0]
		for _, o := range s.kmaps {
			if !(o.sym != "" && addr >= o.start && addr < o.end) {
				out = append(out, o)
			}
		}
		s.kmaps = out
		return
	}
	if s.kernelEnd > s.kernelStart && addr >= s.kernelStart && addr < s.kernelEnd {
		return // in the kernel's text: kallsyms names it
	}
	s.addKmap(kmap{start: addr, end: addr + length, dso: name, sym: name})
}

func (s *session) findKmap(ip uint64) *kmap {
	i, _ := slices.BinarySearchFunc(s.kmaps, ip, func(m kmap, v uint64) int {
		if m.start <= v {
			return -1
		}
		return 1
	})
	if i > 0 && ip < s.kmaps[i-1].end {
		return &s.kmaps[i-1]
	}
	return nil
}

// dsoFor returns the dso perf makes of a mapped name: anonymous executable
// memory and [heap]-like names become the process's perf map.
func (s *session) dsoFor(name, buildID string, pid int32, prot uint32) *dso {
	kind := dsoFile
	anon := name == "//anon" || strings.HasPrefix(name, "/dev/zero") || strings.HasPrefix(name, "/anon_hugepage")
	noDSO := strings.HasPrefix(name, "[stack") || strings.HasPrefix(name, "/SYSV") || name == "[heap]"
	switch {
	case (anon || noDSO) && prot&4 != 0:
		name = fmt.Sprintf("/tmp/perf-%d.map", pid)
		kind = dsoPerfMap
	case anon || noDSO:
		kind = dsoNone
	case name == "[vdso]":
		kind = dsoVDSO
	case strings.HasPrefix(name, "["):
		kind = dsoNone
	}
	if buildID == "" && kind == dsoFile {
		buildID = s.f.BuildIDs[name]
	}
	key := name + "\x00" + buildID
	if d := s.dsos[key]; d != nil {
		return d
	}
	d := &dso{name: name, kind: kind, pid: pid, buildID: buildID}
	switch {
	case s.nosym:
	case kind == dsoFile:
		open := name
		if _, err := os.Stat(name); err != nil && pid > 0 {
			// A container's file, while the process runs.
			if alt := filepath.Join("/proc", strconv.Itoa(int(pid)), "root", name); fileExists(alt) {
				open = alt
			}
		}
		d.file = s.sym.File(name, open, buildID)
	case kind == dsoVDSO:
		d.file = s.sym.VDSO()
	}
	s.dsos[key] = d
	return d
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// insert adds m, cutting the parts of existing mappings it overlaps (perf's
// maps__fixup_overlappings).
func (p *proc) insert(m *dmap) {
	p.cache = nil
	out := p.maps[:0:0]
	for _, o := range p.maps {
		if o.end <= m.start || o.start >= m.end {
			out = append(out, o)
			continue
		}
		if o.start < m.start {
			out = append(out, &dmap{start: o.start, end: m.start, pgoff: o.pgoff, dso: o.dso})
		}
		if o.end > m.end {
			after := &dmap{start: m.end, end: o.end, pgoff: o.pgoff, dso: o.dso}
			if o.dso.kind == dsoFile {
				after.pgoff = o.pgoff + (m.end - o.start)
			}
			out = append(out, after)
		}
	}
	out = append(out, m)
	slices.SortFunc(out, func(a, b *dmap) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
	p.maps = out
}

func (p *proc) find(addr uint64) *dmap {
	i, _ := slices.BinarySearchFunc(p.maps, addr, func(m *dmap, v uint64) int {
		if m.start <= v {
			return -1
		}
		return 1
	})
	if i > 0 && addr < p.maps[i-1].end {
		return p.maps[i-1]
	}
	return nil
}

// resolve names ip in cpumode (perf's thread__find_symbol) and returns the
// frame's index.
func (s *session) resolve(t *thread, cpumode uint8, ip uint64) uint32 {
	if cpumode == miscKernel {
		if id, ok := s.kcache[ip]; ok {
			return id
		}
		fr := frame{pc: ip, dso: "[unknown]"}
		inText := ip >= kernelFloor && (s.kernelEnd == 0 || ip >= s.kernelStart && ip < s.kernelEnd)
		if s.nosym {
			if inText {
				fr.dso = symbolize.KernelModule
			}
		} else if km := s.findKmap(ip); km != nil && !inText {
			fr.dso = km.dso
			if km.sym != "" {
				fr.sym, fr.off, fr.known = km.sym, ip-km.start, true
			} else if kf := s.sym.KernelFrame(ip); kf.Known {
				fr.sym, fr.off, fr.known = kf.Function, kf.FuncOffset, true
			}
		} else if inText {
			kf := s.sym.KernelFrame(ip)
			fr.dso = symbolize.KernelModule
			if kf.Known {
				fr.sym, fr.off, fr.known = kf.Function, kf.FuncOffset, true
			}
		}
		id := uint32(len(s.frames))
		s.frames = append(s.frames, fr)
		s.kcache[ip] = id
		return id
	}
	p := t.proc
	if cpumode == miscUser {
		if p.cache == nil {
			p.cache = map[uint64]uint32{}
		}
		if id, ok := p.cache[ip]; ok {
			return id
		}
	}
	fr := frame{pc: ip, dso: "[unknown]"}
	if cpumode == miscUser {
		if m := p.find(ip); m != nil {
			d := m.dso
			fr.dso = d.name
			kind := d.kind
			if s.nosym {
				kind = dsoNone
				if d.kind == dsoPerfMap {
					kind = dsoPerfMap + 100 // identity, unnamed
				}
			}
			switch kind {
			case dsoFile, dsoVDSO:
				fr.pc = ip - m.start + m.pgoff
				sf := d.file.Lookup(fr.pc)
				if sf.Known {
					fr.sym, fr.off, fr.known = sf.Function, sf.FuncOffset, true
				}
			case dsoPerfMap:
				pf := s.sym.PerfMap(int(d.pid), []uint64{ip})[0]
				if pf.Known {
					fr.sym, fr.off, fr.known = pf.Function, pf.FuncOffset, true
				}
				if s.jit == nil {
					s.jit = map[int32]*jitCount{}
				}
				jc := s.jit[d.pid]
				if jc == nil {
					jc = &jitCount{comm: t.comm}
					s.jit[d.pid] = jc
				}
				jc.asked++
				if !pf.Known {
					jc.unnamed++
				}
			case dsoNone:
				fr.pc = ip - m.start + m.pgoff
			}
		}
	}
	id := uint32(len(s.frames))
	s.frames = append(s.frames, fr)
	if cpumode == miscUser {
		p.cache[ip] = id
	}
	return id
}

// callchain resolves a sample's callchain into s.stack (leaf first), as
// perf's thread__resolve_callchain_sample does: context markers switch
// between kernel and user, an unknown marker discards the chain, at most
// maxStack frames. A sample without a callchain gives its ip alone.
func (s *session) callchain(smp *Sample, t *thread) {
	s.stack = s.stack[:0]
	if smp.Attr.SampleType&sampleCallchain == 0 {
		s.stack = append(s.stack, s.resolve(t, uint8(smp.Misc&miscCPUModeMask), smp.IP))
		return
	}
	cpumode := uint8(miscUser)
	n := smp.CallchainLen()
	for i := 0; i < n && len(s.stack) < maxStack; i++ {
		ip := s.f.callchain(smp, i)
		if ip >= perfContextMax {
			switch ip {
			case perfContextHV:
				cpumode = 3
			case perfContextKernel:
				cpumode = miscKernel
			case perfContextUser:
				cpumode = miscUser
			case perfContextGuest, perfContextGuestK, perfContextGuestU:
				cpumode = 4 // guests: not resolved (perf script without --guest)
			default:
				s.stack = s.stack[:0]
				return
			}
			continue
		}
		s.stack = append(s.stack, s.resolve(t, cpumode, ip))
	}
}

// frameLine is the line perf script prints for frame id (with the default
// fields ip,sym,symoff,dso), without its newline.
func (s *session) frameLine(id uint32) []byte {
	fr := &s.frames[id]
	if fr.line != nil {
		return fr.line
	}
	b := make([]byte, 0, 32+len(fr.sym)+len(fr.dso))
	b = append(b, '\t')
	b = appendHexPadded(b, fr.pc, 16)
	b = append(b, ' ')
	if fr.known {
		b = append(b, fr.sym...)
		b = append(b, "+0x"...)
		b = strconv.AppendUint(b, fr.off, 16)
	} else {
		b = append(b, "[unknown]"...)
	}
	b = append(b, " ("...)
	b = append(b, fr.dso...)
	b = append(b, ')')
	fr.line = b
	return b
}

// appendHexPadded appends v in hex, right-aligned in width columns.
func appendHexPadded(b []byte, v uint64, width int) []byte {
	var tmp [16]byte
	h := strconv.AppendUint(tmp[:0], v, 16)
	for i := len(h); i < width; i++ {
		b = append(b, ' ')
	}
	return append(b, h...)
}

// notes says what the reader could not do, for the user.
func (s *session) notes() []string {
	var out []string
	if s.lost > 0 {
		out = append(out, fmt.Sprintf("perf lost %d events while recording (its buffer was full: record with a larger -m or a lower -F)", s.lost))
	}
	if s.shortSamples > 0 {
		out = append(out, fmt.Sprintf("%d samples shorter than their layout, skipped", s.shortSamples))
	}
	for pid, jc := range s.jit {
		if jc.unnamed > 0 {
			have := fileExists(fmt.Sprintf("/tmp/perf-%d.map", pid))
			out = append(out, symbolize.JITNote(int(pid), jc.comm, "", jc.unnamed, jc.asked, have))
		}
	}
	return append(out, s.sym.Notes()...)
}
