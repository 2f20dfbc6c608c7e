//go:build linux && amd64

package ebpf

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/formats/perfscript"
)

// results reads the maps once, after the window, and emits one profile per
// kind asked for.
func (s *session) results(start, end time.Time, startMono, endMono uint64, notes []string, emit collectors.Emit) {
	// A thread woken just before the end takes its user stack at its
	// syscall exit, microseconds later: let those land.
	time.Sleep(10 * time.Millisecond)
	st := s.stats()
	r := &reader{s: s, stacks: map[uint64][]uint64{}, comms: map[uint32]string{}, pcomm: map[uint32]string{}}
	r.readNames()
	notes = append(notes, s.treeNote(st))
	note := strings.Join(notes, "; ")
	base := func(k bundle.Kind) collectors.Result {
		return collectors.Result{Kind: k, Collector: Name, Start: start, End: end, Status: bundle.StatusOK, Note: note}
	}
	finish := func(res collectors.Result, p *profile.Profile, comments []string) {
		p.TimeNanos = start.UnixNano()
		p.DurationNanos = end.Sub(start).Nanoseconds()
		p.Comments = append(p.Comments, comments...)
		p.Comments = append(p.Comments, symNotes(s.sym)...)
		if s.opt.BPFStats {
			p.Comments = append(p.Comments, fmt.Sprintf("ebpf: bpf programs ran %d ns over the window (bpf_stats): %s", s.bpfTime.Nanoseconds(), strings.Join(s.bpfEach, ", ")))
		}
		if err := p.CheckValid(); err != nil {
			res.Status, res.Err = bundle.StatusFailed, fmt.Errorf("ebpf %s profile: %w", res.Kind, err)
			res.Profile = nil
		} else {
			res.Profile = p
		}
		if len(p.Sample) == 0 && res.Status == bundle.StatusOK {
			res.Note = strings.TrimPrefix(res.Note+"; no samples: the process tree did not run (cpu) or block (offcpu) during the window", "; ")
		}
		emit(res)
	}
	if s.wants(bundle.CPU) {
		p, c := r.cpuProfile(st)
		finish(base(bundle.CPU), p, c)
	}
	if s.wants(bundle.OffCPU) || s.wants(bundle.Wakeup) {
		blocks := r.offBlocks(startMono, endMono)
		offBase := func(k bundle.Kind) collectors.Result {
			res := base(k)
			if n := r.endNote(); n != "" {
				res.Note = strings.TrimPrefix(res.Note+"; "+n, "; ")
			}
			return res
		}
		if s.wants(bundle.OffCPU) {
			p, c := r.offProfile(blocks, st)
			finish(offBase(bundle.OffCPU), p, c)
		}
		if s.wants(bundle.Wakeup) {
			p, c := r.wakeProfile(blocks, st)
			finish(offBase(bundle.Wakeup), p, c)
		}
	}
	if s.wants(bundle.Allocs) || s.wants(bundle.Heap) {
		s.allocResults(r, start, end, note, emit)
	}
}

type stats [profcapStatSTAT_MAX]uint64

func (s *session) stats() stats {
	var out stats
	for i := range out {
		var per []uint64
		if err := s.objs.Stats.Lookup(uint32(i), &per); err == nil {
			for _, v := range per {
				out[i] += v
			}
		}
	}
	return out
}

// treeNote lists the processes profiled.
func (s *session) treeNote(st stats) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	const show = 12
	var parts []string
	for i, tgid := range s.order {
		if i == show {
			parts = append(parts, fmt.Sprintf("and %d more", len(s.order)-show))
			break
		}
		p := s.procs[tgid]
		desc := p.comm
		if p.how != "initial" {
			desc += ", " + p.how
		}
		if p.exited {
			desc += ", exited"
		}
		parts = append(parts, fmt.Sprintf("%d (%s)", p.pid, desc))
	}
	n := fmt.Sprintf("profiled %d process", len(s.order))
	if len(s.order) != 1 {
		n += "es"
	}
	n += ": " + strings.Join(parts, ", ")
	if st[profcapStatSTAT_PROCS_FULL] > 0 {
		n += fmt.Sprintf(" (truncated: the tree outgrew %d processes; %d forks were not followed)", s.opt.MaxProcs, st[profcapStatSTAT_PROCS_FULL])
	}
	return n
}

