//go:build linux && amd64

package ebpf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
)

var (
	checkOnce sync.Once
	checkErr  error
)

// machineCheck says why this machine cannot run the collector, or nil:
// privileges (root, or CAP_BPF with CAP_PERFMON), kernel BTF, and a trial
// load of every program (the verifier of this kernel), done once.
func machineCheck() error {
	checkOnce.Do(func() { checkErr = trialLoad() })
	return checkErr
}

const (
	capPerfmon = 38
	capBPF     = 39
	capSysAdm  = 21
)

func hasCap(c uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<c) != 0
		}
	}
	return false
}

func trialLoad() error {
	if os.Geteuid() != 0 && !hasCap(capSysAdm) && !(hasCap(capBPF) && hasCap(capPerfmon)) {
		return errors.New("eBPF needs root, or CAP_BPF and CAP_PERFMON (setcap cap_bpf,cap_perfmon+ep profcap); the perf collector is used instead")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return errors.New("the kernel has no BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF=y, Linux 5.8+), which the eBPF programs are relocated against; the perf collector is used instead")
	}
	objs, err := load(1000000, 1)
	if err != nil {
		return fmt.Errorf("this kernel refuses profcap's eBPF programs (%v); the perf collector is used instead", err)
	}
	objs.Close()
	return nil
}

// load loads every program and map, with the off-CPU threshold and room
// for rows unwind rows.
func load(thresholdNs uint64, rows int) (*profcapObjects, error) {
	_ = rlimit.RemoveMemlock() // kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK
	spec, err := loadProfcap()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["threshold_ns"].Set(thresholdNs); err != nil {
		return nil, err
	}
	spec.Maps["unwind_rows"].MaxEntries = uint32(max(1, rows))
	var objs profcapObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, loadError(err)
	}
	return &objs, nil
}

// loadError is err, a verifier's refusal shortened to its last lines.
func loadError(err error) error {
	var ve *cebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("verifier: %s", lastLines(fmt.Sprintf("%+v", ve), 3))
	}
	return err
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " / ")
}

// session is one capture: the loaded objects, their links and what was
// learnt of the process tree.
type session struct {
	opt   Options
	kinds []bundle.Kind
	pid   int
	objs  *profcapObjects
	links []link.Link
	pfds  []int // perf events, one per CPU
	rd    *ringbuf.Reader
	sym   symbolizer
	unw   *unwindInfo

	mu    sync.Mutex
	procs map[uint32]*procInfo // every process tracked, in order seen
	order []uint32
	evWG  sync.WaitGroup

	bpfTime time.Duration // the programs' run time over the window (BPFStats)
	bpfEach []string

	// The task iterator that takes the stacks of threads still blocked
	// at the window's end (blocked_linux.go), or why it could not load
	// (their user stacks are then those of their previous block).
	blocked    *blockedIter
	blockedErr error

	// The sched_switch program that takes user stacks by task work
	// (switchtw_linux.go), or why it could not load (on_switch and
	// on_sys_exit are used then).
	tw    *switchTW
	twErr error

	// The iterator that copies the blocks still open at the window's end
	// out of the task storage (bpf/profcap.bpf.c open_blocks).
	openIt *link.Iter

	// The allocs and heap kinds (alloc_linux.go): the tracer, or why it
	// could not start (the other kinds go on without it).
	alloc    *allocTracer
	allocErr error
}

// progRuntime is the run time of every program so far (0 without
// stats), and each program's run time and run count.
func (s *session) progRuntime() (time.Duration, map[string][2]uint64) {
	var t time.Duration
	each := map[string][2]uint64{}
	for name, p := range map[string]*cebpf.Program{"on_cpu_sample": s.objs.OnCpuSample, "on_switch": s.objs.OnSwitch, "on_waking": s.objs.OnWaking,
		"on_sys_exit": s.objs.OnSysExit, "on_fork": s.objs.OnFork, "on_exec": s.objs.OnExec, "on_exit": s.objs.OnExit, "on_alloc": s.allocProg(),
		"on_switch_tw": s.twProg()} {
		if p == nil {
			continue
		}
		if st, err := p.Stats(); err == nil {
			t += st.Runtime
			each[name] = [2]uint64{uint64(st.Runtime), st.RunCount}
		}
	}
	return t, each
}

type procInfo struct {
	pid, ppid int
	comm      string
	how       string // "initial", "forked", "exec'd"
	exited    bool
}

func (s *session) wants(k bundle.Kind) bool { return slices.Contains(s.kinds, k) }

