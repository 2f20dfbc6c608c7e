package collectors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/pprofutil"
	"github.com/profcap/profcap/targets"
)

// PprofOptions configure the pprof HTTP collector.
type PprofOptions struct {
	// Transport is the base of every target's HTTP client (each target adds
	// its own TLS settings and credentials); nil means profcap's defaults.
	// Clients have no overall timeout: every request carries its own
	// deadline from the window.
	Transport *http.Transport
	// MaxProfileSize caps one response body; 0 means 256 MiB.
	MaxProfileSize int64
	// SnapshotTimeout bounds requests for instant profiles (heap, goroutine,
	// the ends of delta profiles); 0 means 15s.
	SnapshotTimeout time.Duration
}

// DefaultMaxProfileSize is the default cap on one profile response body.
const DefaultMaxProfileSize = 256 << 20

// Pprof captures profiles from pprof HTTP endpoints: Go's net/http/pprof,
// fgprof, and servers that serve the same paths (pprof-rs, jemalloc_pprof).
type Pprof struct {
	opt     PprofOptions
	mu      sync.Mutex
	clients map[*targets.Target]*http.Client
}

var _ Collector = (*Pprof)(nil)

// NewPprof returns a pprof collector.
func NewPprof(opt PprofOptions) *Pprof {
	if opt.Transport == nil {
		opt.Transport = &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout: 5 * time.Second,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	if opt.MaxProfileSize <= 0 {
		opt.MaxProfileSize = DefaultMaxProfileSize
	}
	if opt.SnapshotTimeout <= 0 {
		opt.SnapshotTimeout = 15 * time.Second
	}
	return &Pprof{opt: opt, clients: map[*targets.Target]*http.Client{}}
}

// client returns the HTTP client for t, with its TLS settings and
// credentials (read from the environment or files, never logged).
func (c *Pprof) client(t *targets.Target) (*http.Client, error) {
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

// Name implements Collector.
func (c *Pprof) Name() string { return "pprof" }

// pprofKinds are the kinds a pprof base URL may serve, with how each is taken.
var pprofKinds = []bundle.Kind{bundle.CPU, bundle.Wall, bundle.Heap, bundle.Allocs, bundle.Goroutine, bundle.Mutex, bundle.Block}

// Kinds implements Collector.
func (c *Pprof) Kinds(t *targets.Target) []bundle.Kind {
	if t.Pprof == "" {
		return nil
	}
	return pprofKinds
}

// endpoint returns the URL path for a kind below the base URL.
func endpoint(base string, k bundle.Kind) string {
	base = strings.TrimRight(base, "/")
	switch k {
	case bundle.CPU:
		return base + "/profile"
	case bundle.Wall:
		return fgprofURL(base)
	default:
		return base + "/" + string(k)
	}
}

// fgprofURL is where fgprof is usually mounted next to net/http/pprof:
// /debug/fgprof beside /debug/pprof, else BASE/fgprof.
func fgprofURL(base string) string {
	if b, ok := strings.CutSuffix(base, "/pprof"); ok {
		return b + "/fgprof"
	}
	return base + "/fgprof"
}

// Probe implements Collector: it asks the index page which profiles exist
// and checks fgprof with a request it rejects at once (seconds=0).
func (c *Pprof) Probe(ctx context.Context, t *targets.Target) []Availability {
	if t.Pprof == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out := make([]Availability, 0, len(pprofKinds))
	index, status, err := c.get(ctx, t, strings.TrimRight(t.Pprof, "/")+"/", 1<<20)
	if err != nil {
		for _, k := range pprofKinds {
			out = append(out, Availability{Kind: k, Collector: c.Name(), Reason: err.Error()})
		}
		return out
	}
	hasIndex := status == http.StatusOK && bytes.Contains(index, []byte("profile"))
	for _, k := range pprofKinds {
		a := Availability{Kind: k, Collector: c.Name()}
		switch {
		case k == bundle.Wall:
			_, st, err := c.get(ctx, t, fgprofURL(t.Pprof)+"?seconds=0&format=pprof", 4096)
			switch {
			case err != nil:
				a.Reason = err.Error()
			case st == http.StatusNotFound:
				a.Reason = "fgprof is not mounted at " + fgprofURL(t.Pprof)
			default:
				a.Available, a.Reason = true, "fgprof at "+fgprofURL(t.Pprof)
			}
		case hasIndex:
			name := string(k)
			if k == bundle.CPU {
				name = "profile"
			}
			a.Available = bytes.Contains(index, []byte(">"+name+"<")) || bytes.Contains(index, []byte("href=\""+name+"?")) || bytes.Contains(index, []byte("href='"+name+"?"))
			if !a.Available {
				a.Reason = "not listed on the pprof index page"
			}
		default:
			// No Go-style index (pprof-rs, jemalloc_pprof): try a snapshot
			// endpoint directly; duration endpoints are tried when capturing.
			if k == bundle.CPU {
				a.Available, a.Reason = true, "no index page; tried when capturing"
				break
			}
			st, err := c.status(ctx, t, endpoint(t.Pprof, k))
			switch {
			case err != nil:
				a.Reason = err.Error()
			case st == http.StatusOK:
				a.Available = true
			default:
				a.Reason = fmt.Sprintf("HTTP %d", st)
			}
		}
		if k == bundle.CPU && a.Available {
			a.Reason = joinReason(a.Reason, pprofTakesCPU(t))
		}
		out = append(out, a)
	}
	return out
}

// pprofTakesCPU says why the endpoint, not a native collector, takes the
// cpu of a target that has a PID too (see DefersToPprof), or "".
func pprofTakesCPU(t *targets.Target) string {
	if why := GoWithoutSymbols(t); why != "" {
		return why + ": the endpoint names its functions, native collectors could not; cpu is taken from here"
	}
	return ""
}

func joinReason(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// Collect implements Collector.
func (c *Pprof) Collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	// One quick request first: a target that is down fails every kind now,
	// not at the end of the window.
	const check = 5 * time.Second
	rctx, cancel := context.WithTimeout(ctx, check)
	_, _, err := c.get(rctx, t, strings.TrimRight(t.Pprof, "/")+"/", 1<<20)
	timedOut := rctx.Err() == context.DeadlineExceeded
	cancel()
	if err != nil {
		if timedOut && ctx.Err() == nil {
			err = fmt.Errorf("%s: no response within %s (the target accepts connections but does not answer)", redact(strings.TrimRight(t.Pprof, "/")+"/"), check)
		}
		now := time.Now()
		for _, k := range kinds {
			emit(Result{Kind: k, Collector: c.Name(), Status: bundle.StatusFailed, Err: err, Start: now, End: now})
		}
		return
	}
	var wg sync.WaitGroup
	for _, k := range kinds {
		wg.Add(1)
		go func(k bundle.Kind) {
			defer wg.Done()
			var r Result
			switch k {
			case bundle.CPU, bundle.Wall:
				r = c.sliced(ctx, w, t, k)
			case bundle.Heap, bundle.Goroutine:
				r = c.atEnd(ctx, w, t, k)
			case bundle.Allocs, bundle.Mutex, bundle.Block:
				r = c.delta(ctx, w, t, k)
			default:
				r = Result{Status: bundle.StatusUnsupported, Err: fmt.Errorf("the pprof collector does not capture %s profiles", k)}
			}
			r.Kind, r.Collector = k, c.Name()
			if k == bundle.CPU && r.Profile != nil {
				r.Note = joinReason(r.Note, pprofTakesCPU(t))
			}
			emit(r)
		}(k)
	}
	wg.Wait()
}

// sliced captures a duration profile (cpu, wall) as consecutive requests of
// at most w.Slice each, merged. A window that ends early loses only the
// request in flight, which the server cannot be asked to cut short.
func (c *Pprof) sliced(ctx context.Context, w *Window, t *targets.Target, k bundle.Kind) Result {
	var parts []*profile.Profile
	var start, end time.Time
	var lastErr error
	sliceSec := int(math.Max(1, math.Round(w.Slice.Seconds())))
	// sampled is what the server profiled (the seconds asked of the kept
	// slices); cost the longest a server took beyond them to answer, when
	// it builds and encodes the profile with the profiler stopped.
	// pprof-rs symbolises every report: measured on refsvc, 6 s for a
	// fresh profiling build's first (its DWARF caches), then 0.5-0.9 s on
	// a loaded machine; Go's net/http/pprof takes milliseconds.
	var sampled, cost, lastOver time.Duration
	slow := false
	for {
		rem := w.Remaining()
		if rem < 200*time.Millisecond {
			break
		}
		// Whole seconds only: the last slice is rounded up, so the
		// profile covers the window's end (and at most a second past it)
		// rather than stopping up to a second short. What the last request
		// cost beyond its seconds (pprof-rs: up to a second) is taken off
		// first, or the answer would come that much later still.
		sec := int(math.Ceil((rem - lastOver).Seconds()))
		// The first slice is one second whatever --slice says, so a
		// capture interrupted early still has CPU data from every target.
		limit := sliceSec
		switch {
		case len(parts) == 0:
			limit = 1
		case slow:
			// Each request costs a gap in the profile: take the rest of
			// the window in one.
			limit = sec
		}
		if sec > limit {
			sec = limit
		}
		if sec < 1 {
			sec = 1
		}
		u := endpoint(t.Pprof, k) + fmt.Sprintf("?seconds=%d", sec)
		if k == bundle.Wall {
			u += "&format=pprof"
		}
		// The request may outlive the slice by the server's encoding time;
		// give it the slice × 1.5 plus slack, as go tool pprof does.
		timeout := time.Duration(sec)*time.Second*3/2 + 10*time.Second
		// A window ended early (workload exit, Ctrl-C) cancels the slice in
		// flight; ctx (abort) cancels everything.
		rctx, cancel := context.WithTimeout(ctx, timeout)
		stop := context.AfterFunc(w.Context(), func() {
			if w.Interrupted() {
				cancel()
			}
		})
		t0 := time.Now()
		p, err := c.fetch(rctx, t, u, timeout)
		stop()
		cancel()
		if err != nil {
			if w.Interrupted() && ctx.Err() == nil && rctx.Err() != nil {
				break // the slice in flight is lost; keep the others
			}
			if len(parts) == 0 {
				return failure(err, t0)
			}
			lastErr = err
			break
		}
		if start.IsZero() {
			start = t0
		}
		end = time.Now()
		labelSlice(p, t0.Sub(w.Start), sec)
		parts = append(parts, p)
		asked := time.Duration(sec) * time.Second
		sampled += asked
		over := end.Sub(t0) - asked
		cost, lastOver = max(cost, over), max(0, over)
		slow = slow || over > max(250*time.Millisecond, asked/10)
		if w.Remaining() == 0 {
			break
		}
	}
	if len(parts) == 0 {
		err := errors.New("the window ended before a full slice was captured")
		if r := w.EndedEarly(); r != "" {
			err = fmt.Errorf("the window ended (%s) before the first %ds slice was complete", r, sliceSec)
		}
		return Result{Status: bundle.StatusFailed, Err: err, Start: w.Start, End: time.Now()}
	}
	merged, err := pprofutil.Merge(parts...)
	if err != nil {
		return Result{Status: bundle.StatusFailed, Err: fmt.Errorf("merging %d slices: %w", len(parts), err), Start: start, End: end}
	}
	merged.TimeNanos = start.UnixNano()
	merged.DurationNanos = end.Sub(start).Nanoseconds()
	r := Result{Profile: merged, Status: bundle.StatusOK, Start: start, End: end}
	if lastErr != nil {
		r.Status, r.Err = bundle.StatusPartial, fmt.Errorf("after %d slices: %w", len(parts), lastErr)
	} else if reason := w.EndedEarly(); reason != "" && end.Before(w.Deadline) {
		r.Note = fmt.Sprintf("window ended early (%s); %d slices kept", reason, len(parts))
	}
	if span := end.Sub(start); span > 0 && float64(sampled) < 0.95*float64(span) {
		note := fmt.Sprintf("the endpoint profiled %s of the %s these %d requests took: each cost the server up to %s more to build its profile (pprof-rs symbolises every report, its first one slowest), time not sampled",
			sampled.Round(100*time.Millisecond), span.Round(100*time.Millisecond), len(parts), cost.Round(100*time.Millisecond))
		r.Note = strings.TrimPrefix(r.Note+"; "+note, "; ")
	}
	return r
}

// atEnd takes an instant profile when the window ends.
func (c *Pprof) atEnd(ctx context.Context, w *Window, t *targets.Target, k bundle.Kind) Result {
	select {
	case <-w.Done():
	case <-ctx.Done():
		return Result{Status: bundle.StatusFailed, Err: ctx.Err(), Start: w.Start, End: time.Now()}
	}
	t0 := time.Now()
	p, err := c.fetch(ctx, t, endpoint(t.Pprof, k), c.opt.SnapshotTimeout)
	if err != nil {
		return failure(err, t0)
	}
	end := time.Now()
	r := Result{Profile: p, Status: bundle.StatusOK, Start: t0, End: end}
	if k == bundle.Heap {
		if n := trimAllocatorFrames(p); n > 0 {
			r.Note = fmt.Sprintf("jemalloc heap profile: the allocator's own frames (jemalloc's prof_backtrace…, _rjem_…, the Rust global-allocator glue) were cut from the top of %d stacks, so each ends where the program allocated", n)
		}
	}
	return r
}

// jemallocFrame matches the frames of jemalloc's heap sampling and of the
// Rust global allocator that sit above every allocation site in a
// jemalloc_pprof profile (measured on refsvc: prof_backtrace_impl ←
// _rjem_je_prof_backtrace ← _rjem_je_prof_tctx_create ← prof_alloc_prep ←
// imalloc_body ← imalloc ← _rjem_je_malloc_default ← <Jemalloc as
// GlobalAlloc>::alloc ← __rustc::__rust_alloc ← alloc::alloc::alloc ←
// <alloc::alloc::Global>::alloc_impl… on top of every stack). They are
// the profiler's machinery, as mallocgc is for a Go heap profile (whose
// stacks start at its caller): with them every stack's leaf, and so the
// top of every "self" ranking, is prof_backtrace_impl.
var jemallocFrame = regexp.MustCompile(`^(prof_backtrace_impl|prof_alloc_prep|imalloc|imalloc_body|ialloc|iralloc|irallocx_prof|irallocx_prof_sample|ipalloc|do_rallocx|(_rjem_|je_|_rjem_je_).*|(__rustc::)?__rust_(alloc|realloc|alloc_zeroed|dealloc)|__rdl_.*|<tikv_jemallocator::Jemalloc as core::alloc::global::GlobalAlloc>::.*|alloc::alloc::(alloc|alloc_zeroed|realloc|dealloc|exchange_malloc)|<alloc::alloc::Global( as core::alloc::Allocator)?>::.*)$`)

// trimAllocatorFrames cuts jemallocFrame frames from the leaf end of every
// stack of a jemalloc_pprof profile (one whose stacks start in jemalloc's
// prof_backtrace), keeping at least one frame, and returns how many stacks
// it cut. Other profiles are left alone.
func trimAllocatorFrames(p *profile.Profile) int {
	jemalloc := false
	for _, f := range p.Function {
		if f.Name == "prof_backtrace_impl" || f.Name == "_rjem_je_prof_backtrace" {
			jemalloc = true
			break
		}
	}
	if !jemalloc {
		return 0
	}
	isAlloc := func(ln profile.Line) bool {
		return ln.Function != nil && jemallocFrame.MatchString(ln.Function.Name)
	}
	// Locations are shared between samples: a cut one is a new location.
	cut := map[*profile.Location]*profile.Location{}
	nextID := uint64(0)
	for _, l := range p.Location {
		nextID = max(nextID, l.ID)
	}
	trimmed := 0
	for _, s := range p.Sample {
		i := 0 // whole leaf locations of allocator lines; never the last
		for i < len(s.Location)-1 && len(s.Location[i].Line) > 0 && !slices.ContainsFunc(s.Location[i].Line, func(ln profile.Line) bool { return !isAlloc(ln) }) {
			i++
		}
		if len(s.Location) == 0 {
			continue
		}
		l := s.Location[i]
		n := 0 // its innermost lines that are the allocator's
		for n < len(l.Line) && isAlloc(l.Line[n]) {
			n++
		}
		if n == len(l.Line) {
			n = 0 // the last location: kept whole
		}
		if i == 0 && n == 0 {
			continue
		}
		if n > 0 {
			if cut[l] == nil {
				nextID++
				c := &profile.Location{ID: nextID, Mapping: l.Mapping, Address: l.Address, Line: slices.Clone(l.Line[n:]), IsFolded: l.IsFolded}
				cut[l] = c
				p.Location = append(p.Location, c)
			}
			l = cut[l]
		}
		s.Location = append([]*profile.Location{l}, s.Location[i+1:]...)
		trimmed++
	}
	// Drop the locations and functions no sample references any more.
	used := map[*profile.Location]bool{}
	for _, s := range p.Sample {
		for _, l := range s.Location {
			used[l] = true
		}
	}
	p.Location = slices.DeleteFunc(p.Location, func(l *profile.Location) bool { return !used[l] })
	fns := map[*profile.Function]bool{}
	for _, l := range p.Location {
		for _, ln := range l.Line {
			fns[ln.Function] = true
		}
	}
	p.Function = slices.DeleteFunc(p.Function, func(f *profile.Function) bool { return !fns[f] })
	return trimmed
}

// delta takes a cumulative profile (allocs, mutex, block) at the window's
// start and end and keeps the difference: what happened inside the window.
// Doing the subtraction here, as net/http/pprof does for ?seconds=N, means a
// window that ends early still has its delta.
func (c *Pprof) delta(ctx context.Context, w *Window, t *targets.Target, k bundle.Kind) Result {
	t0 := time.Now()
	p0, err := c.fetch(ctx, t, endpoint(t.Pprof, k), c.opt.SnapshotTimeout)
	if err != nil {
		return failure(err, t0)
	}
	select {
	case <-w.Done():
	case <-ctx.Done():
		return Result{Status: bundle.StatusFailed, Err: ctx.Err(), Start: t0, End: time.Now()}
	}
	p1, err := c.fetch(ctx, t, endpoint(t.Pprof, k), c.opt.SnapshotTimeout)
	if err != nil {
		return failure(fmt.Errorf("at the window's end: %w", err), t0)
	}
	end := time.Now()
	d, err := pprofutil.Delta(p0, p1)
	if err != nil {
		return Result{Status: bundle.StatusFailed, Err: err, Start: t0, End: end}
	}
	d.TimeNanos = t0.UnixNano()
	d.DurationNanos = end.Sub(t0).Nanoseconds()
	r := Result{Profile: d, Status: bundle.StatusOK, Start: t0, End: end}
	if len(d.Sample) == 0 && (k == bundle.Mutex || k == bundle.Block) {
		r.Note = fmt.Sprintf("no %s events in the window; if the service never calls runtime.Set%sProfile%s, %s profiling is off", k, map[bundle.Kind]string{bundle.Mutex: "Mutex", bundle.Block: "Block"}[k], map[bundle.Kind]string{bundle.Mutex: "Fraction", bundle.Block: "Rate"}[k], k)
	}
	return r
}

func failure(err error, t0 time.Time) Result {
	st := bundle.StatusFailed
	if errors.Is(err, errUnsupported) {
		st = bundle.StatusUnsupported
	}
	return Result{Status: st, Err: err, Start: t0, End: time.Now()}
}

var (
	errUnsupported = errors.New("not served")
	errBodyCut     = errors.New("response cut short")
)

// httpStatusError is a non-200 answer.
type httpStatusError struct {
	url    string
	status int
	body   string
}

func (e *httpStatusError) Error() string {
	msg := fmt.Sprintf("%s: HTTP %d", redact(e.url), e.status)
	if e.status == http.StatusNotFound {
		u := redact(e.url)
		if i := strings.IndexByte(u, '?'); i >= 0 {
			u = u[:i]
		}
		return u + ": not served by this target (HTTP 404)"
	}
	if e.body != "" {
		msg += ": " + e.body
	}
	return msg
}

func (e *httpStatusError) Is(target error) bool {
	return target == errUnsupported && e.status == http.StatusNotFound
}

// fetch GETs u and parses the body as a profile.
func (c *Pprof) fetch(ctx context.Context, t *targets.Target, u string, timeout time.Duration) (*profile.Profile, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, status, err := c.get(ctx, t, u, c.opt.MaxProfileSize)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			if errors.Is(err, errBodyCut) {
				return nil, fmt.Errorf("%s: response not complete within %s (the target answers too slowly)", redact(u), timeout.Round(time.Second))
			}
			return nil, fmt.Errorf("%s: no response within %s", redact(u), timeout.Round(time.Second))
		}
		return nil, err
	}
	if status != http.StatusOK {
		return nil, &httpStatusError{url: u, status: status, body: snippet(body)}
	}
	if len(body) == 0 {
		return nil, fmt.Errorf("%s: empty response", redact(u))
	}
	// The body is bounded; what it inflates to is bounded too, and a
	// profile with more samples than profcap keeps is cut before parsing.
	p, _, err := pprofutil.ParseLimited(body, c.opt.MaxProfileSize, pprofutil.DefaultLimits)
	if pprofutil.IsTooLarge(err) {
		return nil, fmt.Errorf("%s: %v (--max-profile-size)", redact(u), err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: not a pprof profile: %v (starts %q)", redact(u), err, snippet(body[:min(len(body), 32)]))
	}
	if err := p.CheckValid(); err != nil {
		return nil, fmt.Errorf("%s: invalid pprof profile: %v", redact(u), err)
	}
	return p, nil
}

// status GETs u and returns the answer's status, reading none of its body
// (a heap profile of jemalloc_pprof is tens of KB: a probe needs only to
// know that it is served).
func (c *Pprof) status(ctx context.Context, t *targets.Target, u string) (int, error) {
	cl, err := c.client(t)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("bad pprof URL %q: %v", redact(u), err)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, describeNetError(u, err)
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// get GETs u and returns at most limit bytes of the body; a longer body is
// an error rather than a truncated profile.
func (c *Pprof) get(ctx context.Context, t *targets.Target, u string, limit int64) ([]byte, int, error) {
	cl, err := c.client(t)
	if err != nil {
		return nil, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("bad pprof URL %q: %v", redact(u), err)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, 0, describeNetError(u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("%s: %w: %w", redact(u), errBodyCut, ctx.Err())
		}
		return nil, 0, describeNetError(u, fmt.Errorf("reading body: %w", err))
	}
	if int64(len(body)) > limit {
		return nil, 0, fmt.Errorf("%s: response larger than the %s limit (--max-profile-size)", redact(u), humanBytes(limit))
	}
	return body, resp.StatusCode, nil
}

func describeNetError(u string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s: connection refused (is the service running?)", redact(u))
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fmt.Errorf("%s: connection reset: the target closed the connection mid-request (did it exit or restart?)", redact(u))
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", redact(u), context.Canceled)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: no response: %w", redact(u), context.DeadlineExceeded)
	}
	return fmt.Errorf("%s: %v", redact(u), err)
}

// redact drops user:password from a URL for messages.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		return u
	}
	return p.Redacted()
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' {
			return ' '
		}
		return r
	}, s)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// labelSlice says on every sample of one slice when in the window it was
// taken: the whole second the slice started in and its length in seconds
// (bundle.SecondLabel, SecondsLabel), so the report can draw the window's
// timeline from sliced profiles.
func labelSlice(p *profile.Profile, from time.Duration, sec int) {
	first := int64(max(0, from.Round(time.Second)/time.Second))
	for _, s := range p.Sample {
		if s.NumLabel == nil {
			s.NumLabel = map[string][]int64{}
		}
		if s.NumUnit == nil {
			s.NumUnit = map[string][]string{}
		}
		s.NumLabel[bundle.SecondLabel] = []int64{first}
		s.NumUnit[bundle.SecondLabel] = []string{bundle.SecondUnit}
		s.NumLabel[bundle.SecondsLabel] = []int64{int64(sec)}
		s.NumUnit[bundle.SecondsLabel] = []string{bundle.SecondUnit}
	}
}