// reader turns map contents into profiles.
type reader struct {
	s      *session
	stacks map[uint64][]uint64
	comms  map[uint32]string // tid -> thread name
	pcomm  map[uint32]string // tgid -> process name

	// Threads blocked at the window's end (offBlocks): walked by the task
	// iterator (open blocks, and kept blocks not yet out of their system
	// call), given their previous block's user stack (of which prevSame
	// blocked at the same call site and stack pointer), left without.
	walkedOpen, walkedPending, prevUser, prevSame, notTaken int
}

func (r *reader) readNames() {
	var k uint32
	var c profcapComm
	it := r.s.objs.Comms.Iterate()
	for it.Next(&k, &c) {
		r.comms[k] = cstr(c.Comm[:])
	}
	var p profcapProc
	it = r.s.objs.Procs.Iterate()
	for it.Next(&k, &p) {
		r.pcomm[k] = cstr(p.Comm[:])
	}
	r.s.mu.Lock()
	for tgid, p := range r.s.procs {
		if r.pcomm[tgid] == "" {
			r.pcomm[tgid] = p.comm
		}
	}
	r.s.mu.Unlock()
}

func (r *reader) thread(tgid, tid uint32) string {
	if n := r.comms[tid]; n != "" {
		return n
	}
	if n := readTaskComm(int(tgid), int(tid)); n != "" {
		r.comms[tid] = n
		return n
	}
	return strconv.Itoa(int(tid))
}

func (r *reader) stack(id uint64) []uint64 {
	if id == 0 {
		return nil
	}
	if st, ok := r.stacks[id]; ok {
		return st
	}
	var v profcapStack
	var out []uint64
	if err := r.s.objs.Stacks.Lookup(id, &v); err == nil {
		out = slices.Clone(v.Ips[:min(int(v.Nr), len(v.Ips))])
		if v.Flags&stackCut != 0 {
			out = append(out, cutMark)
		}
	}
	r.stacks[id] = out
	return out
}

// stackCut is a stored stack's flag (bpf/profcap.h STACK_CUT): the CFI walk
// stopped before the outermost frame. cutMark ends such a stack's
// addresses; userLocs turns it into cutFrame at the root.
const (
	stackCut = 1
	cutMark  = ^uint64(0)
	cutFrame = "[stack cut: no unwind rule for the next frame, or its memory unreadable]"
)

// builder makes locations and samples of one profile.
type builder struct {
	r       *reader
	p       *profile.Profile
	funcs   map[string]*profile.Function
	maps    map[string]*profile.Mapping
	locs    map[string]*profile.Location
	samples map[string]*profile.Sample
}

func (r *reader) newBuilder(p *profile.Profile) *builder {
	return &builder{r: r, p: p, funcs: map[string]*profile.Function{}, maps: map[string]*profile.Mapping{},
		locs: map[string]*profile.Location{}, samples: map[string]*profile.Sample{}}
}

func (b *builder) mapping(file, buildID string) *profile.Mapping {
	if file == "" {
		return nil
	}
	if m := b.maps[file]; m != nil {
		return m
	}
	m := &profile.Mapping{ID: uint64(len(b.p.Mapping) + 1), File: file, BuildID: buildID, HasFunctions: true}
	b.maps[file] = m
	b.p.Mapping = append(b.p.Mapping, m)
	return m
}

func (b *builder) function(name, file string) *profile.Function {
	key := name + "\x00" + file
	if f := b.funcs[key]; f != nil {
		return f
	}
	f := &profile.Function{ID: uint64(len(b.p.Function) + 1), Name: name, SystemName: name, Filename: file}
	b.funcs[key] = f
	b.p.Function = append(b.p.Function, f)
	return f
}

// named is a location of a pseudo-frame ("--", "[preempted ...]").
func (b *builder) named(name string) *profile.Location {
	key := "n\x00" + name
	if l := b.locs[key]; l != nil {
		return l
	}
	l := &profile.Location{ID: uint64(len(b.p.Location) + 1), Line: []profile.Line{{Function: b.function(name, "")}}}
	b.locs[key] = l
	b.p.Location = append(b.p.Location, l)
	return l
}

