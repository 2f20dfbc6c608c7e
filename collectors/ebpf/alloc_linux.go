//go:build linux && amd64

package ebpf

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/profcap/profcap/bundle"
)

// The allocation tracer: the allocs and heap kinds of native processes,
// from uprobe sessions on the allocator's entry points (bpf/alloc.bpf.c;
// docs/design/ebpf-heap.md). It is loaded beside the session's main
// objects, with which it shares the process tree, the stack store, the
// thread names and the leaf fix-up tables, and attached per process of the
// tree and per file that holds allocator symbols.

// Roles and flags of bpf/alloc.bpf.c (enum alloc_role, F_OUTER).
const (
	rAlloc0  = 1
	rAlloc1  = 2
	rCalloc  = 3
	rRealloc = 4
	rMemptr  = 5
	rPvalloc = 6
	rFree    = 7
	fOuter   = 0x100
	fSlow    = 0x200

	cappedStack = ^uint64(0)
)

// allocEntry is an allocator entry point: its role, and the allocator it
// belongs to (for the notes).
type allocEntry struct {
	role   uint64
	family string
}

// allocEntries maps symbol names to what they are. glibc's names also
// match jemalloc, mimalloc or tcmalloc built to replace malloc; the
// prefixed ones are jemalloc's (je_ by its configure option, _rjem_ by
// tikv-jemalloc-sys, which Rust services link through tikv-jemallocator)
// and mimalloc's (mi_, the Rust mimalloc crate's entry points). Functions
// that can call another entry point are marked outer, so that what they
// call is not counted twice (glibc's realloc(NULL, n) and memalign with a
// small alignment call malloc; mi_realloc calls mi_free). Not probed:
// reallocarray (glibc's calls realloc through the PLT), xallocx (resizes in
// place), free_sized/free_aligned_sized (C23; glibc 2.39+ calls free).
var allocEntries = func() map[string]allocEntry {
	m := map[string]allocEntry{}
	std := map[string]uint64{
		"malloc": rAlloc0, "calloc": rCalloc, "realloc": rRealloc | fOuter, "free": rFree,
		"posix_memalign": rMemptr | fOuter, "aligned_alloc": rAlloc1 | fOuter, "memalign": rAlloc1 | fOuter,
		"valloc": rAlloc0 | fOuter, "pvalloc": rPvalloc | fOuter,
	}
	jemalloc := map[string]uint64{"mallocx": rAlloc0, "rallocx": rRealloc | fOuter, "sdallocx": rFree, "dallocx": rFree}
	for n, r := range std {
		m[n] = allocEntry{r, "malloc"}
		m["je_"+n] = allocEntry{r, "jemalloc"}
		m["_rjem_"+n] = allocEntry{r, "jemalloc"}
	}
	for n, r := range jemalloc {
		m[n] = allocEntry{r, "jemalloc"}
		m["je_"+n] = allocEntry{r, "jemalloc"}
		m["_rjem_"+n] = allocEntry{r, "jemalloc"}
	}
	for n, r := range map[string]uint64{
		"mi_malloc": rAlloc0, "mi_zalloc": rAlloc0, "mi_calloc": rCalloc, "mi_realloc": rRealloc | fOuter,
		"mi_malloc_aligned": rAlloc0, "mi_zalloc_aligned": rAlloc0, "mi_calloc_aligned": rCalloc,
		"mi_realloc_aligned": rRealloc | fOuter, "mi_free": rFree, "mi_free_size": rFree,
		"mi_free_aligned": rFree, "mi_free_size_aligned": rFree,
	} {
		m[n] = allocEntry{r, "mimalloc"}
	}
	return m
}()

// allocProbe is one address to attach to in a file.
type allocProbe struct {
	name     string
	off      uint64 // file offset of the probed instruction
	skip     int    // bytes from the function's start (flag-only instructions passed over)
	emulated bool   // the kernel emulates the instruction (else it is single-stepped)
	cookie   uint64 // role | flags
	family   string
}

