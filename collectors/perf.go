package collectors

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/pprof/profile"
	"golang.org/x/sys/unix"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/formats/perfdata"
	"github.com/profcap/profcap/formats/perfscript"
	"github.com/profcap/profcap/targets"
)

// PerfOptions configure the perf collector. The zero value is usable.
type PerfOptions struct {
	// Frequency is the CPU sampling frequency in Hz (perf record -F).
	// 0 means 99: a prime, so sampling does not run in lockstep with
	// periodic work (timers at 10 ms, 100 Hz ticks).
	Frequency int
	// CallGraph is how perf unwinds stacks: "fp" (frame pointers, cheap;
	// needs code built with frame pointers), "dwarf" (copies 8 KB of
	// stack per sample and unwinds afterwards; works without frame
	// pointers, costs far more) or "auto" (per process: fp where its
	// executable sets up frame pointers, dwarf where its machine code
	// shows it does not, with a note saying so and what it cost). ""
	// means "auto".
	CallGraph string
	// ExcludeRunnable leaves preempted time (state R) out of off-CPU
	// profiles; by default it is kept apart under its own root frame.
	ExcludeRunnable bool
	// NoFollow profiles the PID as given even when it is a launcher
	// (uv, npm, sh -c ...) whose child does the work.
	NoFollow bool
	// PerfPath is the perf binary; "" looks up "perf" in PATH.
	PerfPath string
	// TempDir holds perf.data while capturing; "" is os.TempDir().
	TempDir string
}

// Perf captures on-CPU and off-CPU profiles of a native process with
// Linux perf: see docs/perf.md.
type Perf struct {
	pidCollector
	opt PerfOptions
}

// NewPerf returns a perf collector.
func NewPerf(opt PerfOptions) *Perf {
	opt.Frequency = orDefault(opt.Frequency, 99)
	opt.CallGraph = cmp.Or(opt.CallGraph, "auto")
	p := &Perf{opt: opt}
	p.pidCollector = pidCollector{
		tool:   Tool{Name: "perf", Path: opt.PerfPath, Missing: ErrPerfMissing, Access: PerfEvents},
		offers: perfKinds, check: p.check, collect: p.collect,
	}
	return p
}

// ValidCallGraph reports whether s is a --call-graph mode the collector
// accepts.
func ValidCallGraph(s string) bool { return s == "" || s == "auto" || s == "fp" || s == "dwarf" }

// perfKinds are what perf records: one perf process each.
var perfKinds = []bundle.Kind{bundle.CPU, bundle.OffCPU}

func (p *Perf) Kinds(t *targets.Target) []bundle.Kind {
	if t.HasPID() {
		return slices.Clone(perfKinds)
	}
	return nil
}

// ErrPerfMissing is returned when no perf binary is found.
var ErrPerfMissing = errors.New("perf is not installed: install linux-perf (Debian: apt-get install linux-perf; Ubuntu: linux-tools-generic; Fedora/RHEL: perf)")

// check is the one test behind Probe, Preflight and Collect: perf is
// installed, the target's process resolves (past a launcher unless
// NoFollow; notes say so, whether its binary is stripped and how its
// stacks will be unwound) and this user may record kind k of it. A missing
// perf or privilege is this machine's lack (isLack); a missing process is
// the target's.
func (p *Perf) check(t *targets.Target, k bundle.Kind) (pid int, notes []string, err error) {
	pid, notes, _, _, err = p.checkUnwind(t, k)
	return pid, notes, err
}

// checkUnwind is check, with the --call-graph mode perf will use for the
// process, and whether its executable has no frame pointers.
func (p *Perf) checkUnwind(t *targets.Target, k bundle.Kind) (pid int, notes []string, callGraph string, noFP bool, err error) {
	if pid, notes, err = p.tool.Process(t, p.opt.NoFollow); err != nil {
		return 0, nil, "", false, err
	}
	if err := p.tool.Permitted(pid, k); err != nil {
		return 0, nil, "", false, err
	}
	if path, stripped, err := strippedBinary(pid); err == nil && stripped {
		notes = append(notes, strippedNote(path))
	}
	callGraph, note, noFP := p.callGraph(pid)
	if note != "" {
		notes = append(notes, note)
	}
	return pid, notes, callGraph, noFP, nil
}