func (b *builder) frame(f Frame, addr uint64) *profile.Location {
	name := f.Function // a known function, or a nameless one by its start
	if name == "" {
		switch {
		case f.Module != "":
			name = fmt.Sprintf("%s+0x%x", baseName(f.Module), f.Offset)
		default:
			name = "[unknown]"
		}
	}
	key := fmt.Sprintf("f\x00%s\x00%s\x00%x", name, f.Module, f.Offset)
	if f.Module == "" {
		key = fmt.Sprintf("f\x00%s\x00%x", name, addr)
	}
	if l := b.locs[key]; l != nil {
		return l
	}
	l := &profile.Location{ID: uint64(len(b.p.Location) + 1), Address: addr, Mapping: b.mapping(f.Module, f.BuildID)}
	l.Line = []profile.Line{{Function: b.function(name, f.File), Line: int64(f.Line)}}
	b.locs[key] = l
	b.p.Location = append(b.p.Location, l)
	return l
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// callerAddrs turns return addresses into addresses inside the call (all
// but the first frame), for symbol lookup.
func callerAddrs(ips []uint64) []uint64 {
	out := slices.Clone(ips)
	for i := 1; i < len(out); i++ {
		if out[i] > 0 {
			out[i]--
		}
	}
	return out
}

// kernelLocs and userLocs are a stack's locations, leaf first.
func (b *builder) kernelLocs(ips []uint64) []*profile.Location {
	if len(ips) == 0 {
		return nil
	}
	fr := b.r.s.sym.Kernel(callerAddrs(ips))
	// The leaf frames of the BPF program itself and the tracepoint that
	// ran it are profcap's, not the target's.
	i := 0
	for i < len(fr) && isBPFFrame(fr[i].Function) {
		i++
	}
	out := make([]*profile.Location, 0, len(ips)-i)
	for ; i < len(ips); i++ {
		out = append(out, b.frame(fr[i], ips[i]))
	}
	return out
}

func isBPFFrame(name string) bool {
	for _, p := range []string{"bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_", "bpf_get_stack", "__bpf_get_stack", "bpf_get_task_stack"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// inInterrupt says a kernel stack runs in interrupt context (its frames
// enter through an interrupt vector): where the kernel does not export its
// preempt count, this is how a waker in an interrupt is told apart.
func (r *reader) inInterrupt(id uint64) bool {
	for _, f := range r.s.sym.Kernel(callerAddrs(r.stack(id))) {
		for _, p := range []string{"asm_sysvec_", "asm_common_interrupt", "asm_exc_nmi", "sysvec_", "__sysvec_", "irq_exit_rcu", "__irq_exit_rcu", "common_interrupt"} {
			if strings.HasPrefix(f.Function, p) {
				return true
			}
		}
	}
	return false
}

func (b *builder) userLocs(pid uint32, ips []uint64) []*profile.Location {
	if len(ips) == 0 {
		return nil
	}
	cut := ips[len(ips)-1] == cutMark
	if cut {
		ips = ips[:len(ips)-1]
	}
	fr := b.r.s.sym.User(int(pid), callerAddrs(ips))
	out := make([]*profile.Location, 0, len(ips)+1)
	for i, a := range ips {
		out = append(out, b.frame(fr[i], a))
	}
	if cut {
		out = append(out, b.named(cutFrame))
	}
	return out
}

// slotNS is the cpu counts' time slot: SLOT_NS in bpf/profcap.h.
const slotNS = 250 * time.Millisecond

func setUnit(s *profile.Sample, k, unit string) {
	if s.NumUnit == nil {
		s.NumUnit = map[string][]string{}
	}
	s.NumUnit[k] = []string{unit}
}

func (b *builder) add(locs []*profile.Location, values []int64, labels map[string]string, nums map[string]int64) {
	var key strings.Builder
	for _, l := range locs {
		fmt.Fprintf(&key, "%d,", l.ID)
	}
	for _, k := range sortedKeys(labels) {
		fmt.Fprintf(&key, "|%s=%s", k, labels[k])
	}
	for _, k := range sortedKeys(nums) {
		fmt.Fprintf(&key, "|%s=%d", k, nums[k])
	}
	if s := b.samples[key.String()]; s != nil {
		for i, v := range values {
			s.Value[i] += v
		}
		return
	}
	s := &profile.Sample{Location: locs, Value: slices.Clone(values), Label: map[string][]string{}, NumLabel: map[string][]int64{}}
	for k, v := range labels {
		s.Label[k] = []string{v}
	}
	for k, v := range nums {
		s.NumLabel[k] = []int64{v}
		// pprof's encoding drops a numeric label of 0 without a unit.
		switch k {
		case bundle.SecondLabel:
			setUnit(s, k, bundle.SecondUnit)
		case bundle.SlotLabel:
			setUnit(s, k, bundle.MillisecondUnit)
		}
	}
	b.samples[key.String()] = s
	b.p.Sample = append(b.p.Sample, s)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func (r *reader) labels(tgid, tid uint32) (map[string]string, map[string]int64) {
	return map[string]string{"comm": r.pcomm[tgid], "thread": r.thread(tgid, tid)},
		map[string]int64{"pid": int64(tgid), "tid": int64(tid)}
}

func (r *reader) cpuProfile(st stats) (*profile.Profile, []string) {
	freq := r.s.opt.Frequency
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:     int64(1e9 / freq),
	}
	b := r.newBuilder(p)
	var k profcapCpuKey
	var v profcapCpuVal
	it := r.s.objs.CpuCounts.Iterate()
	for it.Next(&k, &v) {
		locs := append(b.kernelLocs(r.stack(k.Kstack)), b.userLocs(k.Tgid, r.stack(k.Ustack))...)
		if len(locs) == 0 {
			locs = []*profile.Location{b.named("[no stack]")}
		}
		l, n := r.labels(k.Tgid, k.Tid)
		n[bundle.SecondLabel] = int64(k.Slot) * int64(slotNS) / int64(time.Second)
		n[bundle.SlotLabel] = int64(k.Slot) * int64(slotNS/time.Millisecond)
		b.add(locs, []int64{int64(v.Count), int64(v.Ns)}, l, n)
	}
	comments := []string{fmt.Sprintf("ebpf: cpu-clock sampling at %d Hz on every CPU, filtered in the kernel to the process tree, counted by quarter second of the window; %d samples", freq, st[profcapStatSTAT_CPU_SAMPLES])}
	comments = append(comments, r.cfiComments(st)...)
	comments = append(comments, stackWarnings(st)...)
	if st[profcapStatSTAT_CPU_COUNTS_FULL] > 0 {
		comments = append(comments, fmt.Sprintf("%s%d samples lost: the count map was full", bundle.WarningPrefix, st[profcapStatSTAT_CPU_COUNTS_FULL]))
	}
	return p, comments
}

// cfiComments says which processes had their user stacks walked by CFI
// (their executables set up no frame pointers).
func (r *reader) cfiComments(st stats) []string {
	if len(r.s.unw.cfi) == 0 {
		return nil
	}
	c := []string{fmt.Sprintf("ebpf: %d user stacks walked by .eh_frame CFI, of processes whose executable sets up no frame pointers (and their children): %s", st[profcapStatSTAT_CFI_STACKS], strings.Join(r.s.unw.cfiWhy, ", "))}
	if n, all := st[profcapStatSTAT_CFI_CUT], st[profcapStatSTAT_CFI_STACKS]; n > 0 {
		pre := "ebpf: "
		if n*10 > all {
			pre = bundle.WarningPrefix
		}
		c = append(c, fmt.Sprintf("%s%d of them stopped before the outermost frame (code without unwind rows or with a rule not kept, unreadable stack memory, or deeper than %d frames): they end in %s", pre, n, len(profcapStack{}.Ips), cutFrame))
	}
	return c
}

func stackWarnings(st stats) []string {
	var out []string
	if st[profcapStatSTAT_STACKS_FULL] > 0 {
		out = append(out, fmt.Sprintf("%s%d stacks lost: the stack store (32768 stacks) was full", bundle.WarningPrefix, st[profcapStatSTAT_STACKS_FULL]))
	}
	// A program that interrupts another's write to the same bucket on
	// its CPU (a cpu sample during a switch's), or finds the allocator's
	// per-CPU cache empty, cannot store: a handful a window is noise, not
	// a warning.
	if n := st[profcapStatSTAT_STACKS_BUSY]; n > 0 {
		pre := "ebpf: "
		if n > 100 {
			pre = bundle.WarningPrefix
		}
		out = append(out, fmt.Sprintf("%s%d stacks not stored: the stack store was busy on that CPU (a program interrupting another's write) or could not allocate for a moment", pre, n))
	}
	if st[profcapStatSTAT_STACK_ERR] > 0 {
		out = append(out, fmt.Sprintf("%s%d stacks could not be walked (bpf_get_stack failed)", bundle.WarningPrefix, st[profcapStatSTAT_STACK_ERR]))
	}
	return out
}

// block is one aggregated off-CPU entry: the BPF key, and for blocks the
// collector accounted itself (still blocked at the end), a kernel stack
// read from /proc.
type block struct {
	key    profcapOffKey
	ns     uint64   // off-CPU time (weighted)
	wakeNs uint64   // time up to the wakeup, for the wakeup kind (weighted; 0: not in it)
	procK  []string // kernel frames from /proc/TID/stack, leaf first
	reason string   // why the user stack is missing, if it is
	// prevUser: the user stack is the one its thread had at its previous
	// block (still blocked at the end, not walked by the task iterator).
	prevUser bool
	open     bool // still blocked at the window's end (not woken in it)
}

// offBlocks reads off_counts, plus what the maps hold of blocks still
// open at the window's end: switch-outs not yet followed by a switch-in
// (accounted to the end, kernel stack from /proc) and kept blocks whose
// syscall exit has not come.
func (r *reader) offBlocks(startMono, endMono uint64) []block {
	var out []block
	var k profcapOffKey
	var v profcapOffVal
	it := r.s.objs.OffCounts.Iterate()
	for it.Next(&k, &v) {
		b := block{key: k, ns: v.Ns, wakeNs: v.WakeNs}
		switch {
		case k.Flags&fUstackStale != 0:
			b.reason = "[user stack not taken: it blocked outside a system call]"
		case k.Flags&fUstackLost != 0:
			b.reason = "[user stack not taken: it blocked again elsewhere, or exited, before it returned to user space]"
		}
		out = append(out, b)
	}
	var tid uint32
	var pd profcapPending
	pit := r.s.objs.Pendings.Iterate()
	for pit.Next(&tid, &pd) {
		if pd.Armed == 0 {
			continue // done: the entry is kept for the thread's next block
		}
		b := block{key: pd.Key, ns: pd.Ns, wakeNs: pd.WakeNs}
		if w, ok := r.s.blocked.stacks(tid, true); ok && w.Uip == pd.Uip && w.Usp == pd.Usp {
			// Woken, not yet out of its system call when the window
			// ended: the iterator walked the stack it blocked with.
			b.key.Ustack = w.Ustack
			r.walkedPending++
		} else {
			b.reason = "[user stack not taken: the window ended before its system call returned]"
		}
		out = append(out, b)
		if pd.Has2 != 0 {
			// A second block in the same kernel entry: the same user stack.
			b2 := b
			b2.key, b2.ns, b2.wakeNs = pd.Key2, pd.Ns2, pd.WakeNs2
			b2.key.Ustack = b.key.Ustack
			out = append(out, b2)
		}
	}
	var sv profcapStart
	sit := r.s.objs.OpenOut.Iterate()
	for sit.Next(&tid, &sv) {
		if sv.Ts == 0 || sv.Ts >= endMono {
			continue // switched out after the window's end
		}
		from := max(sv.Ts, startMono)
		tgid := sv.Tgid
		b := block{key: profcapOffKey{Tgid: tgid, Tid: tid, State: sv.State}, ns: endMono - from, open: sv.Flags&fWakeSeen == 0}
		b.wakeNs = b.ns
		if sv.State == 'R' && (sv.Rustack != 0 || sv.Rkstack != 0) {
			b.key.Ustack, b.key.Kstack = sv.Rustack, sv.Rkstack
			if b.key.Kstack == 1 {
				b.key.Kstack = 0
			}
		} else if w, ok := r.s.blocked.stacks(tid, false); ok {
			// Walked by the task iterator at the window's end.
			b.key.Ustack, b.key.Kstack = w.Ustack, w.Kstack
			if w.Kstack == 0 {
				b.procK = procStack(tgid, tid)
			}
			r.walkedOpen++
		} else {
			b.procK = procStack(tgid, tid)
			b.reason = "[user stack not taken: still blocked at the window's end]"
			if us := r.lastUser(tgid, tid); us != 0 {
				b.key.Ustack, b.reason, b.prevUser = us, "", true
				r.prevUser++
			} else {
				r.notTaken++
			}
		}
		if sv.WkTs != 0 {
			b.key.Flags |= fWaker | sv.Wflags&fWakerIRQ
			b.key.Wustack, b.key.Wkstack, b.key.Wtgid, b.key.Wtid = sv.Wustack, sv.Wkstack, sv.Wtgid, sv.Wtid
		}
		out = append(out, b)
	}
	return out
}

// lastUser is the fallback for a still-blocked thread the task iterator
// did not walk: the user stack of its previous block that had one (taken
// at its syscall exit). When the thread is in a system call now with
// the registers that block had (/proc/TID/syscall: same call site, same
// stack pointer), it blocked at the same place; otherwise the stack says
// where the thread blocked last, not where it is.
func (r *reader) lastUser(tgid, tid uint32) uint64 {
	var lu profcapLastUser
	if err := r.s.objs.LastUsers.Lookup(tid, &lu); err != nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", tgid, tid))
	if err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 9 {
			sp, err1 := strconv.ParseUint(strings.TrimPrefix(f[7], "0x"), 16, 64)
			pc, err2 := strconv.ParseUint(strings.TrimPrefix(f[8], "0x"), 16, 64)
			if err1 == nil && err2 == nil && sp == lu.Usp && pc == lu.Uip {
				r.prevSame++
			}
		}
	}
	return lu.Ustack
}

// procStack reads a blocked thread's kernel stack from /proc (root only),
// leaf first: "[<0>] do_nanosleep+0x6d/0x160" lines.
func procStack(tgid, tid uint32) []string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/stack", tgid, tid))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		name, _, _ := strings.Cut(fs[1], "+")
		out = append(out, name)
	}
	return out
}