// allocFile is what a file offers: its allocator entry points.
type allocFile struct {
	path   string
	probes []allocProbe
	err    error
}

// scanAllocFile reads a file's symbol tables (static and dynamic) for
// allocator entry points, and each one's first instructions to choose
// where to probe it.
func scanAllocFile(path string) *allocFile {
	f := &allocFile{path: path}
	ef, err := elf.Open(path)
	if err != nil {
		f.err = err
		return f
	}
	defer ef.Close()
	if ef.Machine != elf.EM_X86_64 {
		return f
	}
	seen := map[uint64]bool{}
	var syms []elf.Symbol
	for _, get := range []func() ([]elf.Symbol, error){ef.DynamicSymbols, ef.Symbols} {
		s, _ := get()
		syms = append(syms, s...)
	}
	for _, sy := range syms {
		e, ok := allocEntries[sy.Name]
		if !ok || elf.ST_TYPE(sy.Info) != elf.STT_FUNC || sy.Value == 0 || sy.Section == elf.SHN_UNDEF || seen[sy.Value] {
			continue
		}
		seen[sy.Value] = true
		name, _, _ := strings.Cut(sy.Name, "@")
		for _, p := range ef.Progs {
			if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X == 0 || sy.Value < p.Vaddr || sy.Value >= p.Vaddr+p.Filesz {
				continue
			}
			code := make([]byte, 32)
			n, _ := p.ReadAt(code, int64(sy.Value-p.Vaddr))
			skip, emu := probePoint(code[:n], e.role)
			f.probes = append(f.probes, allocProbe{name: name, off: sy.Value - p.Vaddr + p.Off + uint64(skip), skip: skip, emulated: emu, cookie: e.role, family: e.family})
			break
		}
	}
	sort.Slice(f.probes, func(i, j int) bool { return f.probes[i].name < f.probes[j].name })
	return f
}

// probePoint chooses where in a function to probe it: the first
// instruction the kernel emulates (push of a register, a relative jump or
// call, a conditional jump, nop: about 0.2 µs a hit) rather than one it
// must single-step out of line (measured 2.1 µs a hit on this VM: ten
// times as much), passing over at most four leading instructions that
// only set flags (test and cmp of registers, an immediate or a
// RIP-relative byte; zeroing a register the role does not read). Until
// such an instruction the function has touched neither its stack pointer
// nor its arguments, so a probe there sees the entry's arguments and the
// return address at SP: a uprobe session's return half still works.
// glibc's free starts with test %rdi,%rdi (probed at the je after it),
// jemalloc's malloc and sdallocx with cmp $0x1000 (probed at the ja).
func probePoint(code []byte, role uint64) (int, bool) {
	off := 0
	for range 5 {
		if off >= len(code) {
			break
		}
		if emulatedLen(code[off:]) > 0 {
			return off, true
		}
		n := flagsOnlyLen(code[off:], role)
		if n == 0 {
			break
		}
		off += n
	}
	return 0, false
}

// emulatedLen is the length of an instruction arch/x86/kernel/uprobes.c
// emulates (push_setup_xol_ops, branch_setup_xol_ops), or 0.
func emulatedLen(b []byte) int {
	switch {
	case len(b) >= 1 && b[0] >= 0x50 && b[0] <= 0x57: // push %rax..%rdi
		return 1
	case len(b) >= 2 && b[0] == 0x41 && b[1] >= 0x50 && b[1] <= 0x57: // push %r8..%r15
		return 2
	case len(b) >= 1 && b[0] == 0x90: // nop
		return 1
	case len(b) >= 5 && (b[0] == 0xe8 || b[0] == 0xe9): // call, jmp rel32
		return 5
	case len(b) >= 2 && (b[0] == 0xeb || b[0] >= 0x70 && b[0] <= 0x7f): // jmp rel8, jcc rel8
		return 2
	case len(b) >= 6 && b[0] == 0x0f && b[1] >= 0x80 && b[1] <= 0x8f: // jcc rel32
		return 6
	}
	return 0
}

