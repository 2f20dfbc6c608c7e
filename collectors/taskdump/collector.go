// Package taskdump is the task-dump collector: an await profile of a Tokio
// runtime, from task dumps (tokio's Handle::dump, as the reference service
// serves it at /debug/tokio/dump) taken at a low rate over the window. Every
// task of every dump becomes a sample of the stack from the task's root
// future to its innermost await, weighted by the time the dump stands for,
// so values are task-nanoseconds: of N task-seconds in the window, which
// share waited where.
//
// It is a package of its own so that the collectors package stays free of
// it; it needs no gRPC. JoinConsole adds the tokio-console collector's view
// of each task (spawn location, busy/scheduled/idle) to an await profile.
package taskdump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/internal/secret"
	"github.com/profcap/profcap/targets"
)

// Options configure the task-dump collector. The zero value is usable.
type Options struct {
	// Transport is the base of every target's HTTP client (TLS settings
	// and credentials are the target's); nil means profcap's defaults.
	Transport *http.Transport
	// Interval is the time between dumps (default DefaultInterval).
	Interval time.Duration
	// Timeout is the time budget of one dump (default DefaultTimeout): a
	// dump not answered within it is skipped, and the service is asked to
	// give up too (timeout_ms).
	Timeout time.Duration
	// MaxDumpSize caps one dump's body (default DefaultMaxDumpSize); a
	// longer one is cut after its last complete task.
	MaxDumpSize int64
	// Limits bound the parser; BuildLimits the profile.
	Limits      Limits
	BuildLimits BuildLimits
	// MaxDuty bounds the share of wall time spent dumping (default
	// DefaultMaxDuty): after dumps that took d, the next starts no sooner
	// than d/MaxDuty after the last one started (d: the shorter of the last
	// two, so one slow dump, such as the first, which may load the
	// service's symbol tables, does not stretch the gaps).
	MaxDuty float64
	// DebugDirs are searched for separate debug files by build id
	// (DIR/.build-id/xx/yyyy.debug) to name "?? at 0xADDR" frames of a
	// stripped binary; default /usr/lib/debug.
	DebugDirs []string
}

// The defaults, from bench/taskdump's figures (docs/taskdump.md): one dump
// of the reference service costs it a pause of its worker threads of about
// a millisecond plus the formatting; at one dump a second its request
// latency does not move measurably.
const (
	DefaultInterval    = time.Second
	DefaultTimeout     = 2 * time.Second
	DefaultMaxDumpSize = 32 << 20
	// DefaultMaxDuty: a service whose dumps are slow is dumped less often
	// (said in the note), spending at most a tenth of the time in dumps.
	DefaultMaxDuty = 0.1
)

// Collector takes await profiles from task dumps.
type Collector struct {
	opt     Options
	mu      sync.Mutex
	clients map[*targets.Target]*http.Client
}

var _ collectors.Collector = (*Collector)(nil)