// callGraph is the --call-graph mode for pid: the one asked for, or for
// auto, dwarf where the executable's machine code shows no frame pointers
// (perf's fp unwinding then stops after a frame or two: see
// shortStackShare) and fp otherwise. note says why dwarf, or that fp was
// asked for a binary without frame pointers.
func (p *Perf) callGraph(pid int) (mode, note string, noFP bool) {
	mode = p.opt.CallGraph
	if mode == "dwarf" {
		return mode, "", false
	}
	exe := exePath(pid)
	fp := FramePointersOf(fmt.Sprintf("/proc/%d/exe", pid))
	if !fp.Known || fp.Present {
		return "fp", "", false
	}
	if mode == "fp" {
		return "fp", fmt.Sprintf("%s has %s: --call-graph fp will stop most stacks after a frame or two; --call-graph dwarf (or auto) unwinds them, at about 30 times the data per sample", exe, fp), true
	}
	return "dwarf", fmt.Sprintf("unwinding with --call-graph dwarf: %s has %s, so frame-pointer stacks would stop after a frame or two; DWARF copies %d bytes of stack per sample (build with RUSTFLAGS=\"-C force-frame-pointers=yes\" or -fno-omit-frame-pointer for the cheap fp mode; --call-graph fp forces it)", exe, fp, dwarfStackBytes), true
}

// dwarfStackBytes is what perf copies of the user stack per sample with
// --call-graph dwarf: its default (perf record --call-graph dwarf,SIZE).
const dwarfStackBytes = 8192

// recording is one `perf record` of one kind.
type recording struct {
	kind  bundle.Kind
	pid   int
	notes []string
	// tree is what perf -p is given: pid and its descendants alive when
	// the recording starts (treeNote says which, "" for pid alone).
	tree      []int
	treeNote  string
	callGraph string // fp or dwarf
	noFP      bool   // the executable's code sets up no frame pointers
	file      string
	args      []string // without the control options, for the profile's comment
	ctl       string   // control FIFO (perf record --control)
	ack       string
	run       *Run
	// enabledAt is when the enable command was written and ackedAt when
	// perf acknowledged it: perf samples from a moment in between. Each
	// recording's window starts at its own acknowledgement, so one slow
	// perf does not stretch another's window.
	enabledAt, ackedAt time.Time
}

// Prepares says perf needs set-up before the window: starting perf and
// opening its events takes up to seconds on a loaded machine, and the
// window waits for it rather than losing its start.
func (p *Perf) Prepares() bool { return true }

