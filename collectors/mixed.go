package collectors

// Joining an interpreter's stacks with native ones: the Ruby worker's step
// function (rbspy sees it, perf does not) calls through Fiddle into a Rust
// library (perf sees it, rbspy does not). Both tools sample the same
// process over the same window; each native sample of a thread is spliced
// under the Ruby stack rbspy saw on that thread nearest in time, so one
// stack reads handle_step → process_step → … → worker_core::compute::checksum_block.
//
// How it joins (and where it cannot):
//
//   - Time: rbspy stamps each sample with the wall clock; perf records with
//     -k CLOCK_MONOTONIC, converted to the wall clock with the offset of the
//     two clocks read side by side when perf script runs.
//   - Threads: rbspy names a Ruby thread by its pthread_t, perf by its
//     kernel tid. Each rbspy thread is mapped to the tid whose native
//     samples fall nearest its own most often (the GVL lets one Ruby thread
//     run at a time, so the pairs are clear). Native samples of threads no
//     Ruby thread maps to keep their native stack alone.
//   - The splice: the native frames leafward of the innermost interpreter
//     frame (libruby) are what Ruby cannot see: the Fiddle call, libffi and
//     the Rust code. Samples entirely inside the interpreter add nothing to
//     the Ruby stack. Frame-pointer stacks through libffi and libruby (built
//     without frame pointers) end early; what perf unwound is kept, the
//     garbage frame an unwinder invents at a broken chain is dropped.
//   - Context switches: a Ruby stack seen before the thread blocked or woke
//     is not its stack after, so a join never crosses one of the thread's
//     switches (perf's off-CPU recording gives them). A thread's run
//     between two switches is often shorter than rbspy's interval (the
//     worker's 4 ms step, 10 ms at 99 Hz), so most runs have no Ruby
//     sample of their own.
//   - The native call: while a thread runs native code the interpreter
//     called (the Fiddle call into worker_core_process_step), its Ruby
//     stack cannot change. A native sample with no Ruby sample of its own
//     run takes the Ruby stack of the same native function's nearest
//     sample that had one (joined by the call); one of the interpreter
//     alone has nothing to go by and keeps its native stack alone. A
//     native function is only reached from a Ruby frame of a C function,
//     so a sample in one is never joined to a Ruby stack ending in Ruby
//     code.
//   - Tolerance: a native sample with no Ruby sample within joinTolerance
//     on its thread, and none of its native call, keeps its native stack
//     alone; the profile's comments say how many did (warning: when more
//     than a tenth).

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/pprof/profile"
	"github.com/ianlancetaylor/demangle"
	"golang.org/x/sys/unix"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/formats/perfscript"
)

// IdleFrame is the root frame under which wall and off-CPU profiles of
// interpreted workers put time a thread spent waiting for work in the
// runtime's own idle loop (an event loop's epoll_wait, a sleep between
// steps, a server thread's poll), so that the blocking the worker's own
// code does (a Rust wait_for_io) stands apart.
const IdleFrame = "[idle: waiting for work]"

// mframe is one frame of a joined stack.
type mframe struct {
	name, file, module string
	line               int64
}

// nativeSample is one perf sample (cpu: weight is the period) or off-CPU
// interval (weight is its length) of one thread, leaf first, on the wall
// clock (Unix ns).
type nativeSample struct {
	tid    int
	comm   string
	time   int64 // sample time, or the interval's start
	end    int64 // interval's end (off-CPU), = time for cpu samples
	state  string
	frames []mframe
}

// interpSample is one interpreter sample (rbspy), root first.
type interpSample struct {
	thread uint64
	time   int64
	frames []mframe
}

// joinTolerance is the farthest a Ruby sample may be from a native one to
// be joined: about two rbspy intervals at 99 Hz, so a native sample
// between two Ruby samples always finds one, also when rbspy ran late.
const joinTolerance = 20 * time.Millisecond

// rbspy's raw file: gzip, "rbspy02\n", a JSON header line, one JSON stack
// per line (rbspy 0.55 src/storage/mod.rs and v2.rs).
type rbspyTrace struct {
	Trace []struct {
		Name         string  `json:"name"`
		RelativePath string  `json:"relative_path"`
		AbsolutePath *string `json:"absolute_path"`
		Lineno       *int64  `json:"lineno"`
	} `json:"trace"`
	ThreadID *uint64 `json:"thread_id"`
	Time     *struct {
		Secs  int64 `json:"secs_since_epoch"`
		Nanos int64 `json:"nanos_since_epoch"`
	} `json:"time"`
}

// readRbspyRaw reads rbspy's raw file (record --raw-file).
func readRbspyRaw(file string) ([]interpSample, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("rbspy raw file: %w", err)
	}
	br := bufio.NewReaderSize(zr, 64<<10)
	magic, err := br.ReadString('\n')
	if err != nil || magic != "rbspy02\n" {
		return nil, fmt.Errorf("rbspy raw file: want format rbspy02, got %q", strings.TrimSpace(magic))
	}
	if _, err := br.ReadString('\n'); err != nil { // header
		return nil, fmt.Errorf("rbspy raw file: no header: %w", err)
	}
	var out []interpSample
	dec := json.NewDecoder(br)
	for {
		var t rbspyTrace
		if err := dec.Decode(&t); err == io.EOF {
			break
		} else if err != nil {
			// A file cut short by a killed rbspy: keep what was read.
			if errors.Is(err, io.ErrUnexpectedEOF) || len(out) > 0 {
				break
			}
			return nil, fmt.Errorf("rbspy raw file: %w", err)
		}
		if t.Time == nil {
			continue
		}
		s := interpSample{time: t.Time.Secs*1e9 + t.Time.Nanos}
		if t.ThreadID != nil {
			s.thread = *t.ThreadID
		}
		// rbspy lists the leaf first.
		for i := len(t.Trace) - 1; i >= 0; i-- {
			fr := t.Trace[i]
			m := mframe{name: fr.Name, file: fr.RelativePath}
			if fr.AbsolutePath != nil {
				m.file = *fr.AbsolutePath
			}
			if m.file == "(unknown)" {
				m.file = ""
			}
			if fr.Lineno != nil {
				m.line = *fr.Lineno
			}
			s.frames = append(s.frames, m)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].time < out[j].time })
	return out, nil
}