// New returns the task-dump collector.
func New(opt Options) *Collector {
	if opt.Transport == nil {
		opt.Transport = &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout: 5 * time.Second,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	if opt.Interval <= 0 {
		opt.Interval = DefaultInterval
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.MaxDumpSize <= 0 {
		opt.MaxDumpSize = DefaultMaxDumpSize
	}
	if opt.MaxDuty <= 0 || opt.MaxDuty > 1 {
		opt.MaxDuty = DefaultMaxDuty
	}
	if opt.DebugDirs == nil {
		opt.DebugDirs = []string{"/usr/lib/debug"}
	}
	return &Collector{opt: opt, clients: map[*targets.Target]*http.Client{}}
}

// Name implements collectors.Collector.
func (c *Collector) Name() string { return "taskdump" }

// DumpURL is where t serves task dumps: its tokio_taskdump URL, else
// /debug/tokio/dump beside a /debug/pprof base URL (discovered: a 404 there
// means the target does not serve dumps), else "".
func DumpURL(t *targets.Target) (u string, discovered bool) {
	if t == nil {
		return "", false
	}
	if t.TokioTaskdump != "" {
		return t.TokioTaskdump, false
	}
	pu, err := url.Parse(t.Pprof)
	if t.Pprof == "" || err != nil {
		return "", false
	}
	base, ok := strings.CutSuffix(strings.TrimRight(pu.Path, "/"), "/debug/pprof")
	if !ok {
		return "", false
	}
	pu.Path = base + "/debug/tokio/dump"
	pu.RawPath, pu.RawQuery, pu.Fragment = "", "", ""
	return pu.String(), true
}

// Kinds implements collectors.Collector: await, for a target with a dump
// URL (configured or beside its pprof URL).
func (c *Collector) Kinds(t *targets.Target) []bundle.Kind {
	if u, _ := DumpURL(t); u == "" {
		return nil
	}
	return []bundle.Kind{bundle.Await}
}

func (c *Collector) client(t *targets.Target) (*http.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[t]; ok {
		return cl, nil
	}
	cl, err := t.HTTPClient(c.opt.Transport)
	if err != nil {
		return nil, err
	}
	c.clients[t] = cl
	return cl, nil
}

// Probe implements collectors.Collector: it takes one dump.
func (c *Collector) Probe(ctx context.Context, t *targets.Target) []collectors.Availability {
	a := collectors.Availability{Kind: bundle.Await, Collector: c.Name()}
	u, _ := DumpURL(t)
	if u == "" {
		a.Reason = "no tokio_taskdump URL and no /debug/pprof URL to find one beside"
		return []collectors.Availability{a}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r := c.dump(ctx, t, u, min(c.opt.Timeout, 5*time.Second))
	switch {
	case r.err != nil:
		a.Reason = r.err.Error()
	default:
		a.Available = true
		a.Reason = fmt.Sprintf("task dump at %s: %d tasks in %s", secret.RedactURL(u), len(r.d.Tasks), r.took.Round(time.Millisecond))
	}
	return []collectors.Availability{a}
}

// dumpResult is one attempt.
type dumpResult struct {
	d     *Dump
	at    time.Time // when the runtime was dumped (estimated: the request's midpoint)
	took  time.Duration
	size  int64
	err   error
	kind  string // why it failed, for the note: "timeout", "HTTP 503", "garbage", "unreachable"
	unsup bool   // HTTP 404 or not a dump at all: the target does not serve dumps
}

// dump takes one dump within budget.
func (c *Collector) dump(ctx context.Context, t *targets.Target, u string, budget time.Duration) dumpResult {
	var r dumpResult
	cl, err := c.client(t)
	if err != nil {
		r.err, r.kind = err, "client"
		return r
	}
	ru, err := url.Parse(u)
	if err != nil {
		r.err, r.kind = fmt.Errorf("bad task-dump URL %q: %v", secret.RedactURL(u), err), "client"
		return r
	}
	if q := ru.Query(); !q.Has("timeout_ms") {
		// The reference service gives up on a dump after timeout_ms (and
		// answers 504): ask it to stop where profcap stops waiting.
		q.Set("timeout_ms", strconv.FormatInt(max(10, budget.Milliseconds()), 10))
		ru.RawQuery = q.Encode()
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ru.String(), nil)
	if err != nil {
		r.err, r.kind = fmt.Errorf("bad task-dump URL %q: %v", secret.RedactURL(u), err), "client"
		return r
	}
	t0 := time.Now()
	resp, err := cl.Do(req)
	if err != nil {
		r.took = time.Since(t0)
		r.err, r.kind = describe(u, err, ctx, budget)
		return r
	}
	defer resp.Body.Close()
	t1 := time.Now()
	r.at = t0.Add(t1.Sub(t0) / 2)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		r.took = time.Since(t0)
		r.kind = fmt.Sprintf("HTTP %d", resp.StatusCode)
		r.err = fmt.Errorf("%s: HTTP %d: %s", secret.RedactURL(u), resp.StatusCode, snippet(body))
		if resp.StatusCode == http.StatusNotFound {
			r.unsup = true
			r.err = fmt.Errorf("%s: not served by this target (HTTP 404): %s", secret.RedactURL(u), snippet(body))
		}
		return r
	}
	l := c.opt.Limits
	l.MaxBytes = c.opt.MaxDumpSize
	d, perr := Parse(resp.Body, l)
	r.took = time.Since(t0)
	if perr != nil {
		if ctx.Err() != nil {
			r.err, r.kind = fmt.Errorf("%s: dump not complete within the %s budget of one dump (the service answers too slowly)", secret.RedactURL(u), budget), "timeout"
			return r
		}
		r.kind = "garbage"
		r.err = fmt.Errorf("%s: not a task dump: %w", secret.RedactURL(u), perr)
		if errors.Is(perr, ErrNotDump) {
			r.unsup = true
			r.err = fmt.Errorf("%s: %w", secret.RedactURL(u), perr)
		}
		return r
	}
	r.size = d.Bytes
	r.d = d
	return r
}

func describe(u string, err error, ctx context.Context, budget time.Duration) (error, string) {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	ru := secret.RedactURL(u)
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return fmt.Errorf("%s: no answer within the %s budget of one dump", ru, budget), "timeout"
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", ru, context.Canceled), "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s: connection refused (is the service running?)", ru), "unreachable"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s: connection reset: the service closed the connection mid-request", ru), "unreachable"
	}
	return fmt.Errorf("%s: %v", ru, err), "unreachable"
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return clean(s, 256)
}