func (s *session) close() {
	for _, fd := range s.pfds {
		_ = unix.Close(fd)
	}
	for _, l := range s.links {
		_ = l.Close()
	}
	if s.alloc != nil {
		s.alloc.close()
	}
	s.blocked.close()
	s.tw.close()
	if s.openIt != nil {
		_ = s.openIt.Close()
	}
	if s.rd != nil {
		_ = s.rd.Close()
	}
	s.evWG.Wait()
	if s.objs != nil {
		s.objs.Close()
	}
}

func (c *Collector) collect(ctx context.Context, w *collectors.Window, pid int, notes []string, kinds []bundle.Kind, emit collectors.Emit) {
	fail := func(err error) {
		for _, k := range kinds {
			emit(collectors.Result{Kind: k, Collector: Name, Status: bundle.StatusFailed, Err: err})
		}
	}
	s := &session{opt: c.opt, kinds: kinds, pid: pid, sym: newSymbolizer(), procs: map[uint32]*procInfo{}}
	defer s.close()
	if err := s.setUp(); err != nil {
		fail(fmt.Errorf("ebpf: %w", err))
		return
	}
	collectors.Ready(ctx)
	if !w.WaitOpen(ctx) {
		fail(errors.New("the window ended before it opened"))
		return
	}
	var statsOn io.Closer
	if s.opt.BPFStats {
		statsOn, _ = cebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	}
	before, beforeEach := s.progRuntime()
	start, startMono := s.enable()
	select {
	case <-w.Done():
	case <-ctx.Done():
	}
	end, endMono := s.disable()
	if s.openIt != nil {
		// At once, and before the walk, which reads what this finds.
		if err := s.exportOpen(); err != nil {
			fail(fmt.Errorf("ebpf: %w", err))
			return
		}
	}
	if s.blocked != nil {
		// At once: a thread still blocked now is one that blocked
		// through the window's end.
		if err := s.blocked.walk(); err != nil {
			s.blockedErr = err
			s.blocked.close()
			s.blocked = nil
		}
	}
	after, afterEach := s.progRuntime()
	s.bpfTime = after - before
	for name, a := range afterEach {
		if a[1] > beforeEach[name][1] {
			s.bpfEach = append(s.bpfEach, fmt.Sprintf("%s %d ns in %d runs", name, a[0]-beforeEach[name][0], a[1]-beforeEach[name][1]))
		}
	}
	slices.Sort(s.bpfEach)
	if statsOn != nil {
		_ = statsOn.Close()
	}
	if ctx.Err() != nil {
		fail(fmt.Errorf("ebpf capture abandoned: %w", ctx.Err()))
		return
	}
	s.results(start, end, startMono, endMono, notes, emit)
}

// setUp loads and attaches: process tracking first, then the walk of the
// tree (so that no fork in between is missed), then sampling.
func (s *session) setUp() error {
	s.unw = buildUnwind(treeOf(s.pid))
	objs, err := load(uint64(s.opt.OffCPUThreshold.Nanoseconds()), len(s.unw.rows))
	if err != nil {
		return err
	}
	s.objs = objs
	// Before the fork program is attached: it copies a parent's CFI
	// mappings to its child.
	if err := s.unw.install(objs); err != nil {
		return err
	}
	if s.wants(bundle.Allocs) || s.wants(bundle.Heap) {
		// Before the tree is followed, so that every process it adds is
		// probed.
		s.alloc, s.allocErr = newAllocTracer(objs, s.opt, s.kinds)
	}
	if s.rd, err = ringbuf.NewReader(objs.Events); err != nil {
		return err
	}
	s.evWG.Add(1)
	go s.readEvents()
	for _, p := range []*cebpf.Program{objs.OnFork, objs.OnExec, objs.OnExit} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return fmt.Errorf("attaching %s: %w", p, err)
		}
		s.links = append(s.links, l)
	}
	if err := s.seedTree(); err != nil {
		return err
	}
	if s.alloc != nil {
		s.alloc.wait() // the tree's allocators are probed before Ready
	}
	if s.wants(bundle.OffCPU) || s.wants(bundle.Wakeup) {
		// A kept block's user stack: by a task work where the kernel
		// has them (nothing at every system call), else at the
		// thread's syscall exit.
		onSwitch := objs.OnSwitch
		if s.opt.NoTaskWork {
			s.twErr = errors.New("turned off")
		} else if s.tw, s.twErr = loadSwitchTW(objs, uint64(s.opt.OffCPUThreshold.Nanoseconds())); s.twErr == nil {
			onSwitch = s.tw.objs.OnSwitchTw
		}
		progs := []*cebpf.Program{onSwitch}
		if s.wants(bundle.Wakeup) {
			// Only the wakeup kind needs the wakers: offcpu alone
			// leaves every wakeup on the machine untouched.
			progs = append(progs, objs.OnWaking)
		}
		for _, p := range progs {
			l, err := link.AttachTracing(link.TracingOptions{Program: p})
			if err != nil {
				return fmt.Errorf("attaching %s: %w", p, err)
			}
			s.links = append(s.links, l)
		}
		if s.tw == nil {
			l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_exit", Program: objs.OnSysExit})
			if err != nil {
				return fmt.Errorf("attaching raw_tp/sys_exit: %w", err)
			}
			s.links = append(s.links, l)
		}
		var err error
		if s.openIt, err = link.AttachIter(link.IterOptions{Program: objs.OpenBlocks}); err != nil {
			return fmt.Errorf("attaching the open-blocks task iterator: %w", err)
		}
		if s.opt.noBlockedIter {
			s.blockedErr = errors.New("turned off")
		} else {
			s.blocked, s.blockedErr = loadBlockedIter(objs)
		}
	}
	if s.wants(bundle.CPU) {
		if err := s.openPerfEvents(); err != nil {
			return err
		}
	}
	return nil
}