// clockOffset is CLOCK_REALTIME − CLOCK_MONOTONIC now, in ns: added to a
// perf -k CLOCK_MONOTONIC timestamp it gives the wall clock.
func clockOffset() int64 {
	var rt, mt unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &mt) != nil || unix.ClockGettime(unix.CLOCK_REALTIME, &rt) != nil {
		return time.Now().UnixNano() - monotonicNow()
	}
	return rt.Nano() - mt.Nano()
}

// perfFrames parses an event's frame lines, leaf first.
func perfFrames(ev *perfscript.Event) ([]mframe, error) {
	var out []mframe
	for _, l := range ev.Lines {
		f, ok, err := perfscript.ParseFrame(l.N, l.Text)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		name := f.Sym
		if name == "[unknown]" && f.Module != "" && f.Module != "[unknown]" {
			name = path.Base(f.Module) + "+0x" + strconv.FormatUint(f.PC, 16)
		}
		out = append(out, mframe{name: name, module: f.Module})
	}
	return out, nil
}

// readPerfEvents reads perf script text of a cpu recording (samples) or an
// off-CPU one (sched_switch with --show-switch-events: intervals from each
// switch-out to the thread's next switch-in, as perfscript.ParseOffCPU
// counts them) of process pid, with times shifted by offset to the wall
// clock. endMono closes intervals still open at the end.
func readPerfEvents(r io.Reader, kind bundle.Kind, pid int, offset, endMono int64) ([]nativeSample, error) {
	rd := perfscript.NewReader(r)
	var out []nativeSample
	open := map[int]*nativeSample{}
	closeIv := func(tid int, at int64) {
		if iv := open[tid]; iv != nil {
			if at > iv.time {
				iv.end = at
				out = append(out, *iv)
			}
			delete(open, tid)
		}
	}
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if ev.Header == nil {
			continue
		}
		h, err := perfscript.ParseHeader(ev.Line, ev.Header)
		if err != nil {
			return nil, err
		}
		if h.Time < 0 {
			continue
		}
		if kind == bundle.CPU {
			if strings.HasPrefix(h.Event, "PERF_RECORD_") || pid != 0 && h.PID >= 0 && h.PID != pid {
				continue
			}
			frames, err := perfFrames(ev)
			if err != nil {
				return nil, err
			}
			out = append(out, nativeSample{tid: h.TID, comm: h.Comm, time: h.Time, end: h.Time, frames: frames})
			continue
		}
		if h.Event == "PERF_RECORD_SWITCH" || h.Event == "PERF_RECORD_SWITCH_CPU_WIDE" {
			if strings.HasPrefix(string(h.Trace), "IN") {
				closeIv(h.TID, h.Time)
			}
			continue
		}
		if perfscript.BaseEvent(h.Event) != "sched:sched_switch" {
			continue
		}
		sw, err := perfscript.ParseSchedSwitch(ev.Line, h.Trace)
		if err != nil {
			return nil, err
		}
		closeIv(sw.NextPID, h.Time)
		if sw.PrevPID == 0 || pid != 0 && h.PID >= 0 && h.PID != pid || h.TID >= 0 && h.TID != sw.PrevPID {
			continue
		}
		frames, err := perfFrames(ev)
		if err != nil {
			return nil, err
		}
		open[sw.PrevPID] = &nativeSample{tid: sw.PrevPID, comm: sw.PrevComm, time: h.Time, state: perfscript.State(sw.PrevState), frames: frames}
	}
	for tid := range open {
		closeIv(tid, max(endMono, open[tid].time+1))
	}
	for i := range out {
		out[i].time += offset
		out[i].end += offset
	}
	sort.Slice(out, func(i, j int) bool { return out[i].time < out[j].time })
	return out, nil
}

// isInterpModule reports whether a native module is the interpreter itself
// (its executable or library): the frames a runtime sampler already shows
// by their own names.
func isInterpModule(mod string) bool {
	b := path.Base(mod)
	for _, p := range []string{"libruby", "ruby", "libpython", "python", "bun", "node", "libnode"} {
		if strings.HasPrefix(b, p) {
			return true
		}
	}
	return strings.HasPrefix(mod, "/tmp/perf-") // JIT code named from a perf map
}

// isSystemModule reports whether a module is the C library, the loader, the
// kernel or an FFI layer: frames that neither the interpreter nor the
// embedded library own.
func isSystemModule(mod string) bool {
	b := path.Base(mod)
	if mod == "" || strings.HasPrefix(mod, "[") { // [kernel.kallsyms], [vdso], [unknown]
		return true
	}
	for _, p := range []string{"libc.so", "libc-", "libpthread", "libm.so", "ld-linux", "libdl", "librt", "libgcc_s", "libstdc++", "libffi", "_ctypes", "fiddle.so", "libcrypt", "libz.so", "libgmp"} {
		if strings.HasPrefix(b, p) {
			return true
		}
	}
	return false
}

// foreignPart returns the native frames of a sample that the interpreter
// cannot see, leaf first: those leafward of the innermost interpreter frame,
// or the whole stack where none was unwound (a chain broken in libffi),
// less a garbage root frame of no module.
func foreignPart(frames []mframe) []mframe {
	for i, f := range frames {
		if isInterpModule(f.module) {
			return frames[:i]
		}
	}
	for len(frames) > 0 && (frames[len(frames)-1].module == "[unknown]" || frames[len(frames)-1].module == "") {
		frames = frames[:len(frames)-1]
	}
	return frames
}

// joiner splices native samples under the interpreter samples nearest in
// time on the same thread.
type joiner struct {
	interp   []interpSample // by time
	byThread map[uint64][]int
	tidOf    map[uint64]int // rbspy thread → perf tid
	threadOf map[int]uint64 // perf tid → rbspy thread
	// switches are each thread's off-CPU intervals, by time: a join never
	// crosses one (the interpreter's stack before a thread blocked or woke
	// is not its stack after), when the off-CPU recording ran.
	switches map[int][]nativeSample
	// calls are, per thread and native call, the interpreter samples
	// native samples in that call were joined to directly, by time.
	calls map[callKey][]callJoin
}