// blockedLocs is the blocked thread's stack, leaf first, rooted under the
// preempted frame for state R.
func (b *builder) blockedLocs(bl block) []*profile.Location {
	var locs []*profile.Location
	if bl.procK != nil {
		for _, n := range bl.procK {
			locs = append(locs, b.frame(Frame{Function: n, Module: "[kernel.kallsyms]", Known: true}, 0))
		}
	} else {
		locs = b.kernelLocs(b.r.stack(bl.key.Kstack))
	}
	if bl.reason != "" {
		locs = append(locs, b.named(bl.reason))
	} else {
		locs = append(locs, b.userLocs(bl.key.Tgid, b.r.stack(bl.key.Ustack))...)
	}
	if bl.key.State == 'R' {
		locs = append(locs, b.named(perfscript.PreemptedFrame))
	}
	if len(locs) == 0 {
		locs = []*profile.Location{b.named("[no stack]")}
	}
	return locs
}

func (r *reader) offProfile(blocks []block, st stats) (*profile.Profile, []string) {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "offcpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "offcpu", Unit: "nanoseconds"},
		Period:     1,
	}
	b := r.newBuilder(p)
	for _, bl := range blocks {
		if bl.key.State == 'R' && r.s.opt.ExcludeRunnable {
			continue
		}
		l, n := r.labels(bl.key.Tgid, bl.key.Tid)
		l["state"] = string(rune(bl.key.State))
		if bl.prevUser {
			l["ustack"] = prevUserLabel
		}
		b.add(b.blockedLocs(bl), []int64{int64(bl.ns)}, l, n)
	}
	return p, r.offComments(st)
}