// openPerfEvents opens a cpu-clock sampling event at the frequency on
// every online CPU and attaches the sampling program to each.
func (s *session) openPerfEvents() error {
	cpus, err := onlineCPUs()
	if err != nil {
		return err
	}
	for _, cpu := range cpus {
		attr := unix.PerfEventAttr{
			Type:   unix.PERF_TYPE_SOFTWARE,
			Config: unix.PERF_COUNT_SW_CPU_CLOCK,
			Size:   uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
			Sample: uint64(s.opt.Frequency),
			Bits:   unix.PerfBitFreq | unix.PerfBitDisabled,
		}
		fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err != nil {
			return fmt.Errorf("perf_event_open on cpu %d: %w", cpu, err)
		}
		s.pfds = append(s.pfds, fd)
		if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_SET_BPF, s.objs.OnCpuSample.FD()); err != nil {
			return fmt.Errorf("attaching the sampling program on cpu %d: %w", cpu, err)
		}
		if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0); err != nil {
			return fmt.Errorf("enabling sampling on cpu %d: %w", cpu, err)
		}
	}
	return nil
}

func onlineCPUs() ([]int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return nil, err
	}
	var cpus []int
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, ok := strings.Cut(r, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("reading online CPUs %q", b)
		}
		z := a
		if ok {
			if z, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("reading online CPUs %q", b)
			}
		}
		for c := a; c <= z; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

func monoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// enable opens counting. Threads of the tree that are blocked now get a
// switch-out at this instant, so that a block that began before the window
// counts from its start.
func (s *session) enable() (time.Time, uint64) {
	now := monoNow()
	if s.wants(bundle.OffCPU) || s.wants(bundle.Wakeup) {
		for _, tgid := range s.tgids() {
			for _, tid := range taskIDs(int(tgid)) {
				st := threadState(int(tgid), tid)
				if st != 'S' && st != 'D' {
					continue
				}
				v := profcapStart{Ts: now, State: uint32(st), Flags: fInitial, Tgid: tgid}
				_ = s.objs.Initial.Update(uint32(tid), &v, cebpf.UpdateAny)
			}
		}
	}
	if s.alloc != nil {
		s.alloc.enable(s.tgids())
	}
	if s.tw != nil {
		_ = s.tw.objs.Enabled.Set(uint32(1))
	}
	// cpu samples count by the second of the window they fall in.
	start := monoNow()
	_ = s.objs.WindowStart.Set(start)
	_ = s.objs.Enabled.Set(uint32(1))
	return time.Now(), start
}

// exportOpen runs the open_blocks iterator once: the blocks open now are
// in OpenOut after it.
func (s *session) exportOpen() error {
	rd, err := s.openIt.Open()
	if err != nil {
		return fmt.Errorf("running the open-blocks task iterator: %w", err)
	}
	_, err = io.Copy(io.Discard, rd)
	_ = rd.Close()
	if err != nil {
		return fmt.Errorf("running the open-blocks task iterator: %w", err)
	}
	return nil
}

func (s *session) disable() (time.Time, uint64) {
	_ = s.objs.Enabled.Set(uint32(0))
	if s.tw != nil {
		_ = s.tw.objs.Enabled.Set(uint32(0))
	}
	if s.alloc != nil {
		s.alloc.disable()
	}
	return time.Now(), monoNow()
}