// callKey is one native call of one thread.
type callKey struct {
	tid  int
	call string
}

// callJoin is one direct join of a native sample in a native call.
type callJoin struct {
	time int64
	k    int // into joiner.interp
}

// nativeCall names the native function the interpreter called that a
// sample (leaf first) runs in: the outermost frame of its foreign part
// outside the system and the FFI layers (worker_core_process_step under
// Fiddle and libffi), or "" for a sample in the interpreter or the system
// alone (Kernel#sleep's ppoll).
func nativeCall(frames []mframe) string {
	f := foreignPart(frames)
	for i := len(f) - 1; i >= 0; i-- {
		if !isSystemModule(f[i].module) {
			return f[i].module + "\x00" + f[i].name
		}
	}
	return ""
}

// callsNative reports whether an interpreter sample's innermost frame is
// a C function (rbspy marks them " [c function]"), the only way from Ruby
// into native code.
func callsNative(s *interpSample) bool {
	return len(s.frames) > 0 && strings.HasSuffix(s.frames[len(s.frames)-1].name, "[c function]")
}

func newJoiner(interp []interpSample, cpu, off []nativeSample) *joiner {
	j := &joiner{interp: interp, byThread: map[uint64][]int{}, tidOf: map[uint64]int{}, threadOf: map[int]uint64{}, switches: map[int][]nativeSample{}, calls: map[callKey][]callJoin{}}
	for i, s := range interp {
		j.byThread[s.thread] = append(j.byThread[s.thread], i)
	}
	for _, o := range off { // by time already
		j.switches[o.tid] = append(j.switches[o.tid], o)
	}
	// Map threads: for each native sample, the interpreter sample nearest
	// in time (any thread) votes for the pair.
	all := make([]int, len(interp))
	for i := range all {
		all[i] = i
	}
	votes := map[[2]uint64]int{}
	for _, ns := range [][]nativeSample{cpu, off} {
		for _, n := range ns {
			if k, _ := j.nearest(all, n, -1, nil); k >= 0 {
				votes[[2]uint64{interp[k].thread, uint64(n.tid)}]++
			}
		}
	}
	type vote struct {
		thread uint64
		tid    int
		n      int
	}
	var vs []vote
	for k, n := range votes {
		vs = append(vs, vote{k[0], int(k[1]), n})
	}
	sort.Slice(vs, func(a, b int) bool {
		if vs[a].n != vs[b].n {
			return vs[a].n > vs[b].n
		}
		return vs[a].thread < vs[b].thread || vs[a].thread == vs[b].thread && vs[a].tid < vs[b].tid
	})
	for _, v := range vs {
		if _, ok := j.tidOf[v.thread]; ok {
			continue
		}
		if _, ok := j.threadOf[v.tid]; ok {
			continue
		}
		j.tidOf[v.thread], j.threadOf[v.tid] = v.tid, v.thread
	}
	// The direct joins of samples in a native call, of both kinds, for
	// the samples of the same call that have none.
	for _, ns := range [][]nativeSample{cpu, off} {
		for _, n := range ns {
			c := nativeCall(n.frames)
			if c == "" {
				continue
			}
			if k := j.direct(n, c); k >= 0 {
				key := callKey{n.tid, c}
				j.calls[key] = append(j.calls[key], callJoin{n.time, k})
			}
		}
	}
	for _, cs := range j.calls {
		sort.Slice(cs, func(a, b int) bool { return cs[a].time < cs[b].time })
	}
	return j
}

// crossesSwitch reports whether thread tid blocked or woke strictly
// between times x and y, other than in interval self.
func (j *joiner) crossesSwitch(tid int, x, y int64, self *nativeSample) bool {
	if x > y {
		x, y = y, x
	}
	ivs := j.switches[tid]
	// Intervals of one thread do not overlap: starts and ends both rise.
	i := sort.Search(len(ivs), func(i int) bool { return ivs[i].end > x })
	for ; i < len(ivs) && ivs[i].time < y; i++ {
		iv := &ivs[i]
		if self != nil && iv.time == self.time && iv.end == self.end {
			continue
		}
		if iv.state == "R" {
			// Preempted: it resumed where it was, in the same stack
			// (the sampling tool's own thread preempts it on a busy
			// machine, just as it takes its sample).
			continue
		}
		if iv.time > x && iv.time < y || iv.end > x && iv.end < y {
			return true
		}
	}
	return false
}

// nearest returns the index into j.interp of the sample among idx (by
// time) nearest to native sample n (inside an interval is distance 0),
// within joinTolerance, preferring one no context switch of tid separates
// from n (cross says whether one does); tid < 0 skips that test. accept,
// if set, says which samples may be joined. -1 if none.
func (j *joiner) nearest(idx []int, n nativeSample, tid int, accept func(*interpSample) bool) (k int, cross bool) {
	at := func(i int) int64 { return j.interp[idx[i]].time }
	i := sort.Search(len(idx), func(i int) bool { return at(i) >= n.time })
	// Rank: no context switch between, then inside the span, then after
	// it, then before it, then nearer. After before: rbspy stamps a sample
	// when it has read the stack, late by however long its own thread
	// waited for a CPU (milliseconds on a loaded machine), so a sample
	// stamped before a native one may have been read before the thread
	// woke or changed step, one stamped after it rarely so.
	type rank struct {
		cross bool
		side  int // 0 inside, 1 after, 2 before
		d     int64
	}
	less := func(a, b rank) bool {
		if a.cross != b.cross {
			return !a.cross
		}
		if a.side != b.side {
			return a.side < b.side
		}
		return a.d < b.d
	}
	best := -1
	var bestR rank
	consider := func(c int) bool {
		if c < 0 || c >= len(idx) {
			return false
		}
		tc := at(c)
		var r rank
		var from int64
		switch {
		case tc < n.time:
			r.d, from, r.side = n.time-tc, n.time, 2
		case tc > n.end:
			r.d, from, r.side = tc-n.end, n.end, 1
		default:
			from = tc
		}
		if r.d > int64(joinTolerance) {
			return false
		}
		if accept != nil && !accept(&j.interp[idx[c]]) {
			return true // farther ones may be accepted
		}
		r.cross = tid >= 0 && r.d > 0 && j.crossesSwitch(tid, tc, from, &n)
		if best < 0 || less(r, bestR) {
			best, bestR = c, r
		}
		return true
	}
	// Samples inside an interval, then outward on both sides.
	for c := i; c < len(idx) && at(c) <= n.end; c++ {
		consider(c)
	}
	for c := i - 1; consider(c); c-- {
	}
	for c := i; c < len(idx); c++ {
		if at(c) <= n.end {
			continue
		}
		if !consider(c) {
			break
		}
	}
	if best < 0 {
		return -1, false
	}
	return idx[best], bestR.cross
}