// flagsOnlyLen is the length of an instruction that changes only the
// flags (or zeroes a register the role does not read), or 0.
func flagsOnlyLen(b []byte, role uint64) int {
	p := 0
	var rex byte
	if len(b) > 0 && b[0]&0xf0 == 0x40 {
		rex, p = b[0], 1
	}
	if len(b) < p+2 {
		return 0
	}
	op, modrm := b[p], b[p+1]
	mod, reg, rm := modrm>>6, (modrm>>3)&7, modrm&7
	n := 0
	switch op {
	case 0x84, 0x85, 0x38, 0x39, 0x3a, 0x3b: // test, cmp r/m, r
		if mod == 3 {
			n = p + 2
		}
	case 0x83: // cmp r/m, imm8
		if mod == 3 && reg == 7 {
			n = p + 3
		}
	case 0x81: // cmp r/m, imm32
		if mod == 3 && reg == 7 {
			n = p + 6
		}
	case 0xf7: // test r/m, imm32
		if mod == 3 && reg == 0 {
			n = p + 6
		}
	case 0x80: // cmp r/m8, imm8; cmpb $imm8, disp32(%rip)
		if reg == 7 && mod == 3 {
			n = p + 3
		} else if reg == 7 && mod == 0 && rm == 5 {
			n = p + 7
		}
	case 0x31, 0x33: // xor r, r: zeroes it
		if mod == 3 && reg == rm && rex&0x5 == 0 {
			// Not an argument register the role reads (rdi, rsi, rdx)
			// nor the stack pointer.
			if rm != 7 && rm != 6 && rm != 2 && rm != 4 {
				n = p + 2
			}
		} else if mod == 3 && reg == rm && rex&0x5 == 0x5 {
			n = p + 2 // r8..r15
		}
	}
	if n > len(b) {
		return 0
	}
	return n
}

// Constants of the attach (linux/bpf.h).
const (
	bpfLinkCreate          = 28
	bpfTraceUprobeSession  = 57
	allocDefaultSampleSize = 512 << 10
	allocDefaultMaxSamples = 10000
)

// linkCreateUprobeMulti is bpf_attr's link_create for uprobe_multi
// (cilium/ebpf's sys.LinkCreateUprobeMultiAttr, which it does not offer
// with the session attach type).
type linkCreateUprobeMulti struct {
	ProgFd           uint32
	TargetFd         uint32
	AttachType       uint32
	Flags            uint32
	Path             uint64
	Offsets          uint64
	RefCtrOffsets    uint64
	Cookies          uint64
	Count            uint32
	UprobeMultiFlags uint32
	Pid              uint32
	_                [4]byte
}

// attachSession attaches prog as a uprobe session at offsets of the file
// at path, for the process pid only.
func attachSession(prog *cebpf.Program, path string, offsets, cookies []uint64, pid int) (link.Link, error) {
	if len(offsets) == 0 || len(offsets) != len(cookies) {
		return nil, errors.New("no offsets")
	}
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return nil, err
	}
	attr := linkCreateUprobeMulti{
		ProgFd:     uint32(prog.FD()),
		AttachType: bpfTraceUprobeSession,
		Path:       uint64(uintptr(unsafe.Pointer(p))),
		Offsets:    uint64(uintptr(unsafe.Pointer(&offsets[0]))),
		Cookies:    uint64(uintptr(unsafe.Pointer(&cookies[0]))),
		Count:      uint32(len(offsets)),
		Pid:        uint32(pid),
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, bpfLinkCreate, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(p)
	runtime.KeepAlive(offsets)
	runtime.KeepAlive(cookies)
	if errno != 0 {
		return nil, fmt.Errorf("uprobe session on %s: %w", path, errno)
	}
	return link.NewFromFD(int(fd))
}