// prevUserLabel is the value of the label "ustack" on blocks whose user
// stack is their thread's previous block's.
const prevUserLabel = "previous block"

// endComments says how the stacks of threads blocked at the window's end
// were taken.
func (r *reader) endComments() []string {
	var c []string
	if b := r.s.blocked; b != nil {
		c = append(c, fmt.Sprintf("ebpf: threads blocked at the window's end: stacks walked by a task iterator in %s (user stack from the registers each saved entering the kernel, frame pointers read with bpf_copy_from_user_task; kernel stack with bpf_get_task_stack): %d still blocked, %d woken but not yet out of their system call",
			b.took.Round(10*time.Microsecond), r.walkedOpen, r.walkedPending))
	}
	if n := r.prevUser + r.notTaken; n > 0 {
		why := "running when walked"
		if r.s.blockedErr != nil {
			why = fmt.Sprintf("no task iterator: %v", r.s.blockedErr)
		}
		c = append(c, fmt.Sprintf("%s%d threads blocked at the window's end were not walked (%s): %d show the user stack of their previous block (label ustack=%q; %d blocked at the same call site and stack pointer), %d have none",
			bundle.WarningPrefix, n, why, r.prevUser, prevUserLabel, r.prevSame, r.notTaken))
	}
	return c
}