// joinHow says how a native sample found its interpreter stack.
type joinHow int

const (
	joinedAlone  joinHow = iota // none: the native stack alone
	joinedNear                  // the interpreter sample nearest in time
	joinedByCall                // that of the same native call's nearest sample
)

// direct returns the index into j.interp of the sample of n's thread that
// n joins to by time, or -1: for a cpu sample the nearest that no context
// switch separates from it; for an off-CPU interval one inside it, or, if
// it blocked in the interpreter itself (call ""), the nearest no other
// switch separates from it. A sample in a native call (call != "") joins
// only a Ruby stack that calls a C function.
func (j *joiner) direct(n nativeSample, call string) int {
	th, ok := j.threadOf[n.tid]
	if !ok {
		return -1
	}
	interval := n.end > n.time || n.state != ""
	accept := func(s *interpSample) bool {
		if call == "" {
			return true
		}
		// Outside a blocked interval the thread may not have been in
		// the call yet: its stack there is not the call's.
		return callsNative(s) && (!interval || s.time >= n.time && s.time <= n.end)
	}
	k, cross := j.nearest(j.byThread[th], n, n.tid, accept)
	if k < 0 || cross {
		return -1
	}
	return k
}

// interpFor returns the interpreter sample to join native sample n to, or
// nil, and how it was found: directly by time, else by its native call
// (the direct join of the same call on its thread nearest in time).
func (j *joiner) interpFor(n nativeSample) (*interpSample, joinHow) {
	call := nativeCall(n.frames)
	if k := j.direct(n, call); k >= 0 {
		return &j.interp[k], joinedNear
	}
	if call == "" {
		return nil, joinedAlone
	}
	cs := j.calls[callKey{n.tid, call}]
	if len(cs) == 0 {
		return nil, joinedAlone
	}
	i := sort.Search(len(cs), func(i int) bool { return cs[i].time >= n.time })
	switch {
	case i == len(cs):
		i--
	case i > 0 && n.time-cs[i-1].time < cs[i].time-n.time:
		i--
	}
	return &j.interp[cs[i].k], joinedByCall
}

// nativeFor returns the native frames of the thread interpreter sample s
// ran on at its time: the off-CPU interval it fell in (the thread was
// blocked there), else the cpu sample nearest in time within joinTolerance
// that no context switch separates from it; nil if none. Frames in a
// native call go only under a Ruby stack that calls a C function.
func (j *joiner) nativeFor(s interpSample, cpu []nativeSample) *nativeSample {
	tid, ok := j.tidOf[s.thread]
	if !ok {
		return nil
	}
	// Native code in a call is only under a Ruby C function's frame.
	fits := func(n *nativeSample) bool { return callsNative(&s) || nativeCall(n.frames) == "" }
	ivs := j.switches[tid]
	if i := sort.Search(len(ivs), func(i int) bool { return ivs[i].end >= s.time }); i < len(ivs) && ivs[i].time <= s.time {
		if !fits(&ivs[i]) {
			return nil
		}
		return &ivs[i]
	}
	i := sort.Search(len(cpu), func(i int) bool { return cpu[i].time >= s.time })
	var best *nativeSample
	bestD := int64(joinTolerance) + 1
	for k := i - 1; k >= 0 && s.time-cpu[k].time <= int64(joinTolerance); k-- {
		if c := &cpu[k]; c.tid == tid {
			if fits(c) && !j.crossesSwitch(tid, c.time, s.time, nil) {
				best, bestD = c, s.time-c.time
			}
			break
		}
	}
	for k := i; k < len(cpu) && cpu[k].time-s.time < bestD; k++ {
		if c := &cpu[k]; c.tid == tid {
			if fits(c) && !j.crossesSwitch(tid, s.time, c.time, nil) {
				best = c
			}
			break
		}
	}
	return best
}

// stackBuilder builds a profile from stacks of mframes.
type stackBuilder struct {
	p       *profile.Profile
	funcs   map[[2]string]*profile.Function
	locs    map[string]*profile.Location
	maps    map[string]*profile.Mapping
	samples map[string]*profile.Sample
}

func newStackBuilder(p *profile.Profile) *stackBuilder {
	return &stackBuilder{p: p, funcs: map[[2]string]*profile.Function{}, locs: map[string]*profile.Location{}, maps: map[string]*profile.Mapping{}, samples: map[string]*profile.Sample{}}
}

func (b *stackBuilder) location(f mframe) *profile.Location {
	key := f.name + "\x00" + f.file + "\x00" + f.module + "\x00" + strconv.FormatInt(f.line, 10)
	if l := b.locs[key]; l != nil {
		return l
	}
	fk := [2]string{f.name, f.file}
	fn := b.funcs[fk]
	if fn == nil {
		fn = &profile.Function{ID: uint64(len(b.p.Function) + 1), Name: f.name, SystemName: f.name, Filename: f.file}
		b.funcs[fk] = fn
		b.p.Function = append(b.p.Function, fn)
	}
	l := &profile.Location{ID: uint64(len(b.p.Location) + 1), Line: []profile.Line{{Function: fn, Line: f.line}}}
	if f.module != "" {
		m := b.maps[f.module]
		if m == nil {
			m = &profile.Mapping{ID: uint64(len(b.p.Mapping) + 1), File: f.module, HasFunctions: true}
			b.maps[f.module] = m
			b.p.Mapping = append(b.p.Mapping, m)
		}
		l.Mapping = m
	}
	b.locs[key] = l
	b.p.Location = append(b.p.Location, l)
	return l
}