// Collect implements collectors.Collector.
func (c *Collector) Collect(ctx context.Context, w *collectors.Window, t *targets.Target, kinds []bundle.Kind, emit collectors.Emit) {
	if len(collectors.Unsupported(c.Name(), kinds, emit, bundle.Await)) == 0 {
		return
	}
	pprof.Do(ctx, pprof.Labels("component", c.Name()), func(ctx context.Context) {
		r := c.collect(ctx, w, t)
		r.Kind, r.Collector = bundle.Await, c.Name()
		emit(r)
	})
}

// pending is a dump whose weight waits for the next dump's time.
type pending struct {
	d   *Dump
	ids map[string]string // task id → name
	at  time.Time         // when the runtime was dumped (estimated)
	t1  time.Time         // when its answer was read
	lo  time.Time         // start of the time it stands for
}

// tally counts what happened to the dumps of one window, for the note.
type tally struct {
	ok, failed, cut int
	why             map[string]int
	firstErr        error
	lastErr         error
	took            []time.Duration
	bytes           int64
	tasks           int
	stretched       int    // gaps lengthened by MaxDuty
	cutFirst        string // what the first cut dump kept
	framesCut       int
	tracesCut       int
	maxTook         time.Duration
}

func (c *Collector) collect(ctx context.Context, w *collectors.Window, t *targets.Target) collectors.Result {
	u, discovered := DumpURL(t)
	if u == "" {
		return collectors.Result{Status: bundle.StatusUnsupported, Err: errors.New("no tokio_taskdump URL configured")}
	}
	var (
		b        *Builder
		sym      Symbolizer
		symDone  bool
		pend     *pending
		first    time.Time // start of the time the first dump stands for
		last     time.Time // end of the time the last dump stands for
		covered  time.Duration
		tl       = tally{why: map[string]int{}}
		interval = c.opt.Interval
		gap      = interval
	)
	start := w.Start
	// The dumps share the window out: between two dumps the time is split
	// at the midpoint of their requests. Where attempts failed between
	// them (or at the window's end) a dump stands for at most one interval
	// beyond its own request: a dead endpoint's time is not made up.
	failed := 0 // attempts failed since the pending dump (or the start)
	away := &absence{tasks: map[string]*absent{}}
	// settle gives the pending dump its weight now that the next dump (at,
	// with its tasks) or the window's end (nextIDs nil) is known.
	settle := func(next time.Time, nextIDs map[string]string) {
		if pend == nil {
			return
		}
		var hi time.Time
		if nextIDs != nil {
			hi = pend.at.Add(next.Sub(pend.at) / 2)
		} else {
			hi = next
		}
		if failed > 0 {
			if lim := pend.t1.Add(interval); lim.Before(hi) {
				hi = lim
			}
		}
		if hi.After(pend.lo) {
			if b == nil {
				b = NewBuilder(serviceName(pend.d, t), c.opt.BuildLimits)
			}
			b.Add(pend.d, hi.Sub(pend.lo), sym)
			// Tasks left out of this dump while alive were scheduled at
			// it (tokio traces idle tasks only): paid when they show up.
			away.settle(pend.ids, hi.Sub(pend.lo), b.AddScheduled)
			covered += hi.Sub(pend.lo)
			if first.IsZero() {
				first = pend.lo
			}
			last = hi
		}
		pend = nil
	}
	var prevAt time.Time
	var prevTook time.Duration
	next := time.Now()
	for {
		if d := time.Until(next); d > 0 {
			tm := time.NewTimer(d)
			select {
			case <-tm.C:
			case <-w.Done():
				tm.Stop()
			case <-ctx.Done():
				tm.Stop()
			}
		}
		if ctx.Err() != nil {
			return collectors.Result{Status: bundle.StatusFailed, Err: fmt.Errorf("capture abandoned: %w", ctx.Err()), Start: w.Start, End: time.Now()}
		}
		if w.Context().Err() != nil {
			break
		}
		// A dump in flight when the window ends was taken inside it; let
		// it finish unless the user interrupted (then drop it).
		dctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(w.Context(), func() {
			if w.Interrupted() {
				cancel()
			}
		})
		t0 := time.Now()
		r := c.dump(dctx, t, u, c.opt.Timeout)
		stop()
		cancel()
		if r.err == nil && !symDone && hasAddr(r.d) {
			symDone = true
			sym = c.symbolizer(t, u, r.d)
		}
		switch {
		case r.err == nil:
			tl.ok++
			tl.took = append(tl.took, r.took)
			tl.maxTook = max(tl.maxTook, r.took)
			tl.bytes += r.size
			tl.tasks += len(r.d.Tasks)
			if r.d.Cut {
				tl.cut++
				if tl.cut == 1 {
					tl.cutFirst = fmt.Sprintf("%d tasks kept of %d", len(r.d.Tasks), r.d.HeaderTasks)
					if r.d.HeaderTasks < 0 {
						tl.cutFirst = fmt.Sprintf("%d tasks kept", len(r.d.Tasks))
					}
				}
			}
			tl.framesCut += r.d.FramesCut
			tl.tracesCut += r.d.TracesCut
			ids := taskIDs(r.d)
			var lo time.Time
			switch {
			case prevAt.IsZero():
				lo = t0.Add(-interval)
			case failed == 0:
				lo = prevAt.Add(r.at.Sub(prevAt) / 2)
			default:
				lo = prevAt.Add(r.at.Sub(prevAt) / 2)
				if lim := t0.Add(-interval); lim.After(lo) {
					lo = lim
				}
			}
			if lo.Before(start) {
				lo = start
			}
			settle(r.at, ids)
			failed = 0
			prevAt = r.at
			pend = &pending{d: r.d, ids: ids, at: r.at, t1: t0.Add(r.took), lo: lo}
		case r.unsup && tl.ok == 0 && tl.failed == 0 && (discovered || r.kind == "HTTP 404"):
			// The first answer says the target serves no dumps there: a
			// 404, or (at a discovered URL) something that is not a dump.
			return collectors.Result{Status: bundle.StatusUnsupported, Err: r.err, Start: t0, End: time.Now()}
		case errors.Is(r.err, context.Canceled) && w.Interrupted():
			// The dump in flight at Ctrl-C: dropped, not a failure, but the
			// last dump does not stand for the time it was in flight.
			failed++
		default:
			failed++
			tl.failed++
			tl.why[r.kind]++
			tl.lastErr = r.err
			if tl.firstErr == nil {
				tl.firstErr = r.err
			}
		}
		// Next dump: one interval after this one started, give or take a
		// quarter at random, or later if dumps take more than MaxDuty of the
		// time; after a failed one at least twice as long as it took (a
		// slow endpoint is asked less). The jitter keeps the dumps out of
		// lockstep with the service's periodic work: at a fixed 100 ms, a
		// task on a 15 ms timer (the reference service's ledger writers)
		// is only ever seen at 3 phases of its cycle (300 ms = 20 cycles).
		gap = time.Duration(float64(interval) * (0.75 + 0.5*rand.Float64()))
		switch {
		case r.err == nil && prevTook > 0:
			if g := time.Duration(float64(min(r.took, prevTook)) / c.opt.MaxDuty); g > gap {
				gap = g
				tl.stretched++
			}
		case r.err != nil:
			gap = max(gap, 2*r.took)
		}
		if r.err == nil {
			prevTook = r.took
		}
		next = t0.Add(gap)
	}
	end := w.Ended()
	if end.IsZero() {
		end = time.Now()
	}
	settle(end, nil)
	if b == nil || b.Dumps == 0 {
		err := tl.firstErr
		if err == nil {
			err = errors.New("the window ended before the first dump")
		}
		if tl.failed > 1 {
			err = fmt.Errorf("%d dumps, none usable (%s); first: %w", tl.failed, whyList(tl.why), err)
		}
		return collectors.Result{Status: bundle.StatusFailed, Err: err, Start: w.Start, End: time.Now()}
	}
	p := b.Profile(first, last, interval)
	p.Comments = append(p.Comments, fmt.Sprintf("task dumps of %s: %d dumps, %d task observations, %.1f task-seconds", secret.RedactURL(u), b.Dumps, b.Tasks, float64(b.Total)/1e9))
	if err := p.CheckValid(); err != nil {
		return collectors.Result{Status: bundle.StatusFailed, Err: fmt.Errorf("building the await profile: %w", err), Start: first, End: last}
	}
	res := collectors.Result{Profile: p, Status: bundle.StatusOK, Start: first, End: last}
	win := end.Sub(w.Start)
	if win > 0 && float64(covered) < bundle.MinCoverage*float64(win) && tl.failed > 0 {
		res.Status = bundle.StatusPartial
		res.Err = fmt.Errorf("the dumps stand for %.0f%% of the window: %d of %d failed (%s); last: %w",
			100*float64(covered)/float64(win), tl.failed, tl.ok+tl.failed, whyList(tl.why), tl.lastErr)
	}
	res.Note = note(tl, b, c.opt, interval)
	return res
}