// ready waits until perf has set up its (disabled) events and reads its
// control FIFO ("ping" is acknowledged then), says so through ready, waits
// for the window to open and enables sampling, acknowledged: sampling then
// starts within milliseconds of the window.
func (r *recording) ready(ctx context.Context, w *Window, exited <-chan struct{}, ready func()) error {
	defer ready() // also when perf fails: the window need not wait for it
	ctl, err := os.OpenFile(r.ctl, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer ctl.Close()
	ack, err := os.OpenFile(r.ack, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer ack.Close()
	acks := make(chan error, 2)
	go func() {
		for range 2 {
			acks <- readAck(ack)
		}
	}()
	wait := func(what string) error {
		select {
		case err := <-acks:
			return err
		case <-exited:
			return fmt.Errorf("perf exited before it %s", what)
		case <-ctx.Done():
			return ctx.Err()
		case <-w.Done():
			return fmt.Errorf("the window ended before perf %s", what)
		case <-time.After(30 * time.Second):
			return fmt.Errorf("perf did not acknowledge within 30s (it %s)", what)
		}
	}
	if _, err := ctl.WriteString("ping\n"); err != nil {
		return err
	}
	if err := wait("was set up"); err != nil {
		return err
	}
	ready()
	if !w.WaitOpen(ctx) {
		return errors.New("the window ended before it opened")
	}
	r.enabledAt = time.Now()
	if _, err := ctl.WriteString("enable\n"); err != nil {
		return err
	}
	if err := wait("started sampling"); err != nil {
		return err
	}
	r.ackedAt = time.Now()
	return nil
}

// readAck reads one acknowledgement from perf's ack FIFO: "ack\n", with
// NUL bytes around it (perf writes the string's terminator too).
func readAck(f *os.File) error {
	var got []byte
	b := make([]byte, 1)
	for len(got) < 64 {
		if _, err := f.Read(b); err != nil {
			return err
		}
		if b[0] == 0 {
			continue
		}
		got = append(got, b[0])
		if b[0] == '\n' {
			if string(got) != "ack\n" {
				return fmt.Errorf("perf answered %q on its control FIFO", got)
			}
			return nil
		}
	}
	return fmt.Errorf("perf answered %q on its control FIFO", got)
}

// maxTree bounds the processes perf -p is given: each thread of each
// costs perf an event per CPU (a file descriptor and a ring buffer).
const maxTree = 256

// processTree is pid and its descendants alive now (a pre-forking
// server's parent and its workers: the postmaster and its backends, the
// nginx master and its workers), pid first, at most maxTree, with a note
// naming them when there are descendants. perf -p attaches to the threads
// of the processes it is given and does not follow a fork of theirs (a
// child forked after it attached was seen to get no samples), so the note
// says that processes forked during the window are missed; the eBPF
// collector follows them.
func processTree(pid int) ([]int, string) {
	kids := map[int][]int{}
	if ents, err := os.ReadDir("/proc"); err == nil {
		for _, e := range ents {
			c, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if pp, _, ok := procStat(c); ok {
				kids[pp] = append(kids[pp], c)
			}
		}
	}
	tree := []int{pid}
	for i := 0; i < len(tree) && len(tree) < maxTree; i++ {
		for _, c := range kids[tree[i]] {
			if len(tree) < maxTree {
				tree = append(tree, c)
			}
		}
	}
	if len(tree) == 1 {
		return tree, ""
	}
	desc := make([]string, 0, len(tree)-1)
	for _, c := range tree[1:] {
		desc = append(desc, fmt.Sprintf("%d (%s)", c, procName(c)))
	}
	note := fmt.Sprintf("perf records pid %d and the %d descendants it had when perf started: %s; processes forked during the window are not followed by perf -p (the eBPF collector follows them)", pid, len(tree)-1, strings.Join(desc, ", "))
	if len(tree) == maxTree {
		note += fmt.Sprintf("; the tree was cut at %d processes", maxTree)
	}
	return tree, note
}

// missedNote names the descendants of the recording's target alive after
// it stopped that perf was not given: forked during the window, so not
// recorded (perf -p does not follow forks). Those that forked and exited
// within the window are not seen.
func missedNote(r *recording) string {
	given := r.tree
	if len(given) == 0 {
		given = []int{r.pid}
	}
	now, _ := processTree(r.pid)
	var missed []string
	for _, p := range now[1:] {
		if !slices.Contains(given, p) {
			missed = append(missed, fmt.Sprintf("%d (%s)", p, procName(p)))
		}
	}
	if len(missed) == 0 {
		return ""
	}
	what := "1 process forked during the window was"
	if len(missed) > 1 {
		what = fmt.Sprintf("%d processes forked during the window were", len(missed))
	}
	return fmt.Sprintf("%s%s not recorded (perf -p does not follow forks; the eBPF collector does): %s", bundle.WarningPrefix, what, strings.Join(missed, ", "))
}

func pidList(pids []int) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

func (p *Perf) recordArgs(kind bundle.Kind, pid int, file, callGraph string) []string {
	return p.recordTreeArgs(kind, []int{pid}, file, callGraph)
}

func (p *Perf) recordTreeArgs(kind bundle.Kind, tree []int, file, callGraph string) []string {
	// -B: no build-id pass over the samples at exit (perf script runs at
	// once on this machine), which makes stopping a system-wide recording
	// seconds faster. --no-bpf-event: BPF programs loaded anywhere on the
	// host during the window (systemd, other profilers) are side-band
	// KSYMBOL records that perf script 6.1 fails on ("failed to process
	// type: 17 [Bad address]", exit 242, the whole recording lost), and a
	// target's stacks do not run through them.
	// No -q: it silences perf's errors too ("Couldn't create thread/CPU
	// maps: No such process"), and a failure then says only "exit status
	// 255"; what perf prints on success is only read when it fails.
	args := []string{"record", "-B", "--no-bpf-event", "-o", file, "--call-graph", callGraph}
	switch kind {
	case bundle.CPU:
		args = append(args, "-F", strconv.Itoa(p.opt.Frequency), "-p", pidList(tree))
	case bundle.OffCPU:
		// Per process, no -a: the sched_switch tracepoint gives each
		// switch-out with its state and stack, --switch-events the
		// thread's own switch-in (PERF_RECORD_SWITCH IN). A system-wide
		// recording would also see switch-ins, but in the context of the
		// task switched out, which costs a stack and a side-band stream
		// for every process and was seen to drop idle-task events.
		// CLOCK_MONOTONIC timestamps let intervals still open at the end
		// of the window be closed at its real end.
		args = append(args, "-e", "sched:sched_switch", "--switch-events", "-k", "CLOCK_MONOTONIC", "-p", pidList(tree))
	}
	return args
}

// record runs one `perf record` over the window. perf starts with its
// events disabled (-D -1) and enables them when told on the control FIFO,
// acknowledging on the other: the window then starts when sampling really
// starts, not before perf's set-up (which takes up to a second on a busy
// machine).
func (p *Perf) record(ctx context.Context, w *Window, r *recording, dir string, ready func()) error {
	r.file = filepath.Join(dir, string(r.kind)+".data")
	tree := r.tree
	if len(tree) == 0 {
		tree = []int{r.pid}
	}
	r.args = p.recordTreeArgs(r.kind, tree, r.file, r.callGraph)
	r.ctl, r.ack = filepath.Join(dir, string(r.kind)+".ctl"), filepath.Join(dir, string(r.kind)+".ack")
	for _, f := range []string{r.ctl, r.ack} {
		if err := unix.Mkfifo(f, 0o600); err != nil {
			return fmt.Errorf("perf control fifo: %w", err)
		}
	}
	args := append([]string{r.args[0], "-D", "-1", "--control", "fifo:" + r.ctl + "," + r.ack}, r.args[1:]...)
	run, err := p.tool.Run(ctx, w, RunOptions{
		Args: args, PID: r.pid, Kind: r.kind,
		Ready: func(ctx context.Context, exited <-chan struct{}) error { return r.ready(ctx, w, exited, ready) },
	})
	r.run = run
	return err
}

func monotonicNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

func (p *Perf) collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	// Each kind is a perf process of its own: record only those asked for.
	var recs []*recording
	for _, k := range kinds {
		pid, notes, callGraph, noFP, err := p.checkUnwind(t, k)
		if err != nil {
			// No perf or no permission here: unsupported (a failure only
			// where the kind was asked for by name), with the fix.
			st := bundle.StatusFailed
			if isLack(err) {
				st = bundle.StatusUnsupported
			}
			emit(Result{Kind: k, Collector: p.Name(), Status: st, Err: err})
			continue
		}
		r := &recording{kind: k, pid: pid, notes: notes, callGraph: callGraph, noFP: noFP}
		r.tree, r.treeNote = processTree(pid)
		if r.treeNote != "" {
			r.notes = append(r.notes, r.treeNote)
		}
		recs = append(recs, r)
	}
	if len(recs) == 0 {
		return
	}
	dir, err := os.MkdirTemp(w.tempDir(p.opt.TempDir), "profcap-perf-")
	if err != nil {
		for _, r := range recs {
			emit(Result{Kind: r.kind, Collector: p.Name(), Status: bundle.StatusFailed, Err: fmt.Errorf("perf: temp dir: %w", err)})
		}
		return
	}
	defer os.RemoveAll(dir)

	// The job is ready when every recording is (or has failed).
	var setUp sync.WaitGroup
	setUp.Add(len(recs))
	go func() { setUp.Wait(); Ready(ctx) }()
	var wg sync.WaitGroup
	for _, r := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			ready := func() { once.Do(setUp.Done) }
			defer ready()
			if err := p.record(ctx, w, r, dir, ready); err != nil {
				emit(Result{Kind: r.kind, Collector: p.Name(), Status: bundle.StatusFailed, Err: err})
			}
		}()
	}
	wg.Wait()
	// perf script runs after every recording has stopped, one at a time.
	for _, r := range recs {
		if r.run != nil {
			emit(p.result(ctx, r))
		}
	}
}