// add adds values to the stack (leaf first) with a thread label.
func (b *stackBuilder) add(leafFirst []mframe, values []int64, thread string) {
	locs := make([]*profile.Location, len(leafFirst))
	var key strings.Builder
	for i, f := range leafFirst {
		locs[i] = b.location(f)
		key.WriteString(strconv.FormatUint(locs[i].ID, 36))
		key.WriteByte(',')
	}
	key.WriteString(thread)
	if s := b.samples[key.String()]; s != nil {
		for i, v := range values {
			s.Value[i] += v
		}
		return
	}
	s := &profile.Sample{Location: locs, Value: append([]int64(nil), values...)}
	if thread != "" {
		s.Label = map[string][]string{"thread": {thread}}
	}
	b.samples[key.String()] = s
	b.p.Sample = append(b.p.Sample, s)
}

// splice returns interp's frames (root first) with the foreign native
// frames under them, as a leaf-first stack.
func splice(interp []mframe, foreign []mframe) []mframe {
	out := make([]mframe, 0, len(foreign)+len(interp))
	out = append(out, foreign...)
	for i := len(interp) - 1; i >= 0; i-- {
		out = append(out, interp[i])
	}
	return out
}

func threadName(n nativeSample) string {
	if n.comm == "" {
		return ""
	}
	return fmt.Sprintf("%s (tid %d)", n.comm, n.tid)
}

// joinStats counts how a join went, for the profile's comments: joined
// samples (byCall of them by their native call) and those alone.
type joinStats struct{ joined, byCall, alone int }

func (s joinStats) comment(what, tool string) string {
	total := s.joined + s.alone
	if total == 0 {
		return ""
	}
	msg := fmt.Sprintf("%d of %d %s joined to the %s stack nearest in time on their thread (within %s)", s.joined, total, what, tool, joinTolerance)
	if s.byCall > 0 {
		msg += fmt.Sprintf(", %d of them through their native call (the Ruby stack that called the same native function nearest in time: no %s sample fell in their run of the thread)", s.byCall, tool)
	}
	if s.alone > 0 {
		msg += fmt.Sprintf("; %d keep their native stack alone", s.alone)
	}
	if s.alone*10 > total {
		msg = bundle.WarningPrefix + msg
	}
	return msg
}

// joinNative builds a cpu or off-CPU profile from native samples, each
// under the interpreter stack nearest in time on its thread.
func joinNative(j *joiner, kind bundle.Kind, native []nativeSample, period int64) (*profile.Profile, joinStats) {
	p := &profile.Profile{}
	switch kind {
	case bundle.CPU:
		p.SampleType = []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}}
		p.PeriodType, p.Period = &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}, period
	default:
		p.SampleType = []*profile.ValueType{{Type: "offcpu", Unit: "nanoseconds"}}
		p.PeriodType, p.Period = &profile.ValueType{Type: "offcpu", Unit: "nanoseconds"}, 1
	}
	b := newStackBuilder(p)
	var st joinStats
	for _, n := range native {
		stack := n.frames
		if is, how := j.interpFor(n); is != nil {
			stack = splice(is.frames, foreignPart(n.frames))
			st.joined++
			if how == joinedByCall {
				st.byCall++
			}
		} else {
			st.alone++
		}
		if kind == bundle.OffCPU && n.state == "R" {
			stack = append(append([]mframe(nil), stack...), mframe{name: perfscript.PreemptedFrame})
		}
		if kind == bundle.CPU {
			b.add(stack, []int64{1, period}, threadName(n))
		} else {
			b.add(stack, []int64{n.end - n.time}, threadName(n))
		}
	}
	return p, st
}

// joinWall builds a wall profile from interpreter samples (each 1/rate s),
// each with the native frames of its thread at that moment: the off-CPU
// interval it fell in, else the nearest cpu sample.
func joinWall(j *joiner, interp []interpSample, cpu []nativeSample, rate int) (*profile.Profile, joinStats) {
	period := int64(time.Second) / int64(rate)
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "time", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "time", Unit: "nanoseconds"}, Period: period,
	}
	b := newStackBuilder(p)
	var st joinStats
	for _, s := range interp {
		n := j.nativeFor(s, cpu)
		stack := splice(s.frames, nil)
		if n != nil {
			stack = splice(s.frames, foreignPart(n.frames))
			st.joined++
		} else {
			st.alone++
		}
		b.add(stack, []int64{1, period}, "")
	}
	return p, st
}

// waitFuncs are the C library's and runtimes' blocking calls a thread
// waiting for work sits in (names without a leading underscore or a
// symbol version).
var waitFuncs = map[string]bool{
	"poll": true, "ppoll": true, "select": true, "pselect": true, "pselect6": true,
	"epoll_wait": true, "epoll_pwait": true, "epoll_pwait2": true, "kevent": true,
	"accept": true, "accept4": true, "nanosleep": true, "clock_nanosleep": true, "usleep": true, "sleep": true,
	"pthread_cond_wait": true, "pthread_cond_timedwait": true, "pthread_cond_clockwait": true,
	"futex_abstimed_wait_common": true, "futex_wait": true, "lll_lock_wait": true,
	"sem_wait": true, "sem_timedwait": true, "sem_clockwait": true,
	"PyThread_acquire_lock_timed": true, "pysleep": true,
	"native_sleep": true, "rb_thread_sleep_forever": true, "rb_thread_wait_for": true,
}

// lockWaits mark a thread waiting for the interpreter's lock (GIL, GVL):
// contention, not idleness.
var lockWaitRE = regexp.MustCompile(`(?i)take_gil|gvl|gil_acquire|thread_sched_to_running`)

func waitName(name string) string {
	if i := strings.IndexByte(name, '@'); i > 0 {
		name = name[:i]
	}
	if i := strings.IndexByte(name, ' '); i > 0 {
		name = name[:i]
	}
	return strings.TrimLeft(name, "_")
}

