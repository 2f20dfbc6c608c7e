// Package capture runs one capture: every collector of every target
// concurrently over one shared window, each finished profile written to the
// bundle as soon as it arrives, then the per-kind merges and the report.
package capture

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/google/pprof/profile"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/internal/pprofutil"
	"github.com/profcap/profcap/targets"
)

// Options describe a capture.
type Options struct {
	Targets []targets.Target
	// Kinds limits the capture to these kinds (--profiles, or a preset's
	// list). Empty means every kind each target offers.
	Kinds []bundle.Kind
	// Explicit says Kinds was asked for by name (--profiles): then a kind a
	// target cannot give is a failure, not merely unsupported.
	Explicit bool
	// Duration of the window; Slice the longest single request for
	// endpoints that cannot be stopped early.
	Duration, Slice time.Duration
	// Grace is how long collectors get after the window's end to deliver
	// before they are abandoned (default 15s).
	Grace time.Duration
	Out   string
	// OutUnique says Out is a default name: if it is taken, a numbered
	// name beside it is used (Outcome.Dir says which).
	OutUnique bool
	// Workload, if set, runs as the workload: the window ends when it exits.
	Workload                       []string
	WorkloadStdout, WorkloadStderr io.Writer
	// Collectors in priority order: a kind two collectors offer for one
	// target is taken by the first.
	Collectors []collectors.Collector
	// Prefer names a collector that takes every kind it offers, ahead of
	// the priority order and its preflight check (--collector).
	Prefer string
	// Stop ends the window early (first Ctrl-C). Cancelling the context
	// passed to Run abandons everything in flight (second Ctrl-C).
	Stop <-chan struct{}
	// Events receives progress; it may be nil. It is called from several
	// goroutines, one call at a time.
	Events func(Event)
	// Render writes the report into the bundle after the merges; nil skips it.
	Render func(dir string, m *bundle.Manifest) error
	// Version is written into the manifest.
	Version string
	// ReadyTimeout is how long the window waits for collectors that need
	// set-up (default 10s); one not ready by then samples less of it.
	ReadyTimeout time.Duration
	// Enrich, if set, may add to a target's profile before it goes into
	// the merge of its kind (e.g. join the await profile with the same
	// target's async one).
	Enrich Enrich
	// Limits bound every profile kept (zero: pprofutil.DefaultLimits).
	Limits pprofutil.Limits
	// Baseline is how long to measure each local target's CPU use before
	// the window starts (0: not measured).
	Baseline time.Duration
}

// EventType says what an Event reports.
type EventType int

const (
	EventPlanned   EventType = iota // a (target, kind) will be captured
	EventStarted                    // the window started
	EventResult                     // a profile finished (Status says how)
	EventWindowEnd                  // the window ended
	EventMerged                     // a kind was merged
	EventNote                       // a message for the user
)

// Event is one progress report.
type Event struct {
	Type      EventType
	Time      time.Time
	Target    string
	Kind      bundle.Kind
	Collector string
	Status    bundle.Status
	Samples   int
	Bytes     int64
	Err       error
	Msg       string
}

// Enrich adds to profile p of target t (in the bundle in dir) before it is
// merged.
type Enrich func(dir string, t *bundle.Target, p *profile.Profile)

// Outcome summarises a finished capture.
type Outcome struct {
	Dir      string
	Manifest *bundle.Manifest
	bundle.Counts
}

// ExitCode maps the outcome onto profcap record's exit status:
// 0 everything requested was captured, 3 partial, 1 nothing.
func (o *Outcome) ExitCode() int {
	switch {
	case o.Captured == 0:
		return 1
	case o.Failed > 0 || o.Manifest.Status != bundle.StatusOK:
		return 3
	}
	return 0
}

type job struct {
	target    *targets.Target
	collector collectors.Collector
	kinds     []bundle.Kind
}