func (s *session) twProg() *cebpf.Program {
	if s.tw == nil {
		return nil
	}
	return s.tw.objs.OnSwitchTw
}

func (s *session) allocProg() *cebpf.Program {
	if s.alloc == nil {
		return nil
	}
	return s.alloc.objs.OnAlloc
}

func (s *session) tgids() []uint32 {
	var out []uint32
	var k uint32
	var v profcapProc
	it := s.objs.Procs.Iterate()
	for it.Next(&k, &v) {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// seedTree tracks the target and every descendant alive now.
// treeOf lists pid and its descendants now, parents first.
func treeOf(pid int) []int {
	kids := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := ppidOf(p); ok {
			kids[pp] = append(kids[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, p)
		queue = append(queue, kids[p]...)
	}
	return out
}

func (s *session) seedTree() error {
	for _, p := range treeOf(s.pid) {
		pp, _ := ppidOf(p)
		comm := readComm(p)
		v := profcapProc{Ppid: uint32(pp), Flags: pInitial}
		copy(int8s(v.Comm[:]), comm)
		if err := s.objs.Procs.Update(uint32(p), &v, cebpf.UpdateNoExist); err != nil && !errors.Is(err, cebpf.ErrKeyExist) {
			break // full: the rest is said by the note
		}
		s.addProc(uint32(p), uint32(pp), comm, "initial")
	}
	return nil
}

func (s *session) addProc(tgid, ppid uint32, comm, how string) {
	s.mu.Lock()
	if p, ok := s.procs[tgid]; ok {
		if how == "exec'd" {
			p.comm, p.how = comm, how
		}
		s.mu.Unlock()
		if how == "exec'd" {
			_ = s.sym.Snapshot(int(tgid))
			if s.alloc != nil {
				s.alloc.follow(int(tgid)) // the new image's allocators
			}
		}
		return
	}
	s.procs[tgid] = &procInfo{pid: int(tgid), ppid: int(ppid), comm: comm, how: how}
	s.order = append(s.order, tgid)
	s.mu.Unlock()
	if err := s.sym.Snapshot(int(tgid)); err != nil && ppid != 0 {
		// Exited already: a forked child that did not exec shares its
		// parent's layout.
		s.sym.Inherit(int(tgid), int(ppid))
	}
	if s.alloc != nil {
		s.alloc.follow(int(tgid))
	}
}

// readEvents follows forks, execs and exits of the tree, snapshotting each
// new image's memory map while the process still runs.
func (s *session) readEvents() {
	defer s.evWG.Done()
	for {
		rec, err := s.rd.Read()
		if err != nil {
			return
		}
		if len(rec.RawSample) < int(unsafe.Sizeof(profcapProcEvent{})) {
			continue
		}
		ev := *(*profcapProcEvent)(unsafe.Pointer(&rec.RawSample[0]))
		comm := cstr(ev.Comm[:])
		switch ev.Type {
		case evFork:
			s.addProc(ev.Tgid, ev.Ppid, comm, "forked")
		case evExec:
			s.addProc(ev.Tgid, ev.Ppid, comm, "exec'd")
		case evExit:
			s.mu.Lock()
			if p := s.procs[ev.Tgid]; p != nil {
				p.exited = true
			}
			s.mu.Unlock()
		}
	}
}

// Constants of bpf/profcap.h.
const (
	pInitial = 1
	pForked  = 2
	pExeced  = 4
	pExited  = 8

	fWakeSeen    = 1
	fWaker       = 4
	fWakerIRQ    = 8
	fUstackStale = 16
	fUstackLost  = 32
	fInitial     = 64

	evFork = 1
	evExec = 2
	evExit = 3
)

func int8s(b []int8) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(b))), len(b))
}

func cstr(b []int8) string {
	bs := int8s(b)
	if i := slices.Index(bs, 0); i >= 0 {
		bs = bs[:i]
	}
	return string(bs)
}

func readComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

func readTaskComm(pid, tid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", pid, tid))
	return strings.TrimSpace(string(b))
}

func statFields(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

func ppidOf(pid int) (int, bool) {
	f := statFields(fmt.Sprintf("/proc/%d/stat", pid))
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

func threadState(pid, tid int) byte {
	f := statFields(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if len(f) < 1 || f[0] == "" {
		return 0
	}
	return f[0][0]
}

func taskIDs(pid int) []int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		if t, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, t)
		}
	}
	return out
}