// isIdleStack reports whether a stack (leaf first) is the runtime's own
// idle: its innermost named user-space frame is a blocking wait, no frame
// is in a library the worker embeds (its own native code, such as the Rust
// core: a wait there is the worker's), and it is not waiting for the
// interpreter lock.
func isIdleStack(locs []*profile.Location) bool {
	checked, idle, waitSyscall := false, false, false
	for _, l := range locs {
		var mod string
		if l.Mapping != nil {
			mod = l.Mapping.File
		}
		if mod != "" && !isInterpModule(mod) && !isSystemModule(mod) {
			return false // the worker's own native code
		}
		for _, ln := range l.Line {
			if ln.Function == nil {
				continue
			}
			name := ln.Function.Name
			if lockWaitRE.MatchString(name) {
				return false
			}
			if checked {
				continue
			}
			if sc, ok := strings.CutPrefix(name, "__x64_sys_"); ok {
				// The kernel's side of an off-CPU stack names the wait.
				waitSyscall = waitSyscall || waitFuncs[sc] || sc == "futex" || sc == "epoll_pwait2"
				continue
			}
			if strings.HasPrefix(mod, "[kernel") {
				continue
			}
			if strings.HasPrefix(name, "[") || strings.HasPrefix(name, "0x") || strings.Contains(name, "+0x") {
				if waitSyscall {
					checked, idle = true, true // unnamed code in a waiting system call
				}
				continue // unnamed: look further up
			}
			// The innermost named user-space frame: a wait, or the
			// generic syscall(2) wrapper over a waiting system call
			// (Bun's event loop and thread pool).
			checked = true
			idle = waitFuncs[waitName(name)] || waitName(name) == "syscall" && waitSyscall
		}
	}
	return idle || !checked && waitSyscall
}

// markIdle moves the samples of p whose stack is the runtime's idle under
// IdleFrame and returns the share of p's last value they hold.
func markIdle(p *profile.Profile) float64 {
	var idleFn *profile.Function
	var idleLoc *profile.Location
	var idle, total int64
	vi := len(p.SampleType) - 1
	for _, s := range p.Sample {
		total += s.Value[vi]
		if len(s.Location) == 0 || !isIdleStack(s.Location) {
			continue
		}
		if idleLoc == nil {
			var maxF, maxL uint64
			for _, f := range p.Function {
				maxF = max(maxF, f.ID)
			}
			for _, l := range p.Location {
				maxL = max(maxL, l.ID)
			}
			idleFn = &profile.Function{ID: maxF + 1, Name: IdleFrame, SystemName: IdleFrame}
			idleLoc = &profile.Location{ID: maxL + 1, Line: []profile.Line{{Function: idleFn}}}
			p.Function = append(p.Function, idleFn)
			p.Location = append(p.Location, idleLoc)
		}
		s.Location = append(s.Location, idleLoc)
		idle += s.Value[vi]
	}
	if total == 0 {
		return 0
	}
	return float64(idle) / float64(total)
}

// rustHash is the hash suffix of a legacy-mangled Rust symbol.
var rustHash = regexp.MustCompile(`::h[0-9a-f]{16}$`)

// cleanNativeName demangles a Rust v0 or C++ symbol and drops a legacy Rust
// hash suffix: worker_core::compute::checksum_block::h0191bb5a70a51751 →
// worker_core::compute::checksum_block.
func cleanNativeName(name string) string {
	if strings.HasPrefix(name, "_R") || strings.HasPrefix(name, "_Z") {
		if d, err := demangle.ToString(name, demangle.NoParams, demangle.NoTemplateParams); err == nil {
			name = d
		}
	}
	return rustHash.ReplaceAllString(name, "")
}

// pyspyFrame is a frame of py-spy's raw output: "name (file:line)",
// "name (file)" or, for an unsymbolised native frame, "0xADDR (module)".
var pyspyFrame = regexp.MustCompile(`^(.*) \(([^()]*?)(?::(\d+))?\)$`)

// cleanSpyProfile gives the frames of a folded py-spy or rbspy profile
// their function, file and line: py-spy writes "handle_step (worker.py:64)"
// and, with --native, "worker_core::compute::checksum_block::h… (lib.rs:58)"
// or "0x7fd2… (libffi.so.8)"; rbspy writes "handle_step - /path/worker.rb:71".
// Native frames get their library as the mapping, so a flame graph tells
// the interpreter's frames from the embedded library's.
func cleanSpyProfile(p *profile.Profile, tool string) {
	b := newStackBuilder(&profile.Profile{})
	parse := func(name string) mframe {
		if tool == "rbspy" {
			if i := strings.LastIndex(name, " - "); i > 0 {
				file, line := name[i+3:], int64(0)
				if j := strings.LastIndexByte(file, ':'); j > 0 {
					if n, err := strconv.ParseInt(file[j+1:], 10, 64); err == nil {
						file, line = file[:j], n
					}
				}
				if file == "(unknown)" {
					file = ""
				}
				return mframe{name: name[:i], file: file, line: line}
			}
			return mframe{name: name}
		}
		m := pyspyFrame.FindStringSubmatch(name)
		if m == nil {
			return mframe{name: name}
		}
		f := mframe{name: m[1], file: m[2]}
		if m[3] != "" {
			f.line, _ = strconv.ParseInt(m[3], 10, 64)
		}
		switch {
		case strings.HasPrefix(f.name, "0x") && f.line == 0:
			// Unsymbolised: named by its library, as perf does.
			f.module, f.name, f.file = f.file, "["+f.file+"]", ""
		case strings.HasSuffix(f.file, ".py") || f.file == "<frozen>" || strings.HasPrefix(f.file, "<"):
			// A Python frame.
		default:
			// A native frame named from debug info (file is a source file
			// such as lib.rs) or a symbol table (file is the library).
			f.name = cleanNativeName(f.name)
			switch {
			case strings.Contains(f.file, ".so") || !strings.Contains(f.file, "."):
				f.module, f.file = f.file, ""
			case strings.HasPrefix(f.name, "Py") || strings.HasPrefix(f.name, "_Py"):
				f.module = "python" // the interpreter, with debug info
			default:
				f.module = "native" // a library the worker loads (py-spy does not say which)
			}
		}
		return f
	}
	np := b.p
	for _, s := range p.Sample {
		stack := make([]mframe, 0, len(s.Location))
		for _, l := range s.Location {
			for _, ln := range l.Line {
				if ln.Function != nil {
					stack = append(stack, parse(ln.Function.Name))
				}
			}
		}
		b.add(stack, s.Value, "")
	}
	p.Sample, p.Location, p.Function, p.Mapping = np.Sample, np.Location, np.Function, np.Mapping
}