// Plan decides which collector takes which kind of each target: for each
// kind, the first collector (in priority order) that offers it and passes
// its preflight check, else the first that offers it (its error then says
// what is missing). With explicit set, kinds in want that no collector
// offers come back in missing, per target; otherwise they are skipped.
func Plan(ts []targets.Target, cs []collectors.Collector, want []bundle.Kind, explicit bool, prefer string) (jobs []job, missing map[string][]bundle.Kind) {
	missing = map[string][]bundle.Kind{}
	wanted := func(k bundle.Kind) bool { return len(want) == 0 || slices.Contains(want, k) }
	for i := range ts {
		t := &ts[i]
		chosen := map[bundle.Kind]collectors.Collector{}
		for _, k := range bundle.AllKinds {
			if !wanted(k) {
				continue
			}
			var first collectors.Collector
			for _, c := range cs {
				if !slices.Contains(c.Kinds(t), k) {
					continue
				}
				if c.Name() == prefer { // forced: no preflight, no fallback
					chosen[k] = c
					break
				}
				if first == nil {
					first = c
				}
				if chosen[k] != nil {
					continue // keep looking only for a forced collector
				}
				if pf, ok := c.(collectors.Preflighter); ok && pf.Preflight(t, k) != nil {
					continue
				}
				chosen[k] = c
			}
			if chosen[k] == nil && first != nil {
				chosen[k] = first
			}
			if chosen[k] == nil && explicit {
				missing[t.Name] = append(missing[t.Name], k)
			}
		}
		for _, c := range cs {
			var ks []bundle.Kind
			for _, k := range bundle.AllKinds {
				if chosen[k] == c {
					ks = append(ks, k)
				}
			}
			if len(ks) > 0 {
				jobs = append(jobs, job{target: t, collector: c, kinds: ks})
			}
		}
	}
	return jobs, missing
}

// NewID returns a bundle id: UTC time, first target and a random suffix.
func NewID(now time.Time, first string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%s-%s", now.UTC().Format("20060102T150405Z"), targets.SafeName(first), hex.EncodeToString(b[:]))
}

// Run captures, merges and renders: plan → start → wait → finish. The
// returned error is for failures of profcap itself (the bundle cannot be
// written); failed profiles are in the outcome.
func Run(ctx context.Context, opt Options) (*Outcome, error) {
	if len(opt.Targets) == 0 {
		return nil, errors.New("no targets")
	}
	if opt.Duration <= 0 {
		return nil, errors.New("the duration must be positive")
	}
	if opt.Grace <= 0 {
		opt.Grace = 15 * time.Second
	}
	if opt.ReadyTimeout <= 0 {
		opt.ReadyTimeout = 10 * time.Second
	}
	if opt.Limits == (pprofutil.Limits{}) {
		opt.Limits = pprofutil.DefaultLimits
	}
	if err := checkNames(opt.Targets); err != nil {
		return nil, err
	}
	r := &run{opt: opt, events: opt.Events}
	if r.events == nil {
		r.events = func(Event) {}
	}
	if err := r.plan(); err != nil {
		return nil, err
	}
	// abort ends everything in flight: the caller's context, or collectors
	// that overrun the deadline by more than the grace period.
	abortCtx, abort := context.WithCancel(ctx)
	defer abort()
	r.start(ctx, abortCtx)
	reason := r.wait(ctx, abort)
	return r.finish(ctx, reason)
}

// run is one capture in progress.
type run struct {
	opt    Options
	events func(Event)
	evMu   sync.Mutex

	jobs []job
	w    *bundle.Writer
	cpu  *cpuMeter
	win  *collectors.Window

	wg      sync.WaitGroup
	allDone chan struct{} // every collector returned
	wl      *bundle.Workload
	wlDone  chan struct{}
	// interruptedLate says the first Ctrl-C came after the window, while
	// collectors were still delivering.
	interruptedLate bool
}

// emit reports progress, one call at a time.
func (r *run) emit(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	r.evMu.Lock()
	defer r.evMu.Unlock()
	r.events(e)
}

// plan decides which collector takes which kind and creates the bundle with
// every planned profile pending.
func (r *run) plan() error {
	jobs, missing := Plan(r.opt.Targets, r.opt.Collectors, r.opt.Kinds, r.opt.Explicit, r.opt.Prefer)
	r.jobs = jobs
	now := time.Now()
	m := bundle.NewManifest(NewID(now, r.opt.Targets[0].Name), now, r.opt.Duration, r.opt.Version)
	for i := range r.opt.Targets {
		t := &r.opt.Targets[i]
		pid, _ := t.ResolvePID()
		bt := m.AddTarget(t.Name, t.Labels, pid)
		for _, k := range missing[t.Name] {
			bt.Unavailable(k, fmt.Sprintf("no collector can capture %s from this target (%s)", k, describe(t)))
		}
	}
	for _, j := range jobs {
		bt := m.Target(j.target.Name)
		for _, k := range j.kinds {
			bt.Plan(k, j.collector.Name())
			r.emit(Event{Type: EventPlanned, Target: j.target.Name, Kind: k, Collector: j.collector.Name()})
		}
	}
	create := bundle.Create
	if r.opt.OutUnique {
		create = bundle.CreateUnique
	}
	w, err := create(r.opt.Out, m)
	if err != nil {
		return err
	}
	r.w = w
	return nil
}

