package pyroscope

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"
	typesv1 "github.com/grafana/pyroscope/api/gen/proto/go/types/v1"

	"github.com/profcap/profcap/bundle"
)

// Defaults of Options.
const (
	// DefaultTries bounds the attempts per profile: with the backoff below a
	// server that stays down costs about 3.5 s per profile, and a short
	// restart or a load balancer's failover (seconds) is ridden out.
	DefaultTries      = 4
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 4 * time.Second
	// DefaultTimeout bounds one attempt. Profiles are at most a few MiB;
	// a minute covers a slow uplink without hanging on a dead one.
	DefaultTimeout = 60 * time.Second
	// DefaultConcurrency is how many profiles are in flight at once: enough
	// to hide the round trip for bundles of hundreds of targets, few
	// enough not to trip a server's per-tenant rate limit.
	DefaultConcurrency = 4
)

// Options configure a push.
type Options struct {
	// Server is the Pyroscope base URL (http:// or https://, optionally
	// with a path prefix). Credentials in it (user:password@) are used as
	// basic auth and are never recorded or printed.
	Server      string
	Credentials Credentials
	// HTTPClient supplies the transport (TLS, proxy); nil means Go's
	// default transport. Credentials are added by Push, and only to
	// requests to the server's own host.
	HTTPClient *http.Client
	// Force pushes profiles pushed.json says already went to this server.
	Force bool
	// DryRun prepares every payload and reports what would be sent,
	// without contacting the server or writing pushed.json. Server may be
	// empty then.
	DryRun bool

	Concurrency int           // profiles in flight; 0 means DefaultConcurrency
	Tries       int           // attempts per profile; 0 means DefaultTries
	MinBackoff  time.Duration // first wait between attempts; 0 means DefaultMinBackoff
	MaxBackoff  time.Duration // longest wait; 0 means DefaultMaxBackoff
	Timeout     time.Duration // one attempt; 0 means DefaultTimeout
	UserAgent   string        // e.g. "profcap/1.2.3"

	// Progress, if set, is called once per profile as its outcome is known
	// (calls are serialized).
	Progress func(Result)
}

// Status is the outcome for one profile.
type Status string

// Statuses of a Result.
const (
	StatusPushed   Status = "pushed"
	StatusSkipped  Status = "skipped"    // pushed.json says it already went
	StatusDryRun   Status = "would push" // dry run
	StatusFailed   Status = "failed"
	StatusNotTried Status = "not tried" // the push stopped first (cancelled, credentials rejected)
)

// Result is one profile's outcome.
type Result struct {
	Item
	Status Status
	Bytes  int // gzipped pprof payload; 0 when not prepared
	Tries  int
	Err    error
}

// Report is the outcome of a push.
type Report struct {
	Server  string // redacted base URL
	Tenant  string
	Results []Result // in manifest order
	// StateErr is set when pushed.json could not be written: the push
	// itself went through, but a re-run would send the profiles again.
	StateErr error
}

// Count returns how many results have status s.
func (r *Report) Count(s Status) int {
	n := 0
	for _, res := range r.Results {
		if res.Status == s {
			n++
		}
	}
	return n
}

// PushError is returned when some profiles did not go. The bundle is left
// as it was (pushed.json lists the ones that went), so the push can be run
// again and sends only the rest.
type PushError struct {
	Server string   // redacted
	Total  int      // profiles considered
	Failed []Result // failed or not tried
	// Cause is what stopped the whole push early (an *AuthError, a
	// *FatalError, the context's cause), if anything.
	Cause error
}

func (e *PushError) Error() string {
	var b strings.Builder
	var ae *AuthError
	var fe *FatalError
	stoppedBy := "interrupted"
	switch {
	case errors.As(e.Cause, &ae):
		b.WriteString(ae.Error()) // names the server
		stoppedBy = "refused"
	case errors.As(e.Cause, &fe):
		b.WriteString(fe.Error()) // names the server
		stoppedBy = "stopped"
	case e.Cause != nil:
		fmt.Fprintf(&b, "pushing to %s: %v", e.Server, e.Cause)
	default:
		fmt.Fprintf(&b, "pushing to %s", e.Server)
	}
	fmt.Fprintf(&b, "; %d of %d profiles did not go", len(e.Failed), e.Total)
	// Profiles that failed alike are listed together.
	var msgs []string
	names := map[string][]string{}
	stopped := 0
	for _, r := range e.Failed {
		if r.Status != StatusFailed {
			continue
		}
		if e.Cause != nil && (errors.Is(r.Err, e.Cause) || r.Err.Error() == e.Cause.Error()) {
			stopped++
			continue
		}
		msg := r.Err.Error()
		if names[msg] == nil {
			msgs = append(msgs, msg)
		}
		names[msg] = append(names[msg], r.Target+"/"+r.Kind)
	}
	sep := ": "
	for i, msg := range msgs {
		if i == maxListed {
			fmt.Fprintf(&b, "; %d more errors", len(msgs)-i)
			break
		}
		ns := names[msg]
		list := strings.Join(ns[:min(len(ns), maxListed)], ", ")
		if len(ns) > maxListed {
			list += fmt.Sprintf(" and %d more", len(ns)-maxListed)
		}
		fmt.Fprintf(&b, "%s%s (%s)", sep, list, msg)
		sep = "; "
	}
	if stopped > 0 {
		fmt.Fprintf(&b, "%s%d %s", sep, stopped, stoppedBy)
		sep = ", "
	}
	if n := countStatus(e.Failed, StatusNotTried); n > 0 {
		fmt.Fprintf(&b, "%s%d not tried", sep, n)
	}
	b.WriteString(" (run the push again to send only these)")
	return b.String()
}