// jointRecorder runs perf beside an interpreter sampler: the recordings
// rbspy's samples are joined with.
type jointRecorder struct {
	tool Tool
	freq int
	recs []*recording
	dir  string
}

// perfJoinArgs are the perf record arguments of one joined recording: as
// the perf collector's, with CLOCK_MONOTONIC timestamps for cpu too (the
// join converts them to the wall clock).
func (jr *jointRecorder) args(kind bundle.Kind, pid int, file string) []string {
	args := []string{"record", "-B", "--no-bpf-event", "-o", file, "--call-graph", "fp", "-k", "CLOCK_MONOTONIC"}
	if kind == bundle.CPU {
		return append(args, "-F", strconv.Itoa(jr.freq), "-p", strconv.Itoa(pid))
	}
	return append(args, "-e", "sched:sched_switch", "--switch-events", "-p", strconv.Itoa(pid))
}

// start starts one perf per kind, disabled, and returns once each is set
// up (or failed); each enables its events when the window opens (see
// recording.ready). wait returns when all have stopped.
func (jr *jointRecorder) start(ctx context.Context, w *Window, pid int, kinds []bundle.Kind, tempDir string) (wait func(), err error) {
	dir, err := os.MkdirTemp(w.tempDir(tempDir), "profcap-perf-join-")
	if err != nil {
		return nil, err
	}
	jr.dir = dir
	var setUp, done sync.WaitGroup
	for _, k := range kinds {
		r := &recording{kind: k, pid: pid}
		r.file = filepath.Join(dir, string(k)+".data")
		r.args = jr.args(k, pid, r.file)
		r.ctl, r.ack = filepath.Join(dir, string(k)+".ctl"), filepath.Join(dir, string(k)+".ack")
		if err := unix.Mkfifo(r.ctl, 0o600); err != nil {
			return nil, fmt.Errorf("perf control fifo: %w", err)
		}
		if err := unix.Mkfifo(r.ack, 0o600); err != nil {
			return nil, fmt.Errorf("perf control fifo: %w", err)
		}
		jr.recs = append(jr.recs, r)
		setUp.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			var once sync.Once
			ready := func() { once.Do(setUp.Done) }
			defer ready()
			args := append([]string{r.args[0], "-D", "-1", "--control", "fifo:" + r.ctl + "," + r.ack}, r.args[1:]...)
			run, err := jr.tool.Run(ctx, w, RunOptions{
				Args: args, PID: pid, Kind: k,
				Ready: func(ctx context.Context, exited <-chan struct{}) error { return r.ready(ctx, w, exited, ready) },
			})
			if err == nil {
				r.run = run
			}
		}()
	}
	setUp.Wait()
	return done.Wait, nil
}

// samples runs perf script over the recording of kind k.
func (jr *jointRecorder) samples(ctx context.Context, k bundle.Kind) ([]nativeSample, *recording, error) {
	var r *recording
	for _, rr := range jr.recs {
		if rr.kind == k {
			r = rr
		}
	}
	if r == nil || r.run == nil {
		return nil, r, fmt.Errorf("perf %s did not run", k)
	}
	if st, err := os.Stat(r.file); err != nil || st.Size() == 0 {
		return nil, r, r.run.Failure()
	}
	perf, err := jr.tool.Find()
	if err != nil {
		return nil, r, err
	}
	fields := "comm,pid,tid,time,period,event,ip,sym,symoff,dso"
	args := []string{"script", "-i", r.file, "--ns", "-F", fields}
	if k == bundle.OffCPU {
		args = []string{"script", "-i", r.file, "--ns", "-F", "comm,pid,tid,cpu,time,event,trace,ip,sym,symoff,dso", "--show-switch-events"}
	}
	cmd := exec.CommandContext(ctx, perf, args...)
	stderr := &tailBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, r, err
	}
	if err := cmd.Start(); err != nil {
		return nil, r, fmt.Errorf("starting perf script: %w", err)
	}
	offset := clockOffset()
	endMono := monotonicNow() - time.Since(r.run.End).Nanoseconds()
	ns, perr := readPerfEvents(out, k, r.pid, offset, endMono)
	if perr != nil {
		_ = cmd.Process.Kill()
	}
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	if perr != nil {
		return nil, r, fmt.Errorf("reading perf script output: %w", perr)
	}
	if werr != nil {
		return nil, r, fmt.Errorf("perf script: %v: %s", werr, lastLine(stderr.String()))
	}
	if r.run.ReadyErr != nil && len(ns) == 0 {
		// perf never sampled: no samples says nothing about the target.
		return nil, r, fmt.Errorf("perf did not sample: %w", r.run.ReadyErr)
	}
	return ns, r, nil
}

func (jr *jointRecorder) cleanup() {
	if jr.dir != "" {
		os.RemoveAll(jr.dir)
	}
}