// checkNames refuses targets whose names differ but would share a
// directory in the bundle (names differing only in characters the file
// name form drops, such as "a" and "a.").
func checkNames(ts []targets.Target) error {
	byDir := map[string]string{}
	for _, t := range ts {
		d := targets.SafeName(t.Name)
		if other, dup := byDir[d]; dup {
			if other == t.Name {
				return fmt.Errorf("target %q is named twice", t.Name)
			}
			return fmt.Errorf("targets %q and %q would share the bundle directory targets/%s: rename one", other, t.Name, d)
		}
		byDir[d] = t.Name
	}
	return nil
}

// record hands one result to the bundle (results land on disk as they
// arrive; nothing keeps them in memory) and reports it.
func (r *run) record(t *targets.Target, res collectors.Result) {
	if res.Profile != nil {
		// A profile from outside is cut to the limits before it is kept
		// (collectors that parse may have cut it already): say so.
		pprofutil.Bound(res.Profile, r.opt.Limits)
		if notes := pprofutil.CutNotes(res.Profile); len(notes) > 0 {
			res.Note = strings.TrimPrefix(res.Note+"; "+strings.Join(notes, "; "), "; ")
		}
	}
	e := r.w.Record(bundle.ProfilePath(targets.SafeName(t.Name), res.Kind), bundle.Result{
		Target: t.Name, Kind: res.Kind, Collector: res.Collector, Status: res.Status, Profile: res.Profile,
		Start: res.Start, End: res.End, Err: res.Err, Note: res.Note,
	})
	var err error
	if e.Error != "" {
		err = errors.New(e.Error)
	}
	r.emit(Event{Type: EventResult, Target: t.Name, Kind: res.Kind, Collector: res.Collector,
		Status: e.Status, Samples: e.Samples, Bytes: e.Bytes, Err: err, Msg: e.Note})
}

// start measures the baseline, starts the collectors that need set-up
// and opens the window when each is ready (or ReadyTimeout passed), then
// starts every other collector and the workload: the window is the time
// every collector samples.
func (r *run) start(ctx, abortCtx context.Context) {
	r.cpu = newCPUMeter(r.opt.Targets, r.opt.Baseline)
	r.cpu.baseline(ctx)
	r.win = collectors.NewPendingWindow(r.opt.Duration, r.opt.Slice)
	r.win.TempDir = filepath.Join(r.w.Dir(), bundle.TempDir)
	r.allDone = make(chan struct{})

	var prep, rest []job
	for _, j := range r.jobs {
		if p, ok := j.collector.(collectors.Preparer); ok && p.Prepares() {
			prep = append(prep, j)
		} else {
			rest = append(rest, j)
		}
	}
	var ready sync.WaitGroup
	var mu sync.Mutex
	waiting := map[string]bool{}
	for _, j := range prep {
		name := j.collector.Name() + " for " + j.target.Name
		waiting[name] = true
		ready.Add(1)
		jctx := collectors.WithReady(abortCtx, func() {
			mu.Lock()
			delete(waiting, name)
			mu.Unlock()
			ready.Done()
		})
		r.wg.Add(1)
		go func(j job) {
			defer r.wg.Done()
			defer collectors.Ready(jctx) // a collector that returns is ready
			r.collect(jctx, j)
		}(j)
	}
	allReady := make(chan struct{})
	go func() { ready.Wait(); close(allReady) }()
	if len(prep) > 0 {
		select {
		case <-allReady:
		case <-time.After(r.opt.ReadyTimeout):
			mu.Lock()
			var late []string
			for n := range waiting {
				late = append(late, n)
			}
			mu.Unlock()
			slices.Sort(late)
			r.emit(Event{Type: EventNote, Msg: fmt.Sprintf("not ready after %s, opening the window without waiting: %s (their profiles will cover less of it)", r.opt.ReadyTimeout, strings.Join(late, ", "))})
		case <-ctx.Done():
		case <-r.opt.Stop:
		}
	}
	r.win.Open()
	r.cpu.windowStart()
	r.w.StartWindow(r.win.Start)
	r.emit(Event{Type: EventStarted, Time: r.win.Start})

	for _, j := range rest {
		r.wg.Add(1)
		go func(j job) {
			defer r.wg.Done()
			r.collect(abortCtx, j)
		}(j)
	}
	go func() { r.wg.Wait(); close(r.allDone) }()

	// The workload, if any, runs inside the window.
	r.wlDone = make(chan struct{})
	if len(r.opt.Workload) == 0 {
		close(r.wlDone)
		return
	}
	r.wl = &bundle.Workload{Command: r.opt.Workload}
	go func() {
		defer close(r.wlDone)
		runWorkload(abortCtx, r.win, r.opt, r.wl)
		r.win.End("workload exited")
	}()
}