func serviceName(d *Dump, t *targets.Target) string {
	if d != nil && d.Service != "" {
		return d.Service
	}
	return t.Name
}

func whyList(why map[string]int) string {
	var ks []string
	for k := range why {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var out []string
	for _, k := range ks {
		out = append(out, fmt.Sprintf("%d %s", why[k], k))
	}
	return strings.Join(out, ", ")
}

func note(tl tally, b *Builder, opt Options, interval time.Duration) string {
	var s strings.Builder
	took := slices.Clone(tl.took)
	slices.Sort(took)
	med := took[len(took)/2]
	fmt.Fprintf(&s, "%d task dumps, one per %s (each %s median, %s at most, %s on average); %d task observations (%d untraced, %d scheduled at the dump)",
		tl.ok, interval, med.Round(time.Millisecond), tl.maxTook.Round(time.Millisecond), humanBytes(tl.bytes/int64(tl.ok)), b.Tasks, b.Untraced, b.Scheduled)
	if tl.failed > 0 {
		fmt.Fprintf(&s, "; %d skipped (%s): a skipped dump's time goes to its neighbours, at most one interval each", tl.failed, whyList(tl.why))
	}
	if tl.stretched > 0 {
		fmt.Fprintf(&s, "; %d gaps lengthened: dumps took over %.0f%% of the time between them", tl.stretched, opt.MaxDuty*100)
	}
	if tl.cut > 0 {
		fmt.Fprintf(&s, "; %d dumps cut at the %s size limit, each without the tasks after the cut (the first: %s)", tl.cut, humanBytes(opt.MaxDumpSize), tl.cutFirst)
	}
	if tl.framesCut > 0 || tl.tracesCut > 0 {
		fmt.Fprintf(&s, "; %d frames and %d traces over the parser's limits dropped", tl.framesCut, tl.tracesCut)
	}
	if b.FrameLimitHit {
		fmt.Fprintf(&s, "; more than %d distinct frames: the rest are one frame", b.l.MaxFrames)
	}
	if b.SampleLimitHit {
		fmt.Fprintf(&s, "; more than %d distinct task stacks: later ones are kept without task.id", b.l.MaxSamples)
	}
	return s.String()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// absence tracks tasks left out of dumps: a task seen before and missing
// from a dump is owed that dump's weight, added as scheduled time when it
// shows up again (one that does not has completed). tokio leaves out tasks
// that are not idle at the dump: woken and waiting in a worker's LIFO slot.
type absence struct {
	tasks map[string]*absent
}

type absent struct {
	name   string
	owed   time.Duration
	misses int
}

const (
	maxMisses  = 10      // a task missing from this many dumps in a row is taken for completed
	maxTracked = 200_000 // tasks tracked at once
)

func (a *absence) settle(ids map[string]string, w time.Duration, pay func(id, name string, w time.Duration)) {
	for id, st := range a.tasks {
		if _, ok := ids[id]; !ok {
			st.owed += w
			if st.misses++; st.misses > maxMisses {
				delete(a.tasks, id)
			}
		}
	}
	for id, name := range ids {
		if st := a.tasks[id]; st != nil {
			if st.owed > 0 {
				pay(id, st.name, st.owed)
			}
			st.owed, st.misses = 0, 0
		} else if len(a.tasks) < maxTracked {
			a.tasks[id] = &absent{name: name}
		}
	}
}

func taskIDs(d *Dump) map[string]string {
	m := make(map[string]string, len(d.Tasks))
	for _, t := range d.Tasks {
		m[t.ID] = t.Name
	}
	return m
}

func hasAddr(d *Dump) bool {
	for _, t := range d.Tasks {
		for _, tr := range t.Traces {
			for _, f := range tr {
				if f.Func == "" && f.Addr != 0 {
					return true
				}
			}
		}
	}
	return false
}