// allocObjs is what the collector uses of the allocation tracer's objects
// (the maps it shares are the session's).
type allocObjs struct {
	OnAlloc     *cebpf.Program  `ebpf:"on_alloc"`
	AllocCounts *cebpf.Map      `ebpf:"alloc_counts"`
	Live        *cebpf.Map      `ebpf:"live"`
	AllocStats  *cebpf.Map      `ebpf:"alloc_stats"`
	Stats       *cebpf.Map      `ebpf:"stats"`
	Enabled     *cebpf.Variable `ebpf:"enabled"`
}

func (o *allocObjs) Close() {
	for _, c := range []interface{ Close() error }{o.OnAlloc, o.AllocCounts, o.Live, o.AllocStats, o.Stats} {
		if c != nil && !isNilCloser(c) {
			_ = c.Close()
		}
	}
}

func isNilCloser(c interface{ Close() error }) bool {
	switch v := c.(type) {
	case *cebpf.Program:
		return v == nil
	case *cebpf.Map:
		return v == nil
	}
	return false
}

// allocTables are the fixed-point tables the program computes with.
func allocTables() (log2Frac [256]uint32, weight [1025]uint32) {
	for j := range log2Frac {
		log2Frac[j] = uint32(math.Round(math.Log2(1+(float64(j)+0.5)/256) * 65536))
	}
	weight[0] = 65536
	for i := 1; i < len(weight); i++ {
		x := float64(i) / 64
		weight[i] = uint32(math.Round(x / -math.Expm1(-x) * 65536))
	}
	return
}

// loadAllocObjs loads the allocation tracer with the given sampling
// period, cap (samples a second; <= 0: none) and whether frees are
// tracked (heap), sharing main's maps (nil: a trial load with its own).
func loadAllocObjs(main *profcapObjects, sampleBytes, maxPerSec int, heap bool) (*allocObjs, error) {
	spec, err := loadAlloc()
	if err != nil {
		return nil, err
	}
	log2Frac, weight := allocTables()
	interval, burst := uint64(0), uint64(0)
	if maxPerSec > 0 {
		// One sample per interval on average, bursts of a tenth of a
		// second's worth.
		interval = uint64(time.Second) / uint64(maxPerSec)
		burst = uint64(100 * time.Millisecond)
	}
	track := uint32(0)
	if heap {
		track = 1
	}
	for name, v := range map[string]any{"sample_bytes": uint64(sampleBytes), "cap_interval_ns": interval, "cap_burst_ns": burst,
		"track_live": track, "log2_frac": log2Frac, "weight_q16": weight} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("setting %s: %w", name, err)
		}
	}
	opts := &cebpf.CollectionOptions{}
	if main != nil {
		info, err := main.UnwindRows.Info()
		if err != nil {
			return nil, err
		}
		spec.Maps["unwind_rows"].MaxEntries = info.MaxEntries
		opts.MapReplacements = map[string]*cebpf.Map{"procs": main.Procs, "stacks": main.Stacks, "comms": main.Comms,
			"unwind_files": main.UnwindFiles, "unwind_rows": main.UnwindRows, "cfi_procs": main.CfiProcs}
	}
	var objs allocObjs
	if err := spec.LoadAndAssign(&objs, opts); err != nil {
		return nil, loadError(err)
	}
	return &objs, nil
}

var (
	allocCheckOnce sync.Once
	allocCheckErr  error
)

// allocMachineCheck says why this kernel cannot run the allocation
// tracer (it needs uprobe sessions, Linux 6.13+), or nil; tried once.
func allocMachineCheck() error {
	allocCheckOnce.Do(func() {
		objs, err := loadAllocObjs(nil, allocDefaultSampleSize, allocDefaultMaxSamples, true)
		if err != nil {
			allocCheckErr = fmt.Errorf("this kernel refuses profcap's allocation tracer (%v; it needs uprobe sessions, Linux 6.13+)", err)
			return
		}
		objs.Close()
	})
	return allocCheckErr
}