// maxListed bounds the profiles and errors an error message lists.
const maxListed = 8

func (e *PushError) Unwrap() error { return e.Cause }

func countStatus(rs []Result, s Status) int {
	n := 0
	for _, r := range rs {
		if r.Status == s {
			n++
		}
	}
	return n
}

// HTTPError is a response other than success from the server.
type HTTPError struct {
	Server  string // redacted
	Status  int    // HTTP status
	Message string // the server's message
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// FatalError is a failure every other profile would meet too (a
// certificate the client does not trust, a host name that does not
// resolve): the push stops at the first one.
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// isFatal reports whether err ends the whole push.
func isFatal(err error) bool {
	var ae *AuthError
	var fe *FatalError
	return errors.As(err, &ae) || errors.As(err, &fe)
}

// AuthError is a 401 or 403 from the server: the credentials are missing or
// wrong, so the push stops.
type AuthError struct {
	HTTPError
	Credentials string // what was sent, without secrets
}

func (e *AuthError) Error() string {
	hint := "check the bearer token (" + EnvToken + ") or the user and password (" + EnvUser + ", " + EnvPassword + ")"
	switch {
	case strings.HasPrefix(e.Credentials, "bearer token"):
		hint = "check the token (" + EnvToken + " or the file named by --token-file)"
	case strings.HasPrefix(e.Credentials, "basic auth"):
		hint = "check the user and password (" + EnvUser + ", " + EnvPassword + ")"
	case e.Credentials == "no credentials":
		hint = "it needs credentials: set " + EnvToken + " (or " + EnvUser + " and " + EnvPassword + ")"
	}
	if e.Status == http.StatusForbidden {
		hint += " and the tenant (" + EnvTenant + ")"
	}
	return fmt.Sprintf("%s rejected the request with %s; %s", e.Server, e.HTTPError.Error(), hint)
}

// Push sends the profiles of the bundle in dir to the server in opts. It
// returns a report of every profile and, when some did not go, a
// *PushError. Profiles already pushed to the same server and tenant
// (pushed.json) are skipped unless opts.Force. Only pushed.json is written
// in the bundle; nothing else changes.
func Push(ctx context.Context, dir string, opts Options) (*Report, error) {
	m, err := bundle.Read(dir)
	if err != nil {
		return nil, err
	}
	items, err := Plan(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	p, err := newPusher(opts)
	if err != nil {
		return nil, err
	}
	rep := &Report{Server: p.server, Tenant: p.creds.Tenant, Results: make([]Result, len(items))}
	var state *State
	if p.server != "" {
		state, err = ReadState(dir)
		if err != nil {
			if !opts.Force {
				return nil, fmt.Errorf("%w (remove it, or push with --force to send everything again)", err)
			}
			state = &State{Schema: StateSchema}
		}
	}
	var todo []int
	for i, it := range items {
		rep.Results[i] = Result{Item: it}
		if state != nil && !opts.Force && state.Pushed(p.server, p.creds.Tenant, it.ID) {
			rep.Results[i].Status = StatusSkipped
			p.progress(rep.Results[i])
			continue
		}
		todo = append(todo, i)
	}
	if opts.DryRun {
		for _, i := range todo {
			r := &rep.Results[i]
			payload, err := Payload(dir, r.Item)
			if err != nil {
				r.Status, r.Err = StatusFailed, err
			} else {
				r.Status, r.Bytes = StatusDryRun, len(payload)
			}
			p.progress(*r)
		}
		return rep, failures(rep, p.server, nil)
	}

	// stop ends the push early on a fatal error (credentials rejected).
	pctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var (
		mu       sync.Mutex // guards state, lastSave, rep.StateErr
		lastSave = time.Now()
		dirty    bool
	)
	save := func(force bool) {
		if !dirty || (!force && time.Since(lastSave) < time.Second) {
			return
		}
		if err := state.write(dir); err != nil {
			rep.StateErr = err
		} else {
			rep.StateErr = nil
			dirty = false
		}
		lastSave = time.Now()
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(p.concurrency, len(todo)); w++ {
		wg.Go(func() {
			pprof.Do(pctx, pprof.Labels("component", "pyroscope-push"), func(pctx context.Context) {
				for i := range work {
					r := &rep.Results[i]
					if pctx.Err() != nil {
						r.Status, r.Err = StatusNotTried, context.Cause(pctx)
						p.progress(*r)
						continue
					}
					payload, err := Payload(dir, r.Item)
					if err != nil {
						r.Status, r.Err = StatusFailed, err
						p.progress(*r)
						continue
					}
					r.Bytes = len(payload)
					r.Tries, err = p.pushOne(pctx, r.Item, payload)
					if err != nil {
						r.Status, r.Err = StatusFailed, err
						if isFatal(err) {
							stop(err)
						}
						p.progress(*r)
						continue
					}
					r.Status = StatusPushed
					mu.Lock()
					state.record(p.server, p.creds.Tenant, PushedProfile{ID: r.ID, Target: r.Target, Kind: r.Kind, Pushed: time.Now().UTC().Format(time.RFC3339)})
					dirty = true
					save(false)
					mu.Unlock()
					p.progress(*r)
				}
			})
		})
	}
	for _, i := range todo {
		work <- i
	}
	close(work)
	wg.Wait()
	mu.Lock()
	save(true)
	mu.Unlock()
	var cause error
	if pctx.Err() != nil {
		cause = context.Cause(pctx)
	}
	return rep, failures(rep, p.server, cause)
}

func failures(rep *Report, server string, cause error) error {
	var failed []Result
	for _, r := range rep.Results {
		if r.Status == StatusFailed || r.Status == StatusNotTried {
			failed = append(failed, r)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	if server == "" {
		server = "(dry run)"
	}
	return &PushError{Server: server, Total: len(rep.Results), Failed: failed, Cause: cause}
}

type pusher struct {
	server      string // base URL without credentials
	host        string
	creds       Credentials
	client      pushv1connect.PusherServiceClient
	concurrency int
	tries       int
	minBackoff  time.Duration
	maxBackoff  time.Duration
	timeout     time.Duration
	progressMu  sync.Mutex
	progressFn  func(Result)
}

func newPusher(opts Options) (*pusher, error) {
	p := &pusher{
		creds:       opts.Credentials,
		concurrency: orDefault(opts.Concurrency, DefaultConcurrency),
		tries:       orDefault(opts.Tries, DefaultTries),
		minBackoff:  orDefault(opts.MinBackoff, DefaultMinBackoff),
		maxBackoff:  orDefault(opts.MaxBackoff, DefaultMaxBackoff),
		timeout:     orDefault(opts.Timeout, DefaultTimeout),
		progressFn:  opts.Progress,
	}
	if p.maxBackoff < p.minBackoff {
		p.maxBackoff = p.minBackoff
	}
	if opts.DryRun && opts.Server == "" {
		return p, nil
	}
	base, user, err := parseServer(opts.Server)
	if err != nil {
		return nil, err
	}
	if user != nil {
		if p.creds.Token != "" || p.creds.Username != "" {
			return nil, fmt.Errorf("server URL %s carries credentials and others were given too; give one", RedactURL(opts.Server))
		}
		p.creds.Username = user.Username()
		p.creds.Password, _ = user.Password()
	}
	if err := p.creds.validate(); err != nil {
		return nil, err
	}
	p.server = base
	u, _ := url.Parse(base)
	p.host = u.Host
	if opts.DryRun {
		return p, nil
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c := *hc
	c.Transport = &transport{next: next, host: p.host, creds: p.creds, userAgent: opts.UserAgent}
	p.client = pushv1connect.NewPusherServiceClient(&c, base)
	return p, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (p *pusher) progress(r Result) {
	if p.progressFn == nil {
		return
	}
	p.progressMu.Lock()
	defer p.progressMu.Unlock()
	p.progressFn(r)
}

// pushOne sends one profile, retrying 5xx responses, 429 and connection
// errors with exponential backoff. It returns the attempts made.
func (p *pusher) pushOne(ctx context.Context, it Item, payload []byte) (int, error) {
	labels := make([]*typesv1.LabelPair, len(it.Labels))
	for i, l := range it.Labels {
		labels[i] = &typesv1.LabelPair{Name: l.Name, Value: l.Value}
	}
	msg := &pushv1.PushRequest{Series: []*pushv1.RawProfileSeries{{
		Labels:  labels,
		Samples: []*pushv1.RawSample{{RawProfile: payload, ID: it.ID}},
	}}}
	backoff := p.minBackoff
	for try := 1; ; try++ {
		rec := &response{}
		actx, cancel := context.WithTimeout(context.WithValue(ctx, responseKey{}, rec), p.timeout)
		_, err := p.client.Push(actx, connect.NewRequest(msg))
		cancel()
		if err == nil {
			return try, nil
		}
		if ctx.Err() != nil {
			return try, context.Cause(ctx)
		}
		err, retry := p.classify(err, rec)
		if !retry || try >= p.tries {
			if retry {
				err = fmt.Errorf("%w (gave up after %d tries)", err, try)
			}
			return try, err
		}
		// Up to 25% jitter keeps the workers from retrying in lockstep.
		wait := backoff + time.Duration(rand.Int64N(int64(backoff)/4+1))
		if rec.retryAfter > wait {
			wait = min(rec.retryAfter, p.maxBackoff)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return try, context.Cause(ctx)
		case <-t.C:
		}
		backoff = min(backoff*2, p.maxBackoff)
	}
}

// classify turns a failed attempt into the error reported and whether to
// try again: 5xx, 429 and connection errors are retried; other 4xx are the
// request's fault and are not.
func (p *pusher) classify(err error, rec *response) (error, bool) {
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	if rec.status != 0 {
		// For a body that is not a connect error (a proxy's or a plain
		// server's text) connect gives only the status: use the body.
		generic := fmt.Sprintf("%d %s", rec.status, http.StatusText(rec.status))
		if msg == "" || strings.HasPrefix(msg, "HTTP status ") || msg == generic || msg == http.StatusText(rec.status) {
			msg = rec.body
		}
		he := HTTPError{Server: p.server, Status: rec.status, Message: msg}
		switch {
		case rec.status == http.StatusUnauthorized || rec.status == http.StatusForbidden:
			return &AuthError{HTTPError: he, Credentials: p.creds.String()}, false
		case rec.status == http.StatusNotFound:
			he.Message = strings.TrimSpace(he.Message + " (is " + p.server + " a Pyroscope server? it has no " + pushv1connect.PusherServicePushProcedure + ")")
			return &he, false
		case rec.status >= 500 || rec.status == http.StatusTooManyRequests:
			return &he, true
		case rec.status >= 400:
			return &he, false
		}
		// A 2xx or 3xx that is not a valid push response.
		return fmt.Errorf("unexpected response (HTTP %d): %v", rec.status, err), false
	}
	// No response: the connection failed or the attempt timed out.
	inner := err
	if ce != nil && ce.Unwrap() != nil {
		inner = ce.Unwrap()
	}
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) {
		return &FatalError{fmt.Errorf("connecting to %s: %v (trust its CA with --ca-file)", p.server, inner)}, false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return &FatalError{fmt.Errorf("connecting to %s: %v", p.server, dnsErr)}, false
	}
	return fmt.Errorf("connecting to %s: %v", p.server, inner), true
}

// response records what the server answered to one attempt: the connect
// client maps HTTP statuses onto its codes, and retrying needs the status.
type response struct {
	status     int
	retryAfter time.Duration
	body       string // start of a non-connect error body
}

// maxMessage bounds how much of an error body is quoted.
const maxMessage = 512

// printable reduces an error body to one line of text.
func printable(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == utf8.RuneError {
			return ' '
		}
		return r
	}, string(b))
	return strings.Join(strings.Fields(s), " ")
}

type responseKey struct{}

// transport adds the credentials, the tenant and the user agent to requests
// to the server's host (not to a host a redirect leads to) and records
// each response's status.
type transport struct {
	next      http.RoundTripper
	host      string
	creds     Credentials
	userAgent string
}

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if r.URL.Host == t.host {
		t.creds.header(r.Header)
	}
	if t.userAgent != "" {
		r.Header.Set("User-Agent", t.userAgent)
	}
	resp, err := t.next.RoundTrip(r)
	if rec, ok := r.Context().Value(responseKey{}).(*response); ok && err == nil {
		rec.status = resp.StatusCode
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			rec.retryAfter = time.Duration(s) * time.Second
		}
		if resp.StatusCode >= 300 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			// Keep the start of a plain error body for the message; the
			// client still reads the whole body.
			head, _ := io.ReadAll(io.LimitReader(resp.Body, maxMessage))
			rec.body = printable(head)
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
		}
	}
	return resp, err
}
