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
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
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

// Outcome summarises a finished capture.
type Outcome struct {
	Dir      string
	Manifest *bundle.Manifest
	// Captured and Failed count profiles; Unsupported those a target lacks.
	Captured, Failed, Unsupported int
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

// Run captures, merges and renders. The returned error is for failures of
// profcap itself (the bundle cannot be written); failed profiles are in the
// outcome.
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
	events := opt.Events
	if events == nil {
		events = func(Event) {}
	}
	var evMu sync.Mutex
	emitEvent := func(e Event) {
		if e.Time.IsZero() {
			e.Time = time.Now()
		}
		evMu.Lock()
		defer evMu.Unlock()
		events(e)
	}

	jobs, missing := Plan(opt.Targets, opt.Collectors, opt.Kinds, opt.Explicit, opt.Prefer)
	now := time.Now()
	m := &bundle.Manifest{
		Schema:  bundle.Schema,
		ID:      NewID(now, opt.Targets[0].Name),
		Created: now.UTC().Format(time.RFC3339),
		Status:  bundle.StatusCapturing,
		Window:  bundle.Window{RequestedSeconds: opt.Duration.Seconds()},
		Merged:  []bundle.Merged{},
		Profcap: opt.Version,
	}
	byName := map[string]*bundle.Target{}
	for _, t := range opt.Targets {
		bt := &bundle.Target{Name: t.Name, Labels: t.Labels, Status: bundle.StatusCapturing, Profiles: []*bundle.Profile{}}
		if bt.Labels == nil {
			bt.Labels = map[string]string{}
		}
		if pid, err := t.ResolvePID(); err == nil {
			bt.PID = pid
		}
		for _, k := range missing[t.Name] {
			bt.Profiles = append(bt.Profiles, &bundle.Profile{Kind: k, Status: bundle.StatusUnsupported,
				Error: fmt.Sprintf("no collector can capture %s from this target (%s)", k, describe(&t))})
		}
		m.Targets = append(m.Targets, bt)
		byName[t.Name] = bt
	}
	for _, j := range jobs {
		bt := byName[j.target.Name]
		for _, k := range j.kinds {
			bt.Profiles = append(bt.Profiles, &bundle.Profile{Kind: k, Collector: j.collector.Name(), Status: bundle.StatusPending})
			emitEvent(Event{Type: EventPlanned, Target: j.target.Name, Kind: k, Collector: j.collector.Name()})
		}
	}
	w, err := bundle.Create(opt.Out, m)
	if err != nil {
		return nil, err
	}

	// Results land on disk as they arrive; nothing keeps them in memory.
	record := func(t *targets.Target, r collectors.Result) {
		entry := &bundle.Profile{Kind: r.Kind, Collector: r.Collector, Status: r.Status, Note: r.Note}
		if !r.Start.IsZero() {
			entry.Start = r.Start.UTC().Format(bundle.TimeFormat)
		}
		if !r.End.IsZero() {
			entry.End = r.End.UTC().Format(bundle.TimeFormat)
		}
		if r.Err != nil {
			entry.Error = r.Err.Error()
		}
		if r.Profile != nil && (r.Status == bundle.StatusOK || r.Status == bundle.StatusPartial) {
			rel := "targets/" + targets.SafeName(t.Name) + "/" + string(r.Kind) + ".pb.gz"
			if err := r.Profile.CheckValid(); err != nil {
				entry.Status, entry.Error = bundle.StatusFailed, fmt.Sprintf("collector returned an invalid profile: %v", err)
			} else if n, err := w.WriteProfile(rel, r.Profile); err != nil {
				entry.Status, entry.Error = bundle.StatusFailed, fmt.Sprintf("writing profile: %v", err)
			} else {
				entry.Path, entry.Bytes, entry.Samples = rel, n, len(r.Profile.Sample)
				entry.Period = describePeriod(r.Profile)
			}
		} else if r.Status == bundle.StatusOK {
			entry.Status, entry.Error = bundle.StatusFailed, "collector returned no profile"
		}
		_ = w.Update(func(m *bundle.Manifest) {
			for _, bt := range m.Targets {
				if bt.Name != t.Name {
					continue
				}
				for i, p := range bt.Profiles {
					if p.Kind == entry.Kind && p.Status == bundle.StatusPending {
						bt.Profiles[i] = entry
						return
					}
				}
				bt.Profiles = append(bt.Profiles, entry)
			}
		})
		var perr error
		if entry.Error != "" {
			perr = errors.New(entry.Error)
		}
		emitEvent(Event{Type: EventResult, Target: t.Name, Kind: r.Kind, Collector: r.Collector,
			Status: bundle.Status(entry.Status), Samples: entry.Samples, Bytes: entry.Bytes, Err: perr, Msg: entry.Note})
	}

	cpu := newCPUMeter(opt.Targets, opt.Baseline)
	cpu.baseline(ctx)
	win := collectors.NewWindow(opt.Duration, opt.Slice)
	cpu.windowStart()
	_ = w.Update(func(m *bundle.Manifest) { m.Window.Start = win.Start.UTC().Format(bundle.TimeFormat) })
	emitEvent(Event{Type: EventStarted, Time: win.Start})

	// abort ends everything in flight: the caller's context, or collectors
	// that overrun the deadline by more than the grace period.
	abortCtx, abort := context.WithCancel(ctx)
	defer abort()

	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func(j job) {
			defer wg.Done()
			delivered := map[bundle.Kind]bool{}
			var mu sync.Mutex
			emit := func(r collectors.Result) {
				mu.Lock()
				dup := delivered[r.Kind]
				delivered[r.Kind] = true
				mu.Unlock()
				if !dup {
					record(j.target, r)
				}
			}
			// Label the collector's goroutines so profcap's own profile
			// shows which part is busy.
			pprof.Do(abortCtx, pprof.Labels("collector", j.collector.Name(), "target", j.target.Name), func(ctx context.Context) {
				j.collector.Collect(ctx, win, j.target, j.kinds, emit)
			})
			// A collector must deliver every kind; say so if it did not.
			for _, k := range j.kinds {
				mu.Lock()
				done := delivered[k]
				delivered[k] = true
				mu.Unlock()
				if !done {
					err := errors.New("the collector delivered no result")
					if abortCtx.Err() != nil {
						err = fmt.Errorf("abandoned: %v", context.Cause(abortCtx))
					}
					record(j.target, collectors.Result{Kind: k, Collector: j.collector.Name(), Status: bundle.StatusFailed, Err: err})
				}
			}
		}(j)
	}

	// The workload, if any, runs inside the window.
	var wl *bundle.Workload
	wlDone := make(chan struct{})
	if len(opt.Workload) > 0 {
		wl = &bundle.Workload{Command: opt.Workload}
		go func() {
			defer close(wlDone)
			runWorkload(abortCtx, win, opt, wl)
			win.End("workload exited")
		}()
	} else {
		close(wlDone)
	}

	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()

	reason := ""
	stop := opt.Stop
	for waiting := true; waiting; {
		select {
		case <-allDone:
			waiting = false
			win.End("every collector finished")
		case <-stop:
			stop = nil
			reason = collectors.ReasonInterrupted
			win.End(collectors.ReasonInterrupted)
			emitEvent(Event{Type: EventNote, Msg: "interrupted: ending the window now and keeping what was captured (press Ctrl-C again to stop at once)"})
		case <-win.Done():
			// Give collectors the grace period to deliver, then abandon.
			emitEvent(Event{Type: EventWindowEnd})
			select {
			case <-allDone:
			case <-time.After(opt.Grace):
				abort()
				emitEvent(Event{Type: EventNote, Msg: fmt.Sprintf("collectors still running %s after the window: abandoning them", opt.Grace)})
				select {
				case <-allDone:
				case <-time.After(5 * time.Second):
				}
			case <-ctx.Done():
				reason = "interrupted twice"
				select {
				case <-allDone:
				case <-time.After(2 * time.Second):
				}
			}
			waiting = false
		case <-ctx.Done():
			reason = "interrupted twice"
			win.End(collectors.ReasonInterrupted)
		}
	}
	end := time.Now()
	cpu.windowEnd()
	if wl != nil {
		select {
		case <-wlDone:
		case <-time.After(10 * time.Second):
			wl.Error = "workload did not exit within 10s of the window's end"
		}
	}

	out := &Outcome{Dir: opt.Out}
	if reason == "" && ctx.Err() != nil {
		reason = "interrupted twice"
	}
	early := win.EndedEarly()
	_ = w.Update(func(m *bundle.Manifest) {
		m.Window.End = end.UTC().Format(bundle.TimeFormat)
		if early != "" && early != "every collector finished" {
			m.Window.EndedEarly = early
		}
		m.Workload = wl
		m.Skew = startSkew(m)
		for _, bt := range m.Targets {
			bt.CPU = cpu.use(bt.Name)
		}
		for _, bt := range m.Targets {
			for _, p := range bt.Profiles {
				if p.Status == bundle.StatusPending {
					p.Status, p.Error = bundle.StatusFailed, "no result: the capture was stopped"
				}
			}
		}
		finalStatus(m, opt.Explicit, reason, out)
	})
	if err := w.Sync(); err != nil {
		return nil, fmt.Errorf("writing the manifest: %w", err)
	}
	// The merges and the report come after the window, never while targets
	// are sampled; a second interrupt skips them.
	if ctx.Err() == nil {
		mergeAll(ctx, w, emitEvent)
		if opt.Render != nil {
			if err := opt.Render(opt.Out, w.Manifest()); err != nil {
				emitEvent(Event{Type: EventNote, Msg: fmt.Sprintf("writing the report: %v", err)})
			} else {
				_ = w.Update(func(m *bundle.Manifest) { m.Report = "report.html" })
				_ = w.Sync()
			}
		}
	}
	if err := w.Sync(); err != nil {
		return nil, fmt.Errorf("writing the manifest: %w", err)
	}
	out.Manifest = w.Manifest()
	return out, nil
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