// allocCheck says whether the process maps an allocator profcap can
// probe, and which: "malloc in libc.so.6, jemalloc in refsvc".
func allocCheck(pid int) (string, error) {
	if err := allocMachineCheck(); err != nil {
		return "", errLack{err}
	}
	if err := notGo(pid); err != nil {
		return "", err
	}
	var found []string
	for _, m := range execFiles(pid) {
		f := scanAllocFile(m.open)
		fams := map[string]bool{}
		for _, p := range f.probes {
			fams[p.family] = true
		}
		for _, fam := range sortedKeys(fams) {
			found = append(found, fmt.Sprintf("%s in %s", fam, filepath.Base(m.path)))
		}
	}
	if len(found) == 0 {
		return "", fmt.Errorf("pid %d maps no allocator profcap knows (malloc, jemalloc, mimalloc symbols in its files' symbol tables); a Go program allocates through its runtime: use its pprof endpoint", pid)
	}
	return strings.Join(found, ", "), nil
}

// errGo says that a process is a Go program: it allocates through its
// runtime, not malloc (cgo's calls to malloc aside), so malloc probes
// would show next to nothing; its own heap profile (pprof) is whole.
type errGo struct{ pid int }

func (e errGo) Error() string {
	return fmt.Sprintf("pid %d is a Go program: it allocates through the Go runtime, not malloc; give the target its pprof endpoint (heap and allocs from net/http/pprof)", e.pid)
}

// notGo returns errGo for a Go program (its executable has Go's build
// information or pc-line table).
func notGo(pid int) error {
	ef, err := elf.Open(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return nil // unreadable: let the probes find out
	}
	defer ef.Close()
	if ef.Section(".go.buildinfo") != nil || ef.Section(".gopclntab") != nil {
		return errGo{pid}
	}
	return nil
}

// execFile is a file mapped executable by a process.
type execFile struct {
	key  profcapFileKey
	path string // as the process sees it
	open string // through /proc/PID/root
}

func execFiles(pid int) []execFile {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil
	}
	var out []execFile
	seen := map[profcapFileKey]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || !strings.Contains(f[1], "x") || !strings.HasPrefix(f[5], "/") || strings.HasSuffix(sc.Text(), "(deleted)") {
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
		out = append(out, execFile{key: key, path: path, open: fmt.Sprintf("/proc/%d/root%s", pid, path)})
	}
	return out
}

// allocTracer is the allocation tracer of one session.
type allocTracer struct {
	objs        *allocObjs
	heap        bool
	sampleBytes int
	maxPerSec   int

	queue chan int
	wg    sync.WaitGroup // attach requests in flight
	done  chan struct{}
	runWG sync.WaitGroup // the attaching goroutine

	mu       sync.Mutex
	files    map[profcapFileKey]*allocFile
	attached map[[2]uint64]bool // (tgid, inode key)
	links    []link.Link
	probed   map[string]string // file (base name) -> what was probed
	failures []string
	nprocs   int // processes with at least one probe
	late     int // processes attached after the window opened
	opened   bool

	cpuStart map[int]time.Duration // CPU time of the tree's processes at the opening (or when probed)
	cpuTree  time.Duration         // their CPU time over the window

	maxOverhead float64
	started     time.Time
	ended       chan struct{} // closed when the window ends
	guardWG     sync.WaitGroup
	stopped     time.Time // when the guard detached the probes (zero: not)
	stopReason  string
}

func newAllocTracer(main *profcapObjects, opt Options, kinds []bundle.Kind) (*allocTracer, error) {
	heap := slices.Contains(kinds, bundle.Heap)
	objs, err := loadAllocObjs(main, opt.AllocSampleBytes, opt.AllocMaxSamples, heap)
	if err != nil {
		return nil, err
	}
	a := &allocTracer{objs: objs, heap: heap, sampleBytes: opt.AllocSampleBytes, maxPerSec: opt.AllocMaxSamples, maxOverhead: opt.AllocMaxOverhead,
		queue: make(chan int, 1024), done: make(chan struct{}), ended: make(chan struct{}),
		files: map[profcapFileKey]*allocFile{}, attached: map[[2]uint64]bool{}, probed: map[string]string{}, cpuStart: map[int]time.Duration{}}
	a.runWG.Add(1)
	go a.run()
	return a, nil
}