// collect runs one collector for one target. It keeps the first result of
// each kind the job asked for, drops kinds it did not ask for, and fails
// every asked kind the collector did not deliver.
func (r *run) collect(ctx context.Context, j job) {
	delivered := map[bundle.Kind]bool{}
	var mu sync.Mutex
	take := func(k bundle.Kind) bool {
		mu.Lock()
		defer mu.Unlock()
		if delivered[k] || !slices.Contains(j.kinds, k) {
			return false
		}
		delivered[k] = true
		return true
	}
	emit := func(res collectors.Result) {
		if take(res.Kind) {
			r.record(j.target, res)
		}
	}
	// Label the collector's goroutines so profcap's own profile shows which
	// part is busy.
	pprof.Do(ctx, pprof.Labels("collector", j.collector.Name(), "target", j.target.Name), func(ctx context.Context) {
		j.collector.Collect(ctx, r.win, j.target, j.kinds, emit)
	})
	for _, k := range j.kinds {
		if !take(k) {
			continue
		}
		err := errors.New("the collector delivered no result")
		if ctx.Err() != nil {
			err = fmt.Errorf("abandoned: %v", context.Cause(ctx))
		}
		r.record(j.target, collectors.Result{Kind: k, Collector: j.collector.Name(), Status: bundle.StatusFailed, Err: err})
	}
}

// wait returns when every collector has finished, or the window has ended
// and its grace period passed, or the user stopped the capture; the reason
// is "" for a complete capture.
func (r *run) wait(ctx context.Context, abort context.CancelFunc) string {
	reason := ""
	stop := r.opt.Stop
	for {
		select {
		case <-r.allDone:
			r.win.End("every collector finished")
			return reason
		case <-stop:
			stop = nil
			reason = collectors.ReasonInterrupted
			r.win.End(collectors.ReasonInterrupted)
			r.emit(Event{Type: EventNote, Msg: "interrupted: ending the window now and keeping what was captured (press Ctrl-C again to stop at once)"})
		case <-r.win.Done():
			// Give collectors the grace period to deliver, then abandon. A
			// Ctrl-C now lets them finish what they are writing but skips
			// the merges and the report; a second one stops at once.
			r.emit(Event{Type: EventWindowEnd})
			grace := time.After(r.opt.Grace)
			for {
				select {
				case <-r.allDone:
					return reason
				case <-stop:
					stop = nil
					reason = collectors.ReasonInterrupted
					r.interruptedLate = true
					r.emit(Event{Type: EventNote, Msg: "interrupted: keeping what the collectors are writing, then stopping without merges or the report (press Ctrl-C again to stop at once)"})
				case <-grace:
					abort()
					r.emit(Event{Type: EventNote, Msg: fmt.Sprintf("collectors still running %s after the window: abandoning them", r.opt.Grace)})
					select {
					case <-r.allDone:
					case <-time.After(5 * time.Second):
					}
					return reason
				case <-ctx.Done():
					reason = "interrupted twice"
					abort()
					select {
					case <-r.allDone:
					case <-time.After(2 * time.Second):
					}
					return reason
				}
			}
		case <-ctx.Done():
			reason = "interrupted twice"
			r.win.End(collectors.ReasonInterrupted)
		}
	}
}