// endNote is the note of the offcpu and wakeup results when the stacks of
// threads blocked at the window's end were not all walked.
func (r *reader) endNote() string {
	if r.s.blockedErr == nil || r.prevUser+r.notTaken == 0 {
		return ""
	}
	return fmt.Sprintf("threads blocked at the window's end show the user stack of their previous block (label ustack=%q), which may not be where they were blocked: the task iterator that walks them did not run (%v)", prevUserLabel, r.s.blockedErr)
}

func (r *reader) offComments(st stats) []string {
	thr := r.s.opt.OffCPUThreshold
	c := []string{fmt.Sprintf("ebpf: off-CPU time from sched_switch to the next switch-in; blocks of at least %s recorded exactly (%d), shorter ones by sample points, a Poisson process of one per %s per thread (%d kept: those with a point, each weighing %s plus its time from the point to its end, so totals are unbiased; %d not)",
		thr, st[profcapStatSTAT_OFF_EXACT], thr, st[profcapStatSTAT_OFF_SAMPLED], thr, st[profcapStatSTAT_OFF_SKIPPED])}
	if r.s.tw != nil {
		c = append(c, "ebpf: user stacks of kept blocks: taken by a BPF task work as each thread returns to user space (nothing runs at every system call)")
	} else {
		c = append(c, fmt.Sprintf("ebpf: user stacks of kept blocks: taken at each thread's system call exit (raw_tp/sys_exit, which puts every system call on the tracing slow path): no BPF task work (%v)", r.s.twErr))
	}
	if n := st[profcapStatSTAT_TW_FAILED]; n > 0 {
		c = append(c, fmt.Sprintf("%s%d kept blocks lost their user stack: the task work that takes it could not be scheduled", bundle.WarningPrefix, n))
	}
	if n := st[profcapStatSTAT_FIXUPS]; n > 0 {
		c = append(c, fmt.Sprintf("ebpf: the leaf fix-up restored %d frames skipped by frame-pointer unwinding (callers of frameless code: of libc's from its .eh_frame, of a Go program's leaves from its pclntab)", n))
	}
	if len(r.s.unw.libs) > 0 {
		c = append(c, "ebpf: leaf fix-up tables (.eh_frame CFI; a Go program's pclntab): "+strings.Join(r.s.unw.libs, ", "))
	} else {
		c = append(c, bundle.WarningPrefix+"stacks are cut above frameless libc code: no leaf fix-up table (libc not found in the target's maps, or its .eh_frame unreadable), so the caller of a system-call wrapper is missing")
	}
	c = append(c, r.cfiComments(st)...)
	c = append(c, r.s.unw.notes...)
	c = append(c, stackWarnings(st)...)
	if n := st[profcapStatSTAT_USTACK_STALE] + st[profcapStatSTAT_USTACK_LOST]; n > 0 {
		c = append(c, fmt.Sprintf("%s%d blocks have no user stack: %d blocked outside a system call (page fault), %d blocked again or exited first", bundle.WarningPrefix, n, st[profcapStatSTAT_USTACK_STALE], st[profcapStatSTAT_USTACK_LOST]))
	}
	if n := st[profcapStatSTAT_OFF_STARTS_FULL] + st[profcapStatSTAT_OFF_COUNTS_FULL]; n > 0 {
		c = append(c, fmt.Sprintf("%s%d blocks lost: a map was full", bundle.WarningPrefix, n))
	}
	c = append(c, r.endComments()...)
	c = append(c, "ebpf: preempted time (state R): a thread preempted in user mode has its stacks taken at the switch-out (the kernel stack is the preemption path, the user stack where it was interrupted); one preempted inside a system call has them taken as a block's")
	return c
}