// result reads one finished recording.
func (p *Perf) result(ctx context.Context, r *recording) Result {
	run := r.run
	// perf enables its events between writing "enable" and its
	// acknowledgement, which a loaded machine can delay by a large part of
	// a second: the profile starts when the command was written (its
	// events cannot be older than that).
	start := run.Start
	if !r.enabledAt.IsZero() {
		start = r.enabledAt
	}
	res := Result{Kind: r.kind, Collector: p.Name(), Start: start, End: run.End}
	if ctx.Err() != nil {
		res.Status, res.Err = bundle.StatusFailed, fmt.Errorf("perf %s capture abandoned: %w", r.kind, ctx.Err())
		return res
	}
	// After the SIGINT that stops it perf writes perf.data, then re-raises
	// the signal (or exits 130); it exits 0 when the target exits. Anything
	// else is perf failing, but what it wrote before the target exited is
	// kept.
	exited := run.TargetExit()
	if st, err := os.Stat(r.file); err != nil || st.Size() == 0 || run.Failed() && exited == nil {
		res.Status, res.Err = bundle.StatusFailed, run.Failure()
		return res
	}
	// Off-CPU intervals still open when sampling ended are closed there, on
	// perf's clock (CLOCK_MONOTONIC).
	endMono := monotonicNow() - time.Since(run.End).Nanoseconds()
	readStart := time.Now()
	prof, readNotes, err := p.read(ctx, r, endMono)
	readTime := time.Since(readStart)
	if err != nil && prof == nil {
		res.Status, res.Err = bundle.StatusFailed, err
		return res
	}
	readErr := err
	prof.TimeNanos = start.UnixNano()
	prof.DurationNanos = run.End.Sub(start).Nanoseconds()
	prof.Comments = append(prof.Comments, "perf "+strings.Join(r.args, " "))
	res.Profile = prof
	res.Status = bundle.StatusOK
	notes := append(append([]string(nil), r.notes...), readNotes...)
	if n := missedNote(r); n != "" {
		notes = append(notes, n)
	}
	if n := unwindNote(r, prof, readTime); n != "" {
		notes = append(notes, n)
	}
	if exited != nil {
		res.Status, res.Err = bundle.StatusPartial, exited
	}
	if readErr != nil {
		res.Status = bundle.StatusPartial
		res.Err = errors.Join(res.Err, readErr)
	}
	switch {
	case run.ReadyErr != nil && len(prof.Sample) == 0:
		// perf never sampled: no samples says nothing about the target.
		res.Status, res.Err = bundle.StatusFailed, fmt.Errorf("perf did not sample: %w", run.ReadyErr)
	case run.ReadyErr != nil:
		res.Status = bundle.StatusPartial
		notes = append(notes, run.ReadyErr.Error())
	case len(prof.Sample) == 0:
		notes = append(notes, "no samples: the target did not run (cpu) or switch (offcpu) during the window")
	}
	res.Note = strings.Join(notes, "; ")
	return res
}