// follow asks for a process's allocators to be probed (a process of the
// tree seen for the first time, or exec'd).
func (a *allocTracer) follow(pid int) {
	a.wg.Add(1)
	select {
	case a.queue <- pid:
	default:
		a.wg.Done()
		a.mu.Lock()
		a.failures = append(a.failures, fmt.Sprintf("pid %d: not probed (too many new processes at once)", pid))
		a.mu.Unlock()
	}
}

// wait waits until every process asked for so far is probed.
func (a *allocTracer) wait() { a.wg.Wait() }

func (a *allocTracer) run() {
	defer a.runWG.Done()
	for {
		select {
		case pid := <-a.queue:
			a.attach(pid)
			a.wg.Done()
		case <-a.done:
			return
		}
	}
}

// attach probes every allocator of the process's files not probed for it
// yet (after an exec the probes of files it still maps stay).
func (a *allocTracer) attach(pid int) {
	probedAny := false
	for _, m := range execFiles(pid) {
		ak := [2]uint64{uint64(pid), m.key.Ino<<20 ^ uint64(m.key.Dev)}
		a.mu.Lock()
		done := a.attached[ak]
		f := a.files[m.key]
		a.mu.Unlock()
		if done {
			probedAny = true
			continue
		}
		if f == nil {
			f = scanAllocFile(m.open)
			a.mu.Lock()
			a.files[m.key] = f
			a.mu.Unlock()
		}
		var offs, cookies []uint64
		var names []string
		for _, p := range f.probes {
			if p.cookie&0xff == rFree && !a.heap {
				continue
			}
			offs = append(offs, p.off)
			c := p.cookie
			if !p.emulated {
				c |= fSlow
			}
			cookies = append(cookies, c)
			switch {
			case !p.emulated:
				names = append(names, p.name+" (single-stepped)")
			case p.skip > 0:
				names = append(names, fmt.Sprintf("%s+%d", p.name, p.skip))
			default:
				names = append(names, p.name)
			}
		}
		if len(offs) == 0 {
			continue
		}
		a.mu.Lock()
		stopped := !a.stopped.IsZero()
		a.mu.Unlock()
		if stopped {
			return
		}
		l, err := attachSession(a.objs.OnAlloc, m.open, offs, cookies, pid)
		a.mu.Lock()
		if err != nil {
			a.failures = append(a.failures, fmt.Sprintf("pid %d %s: %v", pid, filepath.Base(m.path), err))
		} else {
			a.links = append(a.links, l)
			a.attached[ak] = true
			a.probed[filepath.Base(m.path)] = strings.Join(names, ", ")
			probedAny = true
		}
		a.mu.Unlock()
	}
	if probedAny {
		a.mu.Lock()
		a.nprocs++
		if a.opened {
			a.late++
			if _, ok := a.cpuStart[pid]; !ok {
				if c, ok := processCPU(pid); ok {
					a.cpuStart[pid] = c
				}
			}
		}
		a.mu.Unlock()
	}
}

// enable opens counting and notes the tree's CPU time.
func (a *allocTracer) enable(tgids []uint32) {
	a.mu.Lock()
	for _, t := range tgids {
		if c, ok := processCPU(int(t)); ok {
			a.cpuStart[int(t)] = c
		}
	}
	a.opened = true
	a.mu.Unlock()
	a.started = time.Now()
	_ = a.objs.Enabled.Set(uint32(1))
	if a.maxOverhead > 0 {
		a.guardWG.Add(1)
		go a.guard()
	}
}

// treeCPU is the CPU time the tree's processes ran since the opening
// (those seen exited are left out).
func (a *allocTracer) treeCPU() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	var cpu time.Duration
	for pid, c0 := range a.cpuStart {
		if c, ok := processCPU(pid); ok {
			cpu += c - c0
		}
	}
	return cpu
}