// collectJoined is rbspy's collect with perf beside it: perf starts first
// (disabled, enabled when the window opens), then rbspy records every
// sample with its time and thread (--raw-file), and each kind is built by
// joining the two (see the top of this file). Where perf cannot record a
// kind here, cpu is rbspy's alone (--on-cpu) with a warning, and offcpu
// fails with perf's reason.
func (s *Spy) collectJoined(ctx context.Context, w *Window, pid int, notes []string, kinds []bundle.Kind, emit Emit) {
	want := map[bundle.Kind]bool{}
	for _, k := range kinds {
		want[k] = true
	}
	var perfKinds []bundle.Kind
	perfWhy := map[bundle.Kind]error{}
	for _, k := range []bundle.Kind{bundle.CPU, bundle.OffCPU} {
		if !want[k] && !want[bundle.Wall] {
			continue
		}
		if err := s.perfProblem(pid, k); err != nil {
			perfWhy[k] = err
			continue
		}
		perfKinds = append(perfKinds, k)
	}
	jr := &jointRecorder{tool: s.perf, freq: s.opt.PerfFrequency}
	defer jr.cleanup()
	wait := func() {}
	if len(perfKinds) > 0 {
		var err error
		if wait, err = jr.start(ctx, w, pid, perfKinds, s.opt.TempDir); err != nil {
			for _, k := range perfKinds {
				perfWhy[k] = err
			}
			perfKinds, wait = nil, func() {}
		}
	}
	Ready(ctx)
	if !w.WaitOpen(ctx) {
		wait()
		for _, k := range kinds {
			emit(Result{Kind: k, Collector: s.Name(), Status: bundle.StatusFailed, Err: errors.New("the window ended before it opened")})
		}
		return
	}

	// One rbspy run of every sample (the join's Ruby side and the wall
	// profile); cpu without perf is a run of its own with --on-cpu.
	var raw []interpSample
	var res Result
	var alone Result
	var aloneRun *Run
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); res, _ = s.record(ctx, w, pid, bundle.Wall, &raw) }()
	if want[bundle.CPU] && perfWhy[bundle.CPU] != nil {
		wg.Add(1)
		go func() { defer wg.Done(); alone, aloneRun = s.record(ctx, w, pid, bundle.CPU, nil) }()
	}
	wg.Wait()
	wait()

	native := map[bundle.Kind][]nativeSample{}
	recs := map[bundle.Kind]*recording{}
	for _, k := range perfKinds {
		ns, r, err := jr.samples(ctx, k)
		if err != nil {
			perfWhy[k] = err
			continue
		}
		native[k], recs[k] = ns, r
	}
	if res.Profile == nil {
		for _, k := range kinds {
			r := res
			r.Kind = k
			emit(r)
		}
		return
	}
	j := newJoiner(raw, native[bundle.CPU], native[bundle.OffCPU])
	rbspyCmd := res.Profile.Comments
	for _, k := range kinds {
		var out Result
		switch {
		case k == bundle.CPU && perfWhy[k] != nil && aloneRun == nil && alone.Profile == nil && alone.Status == "":
			// perf failed after the window: no rbspy-alone run to fall back on.
			emit(Result{Kind: k, Collector: s.Name(), Status: bundle.StatusFailed, Err: fmt.Errorf("cpu (perf, joined to rbspy's Ruby stacks): %w", perfWhy[k])})
			continue
		case k == bundle.CPU && perfWhy[k] != nil:
			out = s.finish(alone, aloneRun, append(slices.Clone(notes),
				fmt.Sprintf("%sRuby frames only: perf could not record the native frames to join (%v)", bundle.WarningPrefix, perfWhy[k])))
			if out.Profile != nil {
				out.Profile.Comments = append(out.Profile.Comments, bundle.WarningPrefix+"Ruby frames only: the native frames (C extensions, FFI libraries) are not joined")
			}
			emit(out)
			continue
		case k == bundle.OffCPU && perfWhy[k] != nil:
			emit(Result{Kind: k, Collector: s.Name(), Status: bundle.StatusFailed, Err: fmt.Errorf("off-CPU (perf, joined to rbspy's Ruby stacks): %w", perfWhy[k])})
			continue
		}
		var p *profile.Profile
		var st joinStats
		var what string
		start, end := res.Start, res.End
		var cmds, knotesExtra []string
		switch k {
		case bundle.CPU, bundle.OffCPU:
			r := recs[k]
			period := int64(time.Second) / int64(s.opt.PerfFrequency)
			p, st = joinNative(j, k, native[k], period)
			what = "perf samples"
			if k == bundle.OffCPU {
				what = "off-CPU intervals"
			}
			ps := r.run.Start
			if !r.ackedAt.IsZero() {
				ps = r.ackedAt
			}
			if r.run.ReadyErr != nil {
				knotesExtra = append(knotesExtra, r.run.ReadyErr.Error())
			}
			start, end = ps, r.run.End
			cmds = append(cmds, "perf "+strings.Join(r.args, " "))
		case bundle.Wall:
			p, st = joinWall(j, raw, native[bundle.CPU], s.opt.Rate)
			what = "rbspy samples"
			for _, pk := range perfKinds {
				if r := recs[pk]; r != nil {
					cmds = append(cmds, "perf "+strings.Join(r.args, " "))
				}
			}
			if len(recs) == 0 {
				notes = append(notes, bundle.WarningPrefix+"Ruby frames only: perf recorded nothing to join")
			}
		}
		p.TimeNanos, p.DurationNanos = start.UnixNano(), end.Sub(start).Nanoseconds()
		p.Comments = append(append(slices.Clone(rbspyCmd), cmds...), fmt.Sprintf("threads joined (rbspy thread → tid): %s", j.threadMap()))
		tool := "rbspy"
		if k == bundle.Wall {
			tool = "perf"
		}
		knotes := append(slices.Clone(notes), knotesExtra...)
		if c := st.comment(what, tool); c != "" {
			p.Comments = append(p.Comments, c)
			knotes = append(knotes, c)
		}
		out = Result{Kind: k, Collector: s.Name(), Profile: p, Start: start, End: end, Status: res.Status, Err: res.Err}
		if len(knotesExtra) > 0 && out.Status == bundle.StatusOK {
			out.Status = bundle.StatusPartial // perf started late
		}
		if k != bundle.CPU {
			if share := markIdle(p); share > 0 {
				knotes = append(knotes, fmt.Sprintf("%.0f%% of the time is the interpreter's idle (under %s)", 100*share, IdleFrame))
			}
		}
		if len(p.Sample) == 0 {
			knotes = append(knotes, "no samples")
		}
		if err := p.CheckValid(); err != nil {
			out = Result{Kind: k, Collector: s.Name(), Status: bundle.StatusFailed, Err: fmt.Errorf("joining rbspy and perf: %w", err)}
		}
		out.Note = strings.Join(knotes, "; ")
		emit(out)
	}
}

// threadMap describes the joiner's thread pairs for a profile comment.
func (j *joiner) threadMap() string {
	if len(j.tidOf) == 0 {
		return "none"
	}
	var parts []string
	for th, tid := range j.tidOf {
		parts = append(parts, fmt.Sprintf("0x%x → %d", th, tid))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