// read reads one recording with formats/perfdata: the profile perf script
// piped into perfscript.Parse (cpu) or ParseOffCPU (offcpu) gives, without
// running perf script after the window (perfdata runs it only for what it
// cannot read itself: DWARF stacks, compressed records). Its notes (frames
// left unnamed and why) go with the result.
func (p *Perf) read(ctx context.Context, r *recording, endMono int64) (*profile.Profile, []string, error) {
	perf, _ := p.tool.Find()
	var notes []string
	// perf -p records only the processes it is given: a tree of them is
	// not filtered down to its first.
	onlyPID := r.pid
	if len(r.tree) > 1 {
		onlyPID = 0
	}
	opt := perfdata.Options{
		Context: ctx,
		Perf:    perf,
		Notes:   func(n string) { notes = append(notes, n) },
		Kind:    perfdata.KindCPU,
		CPU:     perfscript.Options{Frequency: p.opt.Frequency, PID: onlyPID},
		OffCPU:  perfscript.OffCPUOptions{PID: onlyPID, ExcludeRunnable: p.opt.ExcludeRunnable, EndTime: endMono},
	}
	if r.kind == bundle.OffCPU {
		opt.Kind = perfdata.KindOffCPU
	}
	prof, err := perfdata.ReadFile(r.file, opt)
	if prof != nil && err != nil {
		// What perf script gave before it failed is kept: the caller
		// marks the profile partial.
		return prof, notes, err
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading perf.data: %w", err)
	}
	return prof, notes, nil
}

