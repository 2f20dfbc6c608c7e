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
	// needs code built with frame pointers) or "dwarf" (copies 8 KB of
	// stack per sample and unwinds afterwards; works without frame
	// pointers, costs far more). "" means "fp".
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
	opt.CallGraph = cmp.Or(opt.CallGraph, "fp")
	p := &Perf{opt: opt}
	p.pidCollector = pidCollector{
		tool:   Tool{Name: "perf", Path: opt.PerfPath, Missing: ErrPerfMissing, Access: PerfEvents},
		offers: perfKinds, check: p.check, collect: p.collect,
	}
	return p
}

// ValidCallGraph reports whether s is a --call-graph mode the collector
// accepts.
func ValidCallGraph(s string) bool { return s == "" || s == "fp" || s == "dwarf" }

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
// NoFollow; notes say so, and whether its binary is stripped) and this user
// may record kind k of it. A missing perf or privilege is this machine's
// lack (isLack); a missing process is the target's.
func (p *Perf) check(t *targets.Target, k bundle.Kind) (pid int, notes []string, err error) {
	if pid, notes, err = p.tool.Process(t, p.opt.NoFollow); err != nil {
		return 0, nil, err
	}
	if err := p.tool.Permitted(pid, k); err != nil {
		return 0, nil, err
	}
	if path, stripped, err := strippedBinary(pid); err == nil && stripped {
		notes = append(notes, strippedNote(path))
	}
	return pid, notes, nil
}

// recording is one `perf record` of one kind.
type recording struct {
	kind  bundle.Kind
	pid   int
	notes []string
	file  string
	args  []string // without the control options, for the profile's comment
	ctl   string   // control FIFO (perf record --control)
	ack   string
	run   *Run
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

func (p *Perf) recordArgs(kind bundle.Kind, pid int, file string) []string {
	// -B: no build-id pass over the samples at exit (perf script runs at
	// once on this machine), which makes stopping a system-wide recording
	// seconds faster.
	args := []string{"record", "-q", "-B", "-o", file, "--call-graph", p.opt.CallGraph}
	switch kind {
	case bundle.CPU:
		args = append(args, "-F", strconv.Itoa(p.opt.Frequency), "-p", strconv.Itoa(pid))
	case bundle.OffCPU:
		// Per process, no -a: the sched_switch tracepoint gives each
		// switch-out with its state and stack, --switch-events the
		// thread's own switch-in (PERF_RECORD_SWITCH IN). A system-wide
		// recording would also see switch-ins, but in the context of the
		// task switched out, which costs a stack and a side-band stream
		// for every process and was seen to drop idle-task events.
		// CLOCK_MONOTONIC timestamps let intervals still open at the end
		// of the window be closed at its real end.
		args = append(args, "-e", "sched:sched_switch", "--switch-events", "-k", "CLOCK_MONOTONIC", "-p", strconv.Itoa(pid))
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
	r.args = p.recordArgs(r.kind, r.pid, r.file)
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
		pid, notes, err := p.check(t, k)
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
		recs = append(recs, &recording{kind: k, pid: pid, notes: notes})
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
	prof, readNotes, err := p.read(ctx, r, endMono)
	if err != nil {
		res.Status, res.Err = bundle.StatusFailed, err
		return res
	}
	prof.TimeNanos = start.UnixNano()
	prof.DurationNanos = run.End.Sub(start).Nanoseconds()
	prof.Comments = append(prof.Comments, "perf "+strings.Join(r.args, " "))
	res.Profile = prof
	res.Status = bundle.StatusOK
	notes := append(append([]string(nil), r.notes...), readNotes...)
	if exited != nil {
		res.Status, res.Err = bundle.StatusPartial, exited
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
	opt := perfdata.Options{
		Context: ctx,
		Perf:    perf,
		Notes:   func(n string) { notes = append(notes, n) },
		Kind:    perfdata.KindCPU,
		CPU:     perfscript.Options{Frequency: p.opt.Frequency, PID: r.pid},
		OffCPU:  perfscript.OffCPUOptions{PID: r.pid, ExcludeRunnable: p.opt.ExcludeRunnable, EndTime: endMono},
	}
	if r.kind == bundle.OffCPU {
		opt.Kind = perfdata.KindOffCPU
	}
	prof, err := perfdata.ReadFile(r.file, opt)
	if err != nil {
		return nil, nil, fmt.Errorf("reading perf.data: %w", err)
	}
	return prof, notes, nil
}