// guard is the cost bound of the probes themselves: every probed call
// traps into the kernel, sampled or not, so a target that calls its
// allocator millions of times a second loses most of its speed. Every
// half second it estimates what the probes took of the tree's CPU time
// since the opening (the calls counted, at the measured cost of a probe
// hit); over maxOverhead, it detaches them: the profiles then cover the
// window up to that instant (partial), and the note says why.
func (a *allocTracer) guard() {
	defer a.guardWG.Done()
	tick := time.NewTicker(guardEvery)
	defer tick.Stop()
	for {
		select {
		case <-a.done:
			return
		case <-a.ended:
			return
		case <-tick.C:
		}
		cpu := a.treeCPU()
		if cpu < guardMinCPU {
			continue
		}
		est := probeCost(a.stats())
		if share := est.Seconds() / cpu.Seconds(); share > a.maxOverhead {
			cost := fmt.Sprintf("about %.0f%% of its CPU time", 100*share)
			if share > 0.9 {
				cost = "nearly all of its CPU time" // the estimate is rough: ticks of 10 ms
			}
			a.stop(fmt.Sprintf("the allocator probes were detached %.1f s into the window: the tree called its allocator %.0f times a second, which cost it %s (%.2f CPU-s of the %.2f it ran; the bound is %.0f%%, ebpf.Options.AllocMaxOverhead)",
				time.Since(a.started).Seconds(), float64(a.calls(a.stats()))/max(time.Since(a.started).Seconds(), 1e-3), cost, est.Seconds(), cpu.Seconds(), 100*a.maxOverhead))
			return
		}
	}
}

// stop ends the tracer's counting now and detaches its probes.
func (a *allocTracer) stop(reason string) {
	_ = a.objs.Enabled.Set(uint32(0))
	a.mu.Lock()
	if a.stopped.IsZero() {
		a.stopped, a.stopReason = time.Now(), reason
	}
	links := a.links
	a.links = nil
	a.mu.Unlock()
	a.cpuTree = a.treeCPU()
	for _, l := range links {
		_ = l.Close()
	}
}

// disable ends counting (the window's end).
func (a *allocTracer) disable() {
	_ = a.objs.Enabled.Set(uint32(0))
	close(a.ended)
}

// finish waits for the guard and reads the tree's CPU time, after the
// window.
func (a *allocTracer) finish() {
	a.guardWG.Wait()
	a.mu.Lock()
	stopped := !a.stopped.IsZero()
	a.mu.Unlock()
	if !stopped {
		a.cpuTree = a.treeCPU()
	}
}

func (a *allocTracer) calls(st allocStats) uint64 {
	return st[allocAllocStatA_ALLOC_CALLS] + st[allocAllocStatA_FREE_CALLS]
}

// probeCost estimates what the probed calls took of the target's time.
func probeCost(st allocStats) time.Duration {
	calls := st[allocAllocStatA_ALLOC_CALLS] + st[allocAllocStatA_FREE_CALLS]
	slow := min(st[allocAllocStatA_SLOW_CALLS], calls)
	return time.Duration(calls-slow)*emulatedHit + time.Duration(slow)*steppedHit
}

func (a *allocTracer) close() {
	close(a.done)
	a.runWG.Wait() // no attach after the links are closed
	a.mu.Lock()
	for _, l := range a.links {
		_ = l.Close()
	}
	a.links = nil
	a.mu.Unlock()
	a.objs.Close()
}

// processCPU is a process's CPU time, all threads (utime + stime of
// /proc/PID/stat, in clock ticks of 10 ms).
func processCPU(pid int) (time.Duration, bool) {
	f := statFields(fmt.Sprintf("/proc/%d/stat", pid))
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+s) * 10 * time.Millisecond, true
}

type allocStats [allocAllocStatA_MAX]uint64

func (a *allocTracer) stats() allocStats {
	var out allocStats
	for i := range out {
		var per []uint64
		if err := a.objs.AllocStats.Lookup(uint32(i), &per); err == nil {
			for _, v := range per {
				out[i] += v
			}
		}
	}
	return out
}