// shortStack is the user stack depth at or below which a stack counts as
// cut short: a frame-pointer walk through code without frame pointers
// gives the sampled function and at most one more (whatever the register
// happened to hold), where a thread of a Rust or C service is ten or more
// frames deep from its start routine.
const shortStack = 2

// shortStackWarn is the share of samples with short user stacks that
// makes a note: measured with --call-graph fp on refsvc, 0% of the
// profiling build's samples (frame pointers), 100% of the release build's.
const shortStackWarn = 0.5

// userFrames counts the user-space locations of a sample: kernel
// addresses (the upper half on x86-64 and arm64) and the synthetic frames
// the parser adds (no address) are not.
func userFrames(s *profile.Sample) int {
	n := 0
	for _, l := range s.Location {
		if l.Address != 0 && l.Address < 0xffff800000000000 {
			n++
		}
	}
	return n
}

// shortStackShare returns the weight (the first value: samples for cpu,
// nanoseconds for offcpu) of the samples whose user stack has at most
// shortStack frames, and the total weight.
func shortStackShare(p *profile.Profile) (short, total int64) {
	for _, s := range p.Sample {
		if len(s.Value) == 0 {
			continue
		}
		total += s.Value[0]
		if userFrames(s) <= shortStack {
			short += s.Value[0]
		}
	}
	return short, total
}

// unwindNote says how far the recording's stacks reach: the share of
// samples (cpu) or of off-CPU time whose user stack has at most shortStack
// frames. For a frame-pointer recording where that is most of them it
// names the flag that fixes it and its cost; for a DWARF recording it says
// what the recording cost.
func unwindNote(r *recording, prof *profile.Profile, readTime time.Duration) string {
	short, total := shortStackShare(prof)
	if total == 0 {
		return ""
	}
	share := 100 * float64(short) / float64(total)
	what, samples := "off-CPU time", int64(0)
	if r.kind == bundle.CPU {
		what, samples = "samples", total
	}
	stacks := fmt.Sprintf("%.0f%% of %s had a user stack of at most %d frames", share, what, shortStack)
	switch r.callGraph {
	case "fp":
		if share < 100*shortStackWarn || r.kind == bundle.CPU && samples < 20 {
			return ""
		}
		if r.noFP { // the probe's note already names the flag
			return "measured: " + stacks
		}
		return fmt.Sprintf("%s: %s has no frame pointers, so --call-graph fp stops there; record with --call-graph dwarf (or auto), which copies %d bytes of stack per sample instead of a few hundred (about 30 times the data, and a slower perf script), or build with frame pointers (Rust: RUSTFLAGS=\"-C force-frame-pointers=yes\"; C/C++: -fno-omit-frame-pointer)",
			stacks, exePath(r.pid), dwarfStackBytes)
	case "dwarf":
		cost := ""
		if st, err := os.Stat(r.file); err == nil {
			cost = "perf.data " + humanBytes(st.Size())
			if samples > 0 {
				cost += fmt.Sprintf(" (%s per sample)", humanBytes(st.Size()/samples))
			}
			cost += ", "
		}
		return fmt.Sprintf("DWARF unwinding cost %sreading it %s; %s", cost, readTime.Round(10*time.Millisecond), stacks)
	}
	return ""
}