// wakeProfile joins each block's waker stack to its blocked stack as bcc's
// offwaketime does: from the root, the blocked stack, a "--" frame, then
// the waker's stack upside down (its leaf next to the separator) and the
// waker's name on top. Preempted time (no waker) is left out.
func (r *reader) wakeProfile(blocks []block, st stats) (*profile.Profile, []string) {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "wakeup", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "wakeup", Unit: "nanoseconds"},
		Period:     1,
	}
	b := r.newBuilder(p)
	sep := b.named("--")
	for _, bl := range blocks {
		if bl.key.State == 'R' || bl.wakeNs == 0 {
			continue
		}
		var waker []*profile.Location // root-most first, leaf last (reversed)
		l, n := r.labels(bl.key.Tgid, bl.key.Tid)
		l["state"] = string(rune(bl.key.State))
		if bl.prevUser {
			l["ustack"] = prevUserLabel
		}
		if bl.key.Flags&fWaker != 0 {
			wname := r.thread(bl.key.Wtgid, bl.key.Wtid)
			if bl.key.Wtid == 0 {
				wname = "swapper"
			}
			if bl.key.Flags&fWakerIRQ != 0 || r.inInterrupt(bl.key.Wkstack) {
				// The interrupted task did not wake it: the interrupt did.
				bl.key.Flags |= fWakerIRQ
				wname = "[interrupt]"
				bl.key.Wtgid, bl.key.Wtid = 0, 0
			}
			l["waker"] = wname
			if bl.key.Wtid != 0 {
				n["waker_pid"], n["waker_tid"] = int64(bl.key.Wtgid), int64(bl.key.Wtid)
			}
			waker = append(waker, b.named(wname))
			if bl.key.Flags&fWakerIRQ != 0 {
				waker = append(waker, b.named("[in interrupt]"))
			} else {
				u := b.userLocs(bl.key.Wtgid, r.stack(bl.key.Wustack))
				slices.Reverse(u)
				waker = append(waker, u...)
			}
			k := b.kernelLocs(r.stack(bl.key.Wkstack))
			slices.Reverse(k)
			waker = append(waker, k...)
		} else if bl.open {
			waker = append(waker, b.named("[not woken: still blocked at the window's end]"))
		} else {
			waker = append(waker, b.named("[waker unknown]"))
		}
		locs := append(waker, sep)
		locs = append(locs, b.blockedLocs(bl)...)
		b.add(locs, []int64{int64(bl.wakeNs)}, l, n)
	}
	c := r.offComments(st)
	c = append(c[:1:1], append([]string{fmt.Sprintf("ebpf: wakeups: blocked time up to the wakeup by the waker's stack (taken at sched_waking, in its own context, for blocks with a sample point before their wakeup: %d), above \"--\" above the blocked stack, weighted as off-CPU's sampled blocks (so the time a woken thread waits for a CPU is not its waker's); blocks not woken by the window's end show [not woken: still blocked at the window's end], those woken but not running by then [waker unknown]; wakers in interrupt context have no user stack (%d)", st[profcapStatSTAT_WAKERS], st[profcapStatSTAT_WAKER_IRQ])}, c[1:]...)...)
	return p, c
}

func symNotes(s symbolizer) []string {
	var out []string
	for _, n := range s.Notes() {
		out = append(out, "ebpf: symbols: "+n)
	}
	return out
}