// finalStatus sets every target's status and the bundle's.
func finalStatus(m *bundle.Manifest, explicit bool, reason string, out *Outcome) {
	for _, bt := range m.Targets {
		ok, bad := 0, 0
		for _, p := range bt.Profiles {
			switch bundle.Status(p.Status) {
			case bundle.StatusOK:
				ok++
			case bundle.StatusUnsupported:
				out.Unsupported++
				// A kind the user asked for by name and did not get is a
				// failure; one that was merely on offer is not.
				if explicit {
					bad++
				}
			default:
				bad++
			}
		}
		out.Captured += ok
		out.Failed += bad
		switch {
		case bad == 0 && ok > 0:
			bt.Status = bundle.StatusOK
		case ok == 0:
			bt.Status = bundle.StatusFailed
		default:
			bt.Status = bundle.StatusPartial
		}
		for _, p := range bt.Profiles {
			if p.Status == bundle.StatusPartial {
				bt.Status = bundle.StatusPartial
				out.Captured++ // kept, but not complete
				break
			}
		}
	}
	switch {
	case out.Captured == 0:
		m.Status = bundle.StatusFailed
	case out.Failed > 0 || reason != "":
		m.Status = bundle.StatusPartial
	default:
		m.Status = bundle.StatusOK
	}
	m.Reason = reason
}

// startSkew is the largest difference between the start times of the same
// kind across targets: how far apart the "same" window really was.
// (Snapshots taken at the window's end start at its end, so kinds are not
// compared with each other.)
func startSkew(m *bundle.Manifest) float64 {
	first := map[bundle.Kind]time.Time{}
	last := map[bundle.Kind]time.Time{}
	skew := 0.0
	for _, bt := range m.Targets {
		for _, p := range bt.Profiles {
			if p.Path == "" || p.Start == "" {
				continue
			}
			t, err := time.Parse(bundle.TimeFormat, p.Start)
			if err != nil {
				continue
			}
			if f, ok := first[p.Kind]; !ok || t.Before(f) {
				first[p.Kind] = t
			}
			if l, ok := last[p.Kind]; !ok || t.After(l) {
				last[p.Kind] = t
			}
			skew = max(skew, last[p.Kind].Sub(first[p.Kind]).Seconds())
		}
	}
	return skew
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