// finish closes the window in the manifest, then merges and renders (never
// while targets are sampled; a second interrupt skips them).
func (r *run) finish(ctx context.Context, reason string) (*Outcome, error) {
	r.cpu.windowEnd()
	// The window ended when it ended, not when the last collector had
	// finished its post-processing.
	end := r.win.Ended()
	if end.IsZero() {
		end = time.Now()
	}
	if r.wl != nil {
		select {
		case <-r.wlDone:
		case <-time.After(10 * time.Second):
			r.wl.Error = "workload did not exit within 10s of the window's end"
		}
	}
	if reason == "" && ctx.Err() != nil {
		reason = "interrupted twice"
	}
	early := r.win.EndedEarly()
	if early == "every collector finished" {
		early = ""
	}
	cpu := map[string]*bundle.CPUUse{}
	for _, t := range r.opt.Targets {
		cpu[t.Name] = r.cpu.use(t.Name)
	}
	counts, err := r.w.Finish(bundle.Ending{End: end, EndedEarly: early, Workload: r.wl, CPU: cpu, Explicit: r.opt.Explicit, Reason: reason})
	if err != nil {
		return nil, fmt.Errorf("writing the manifest: %w", err)
	}
	if full := r.w.DiskFull(); full != "" {
		r.emit(Event{Type: EventNote, Msg: fmt.Sprintf("the disk is full: writing %s failed; the bundle in %s keeps what was written before, with final statuses; no merges or report", full, r.w.Dir())})
	} else if ctx.Err() == nil && !r.interruptedLate {
		r.post(ctx)
	}
	os.RemoveAll(r.win.TempDir)
	if err := r.w.Close(); err != nil {
		return nil, fmt.Errorf("writing the manifest: %w", err)
	}
	return &Outcome{Dir: r.w.Dir(), Manifest: r.w.Manifest(), Counts: counts}, nil
}

// post merges and renders after the window. A Ctrl-C (the first, if it
// comes now) stops the work that is left: the manifest then says the
// capture was interrupted and lists what was merged.
func (r *run) post(ctx context.Context) {
	post, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := r.opt.Stop
	if r.win.EndedEarly() == collectors.ReasonInterrupted {
		stop = nil // that Ctrl-C ended the window; only a new one counts
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return ctx.Err() != nil
		}
	}
	if stop != nil {
		go func() {
			select {
			case <-stop:
				cancel()
			case <-post.Done():
			}
		}()
	}
	mergeAll(post, r.w, r.emit, r.opt.Enrich)
	if r.opt.Render != nil && post.Err() == nil {
		done := make(chan error, 1)
		m := r.w.Manifest()
		go func() { done <- r.opt.Render(r.w.Dir(), m) }()
		select {
		case err := <-done:
			if err != nil {
				r.emit(Event{Type: EventNote, Msg: fmt.Sprintf("writing the report: %v", err)})
			} else if err := r.w.SetReport("report.html"); err != nil {
				r.emit(Event{Type: EventNote, Msg: fmt.Sprintf("writing the manifest: %v", err)})
			}
		case <-post.Done():
		}
	}
	if stopped() {
		n := len(r.w.Manifest().Merged)
		r.w.Interrupt(fmt.Sprintf("%s after the window: %d kinds merged, no report", collectors.ReasonInterrupted, n))
		r.emit(Event{Type: EventNote, Msg: fmt.Sprintf("interrupted: stopped after the window with %d kinds merged and no report", n)})
	}
}

func describe(t *targets.Target) string {
	var have []string
	if t.Pprof != "" {
		have = append(have, "pprof URL")
	}
	if t.HasPID() {
		have = append(have, "pid")
	}
	if t.TokioConsole != "" {
		have = append(have, "tokio-console address")
	}
	if len(have) == 0 {
		return "it has nothing to attach to"
	}
	return fmt.Sprintf("it has: %v", have)
}

// runWorkload runs the workload command inside the window; it is stopped
// (SIGTERM, then SIGKILL) if the window ends first.
func runWorkload(ctx context.Context, win *collectors.Window, opt Options, wl *bundle.Workload) {
	cmd := exec.Command(opt.Workload[0], opt.Workload[1:]...)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = opt.WorkloadStdout, opt.WorkloadStderr
	if cmd.Stdout == nil {
		cmd.Stdout = os.Stderr
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		wl.ExitCode, wl.Error = -1, fmt.Sprintf("starting workload: %v", err)
		return
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-win.Done():
		wl.Error = "stopped at the window's end"
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = <-done
		}
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-done
		wl.Error = "killed: capture abandoned"
	}
	wl.Seconds = time.Since(start).Seconds()
	wl.ExitCode = cmd.ProcessState.ExitCode()
	if err != nil && wl.Error == "" {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			wl.Error = err.Error()
		}
	}
}
