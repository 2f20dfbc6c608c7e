package pyroscope

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

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
	// DefaultVerifyWait bounds the wait for accepted profiles to show in
	// queries. A Pyroscope ingester answers for its head at once; the
	// margin covers a loaded server and a distributor's retries.
	DefaultVerifyWait = 15 * time.Second
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

	// Verify queries the server back (querier.v1 SelectSeries, one query
	// per profile type) and compares, per profile and profile type, the
	// total it holds with the bundle's. Before sending, the same query
	// finds what the server already holds (not sent again, whatever
	// pushed.json says) and what it no longer holds (a server restarted
	// without its data: sent again); after sending, it checks that what
	// was accepted is stored. pushed.json records what was verified.
	Verify bool
	// VerifyWait bounds how long verification waits for accepted profiles
	// to show in queries; 0 means DefaultVerifyWait.
	VerifyWait time.Duration

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
	StatusStored   Status = "stored"     // not sent: the server already holds it (Options.Verify)
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
	// Checks compare the bundle's totals with the server's, per profile
	// type, when the server was queried (Options.Verify); Verified is set
	// when they are all equal.
	Checks   []Check
	Verified bool
	// Resent is set when pushed.json said the profile went but the server
	// no longer held it, so it was sent again.
	Resent bool
}

// Report is the outcome of a push.
type Report struct {
	Server  string // redacted base URL
	Tenant  string
	Results []Result // in manifest order
	// ServerInfo is who answered at Server (build, start), as far as it
	// says.
	ServerInfo ServerInfo
	// Notes are what the push noticed and did about it, for the user: the
	// server is not the one pushed.json recorded, what it holds could not
	// be checked.
	Notes []string
	// StateErr is set when pushed.json could not be written: the push
	// itself went through, but a re-run would send the profiles again.
	StateErr error
}

// Verified returns how many profiles the server gave back whole.
func (r *Report) Verified() int {
	n := 0
	for _, res := range r.Results {
		if res.Verified {
			n++
		}
	}
	return n
}

// Resent returns how many profiles were sent again because the server no
// longer held them.
func (r *Report) Resent() int {
	n := 0
	for _, res := range r.Results {
		if res.Resent && res.Status == StatusPushed {
			n++
		}
	}
	return n
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
	if n := countUnverified(e.Failed); n > 0 {
		fmt.Fprintf(&b, "; %d of %d profiles did not go or are not stored as sent", len(e.Failed), e.Total)
	} else {
		fmt.Fprintf(&b, "; %d of %d profiles did not go", len(e.Failed), e.Total)
	}
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

func countUnverified(rs []Result) int {
	n := 0
	for _, r := range rs {
		var ve *VerifyError
		if errors.As(r.Err, &ve) {
			n++
		}
	}
	return n
}

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
// returns a report of every profile and, when some did not go (or, with
// opts.Verify, are not stored as sent), a *PushError. Profiles already
// pushed to the same server and tenant (pushed.json) are skipped unless
// opts.Force; with opts.Verify, or when the server is not the one
// pushed.json recorded (ServerInfo), what the server holds decides
// instead. Only pushed.json is written in the bundle; nothing else
// changes.
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
	rep := &Report{Server: p.server, Tenant: p.tenant, Results: make([]Result, len(items))}
	for i, it := range items {
		rep.Results[i] = Result{Item: it}
	}
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
	if opts.DryRun {
		for i := range rep.Results {
			r := &rep.Results[i]
			if state != nil && !opts.Force && state.Pushed(p.server, p.tenant, r.ID) {
				r.Status = StatusSkipped
			} else if payload, err := Payload(dir, r.Item); err != nil {
				r.Status, r.Err = StatusFailed, err
			} else {
				r.Status, r.Bytes = StatusDryRun, len(payload)
			}
			p.progress(*r)
		}
		return rep, failures(rep, p.server, nil)
	}

	// Who answers at the URL, and whether it is who pushed.json saw.
	rep.ServerInfo = p.conn.info(ctx)
	probe := opts.Verify
	if d := state.destination(p.server, p.tenant, false); !probe && d != nil && len(d.Profiles) > 0 &&
		d.ServerInfo != nil && d.ServerInfo.Known() && rep.ServerInfo.Known() && !d.ServerInfo.Same(rep.ServerInfo) {
		probe = true
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s is not the server pushed.json recorded (%s then, %s now): checking what it holds", p.server, d.ServerInfo, rep.ServerInfo))
	}
	// stored[i] is what the server holds of item i, nil when not asked.
	var stored [][]Check
	if probe && !opts.Force {
		stored, err = p.check(ctx, dir, m.ID, items, nil, 0)
		if err != nil {
			if opts.Verify || ctx.Err() != nil {
				return rep, err
			}
			rep.Notes = append(rep.Notes, fmt.Sprintf("could not check what it holds (%v): trusting pushed.json", err))
			stored = nil
		}
	}
	now := func() string { return time.Now().UTC().Format(time.RFC3339) }
	var todo []int
	for i, it := range items {
		r := &rep.Results[i]
		rec := state.find(p.server, p.tenant, it.ID)
		switch {
		case opts.Force:
			todo = append(todo, i)
			continue
		case stored != nil && stored[i] != nil: // nil: not prepared, the push reports why
			r.Checks = stored[i]
			switch holds(stored[i]) {
			case holdsAll:
				if empty(stored[i]) && rec == nil {
					todo = append(todo, i) // nothing to find: send it, harmlessly
					continue
				}
				r.Status, r.Verified = StatusStored, true
				if rec != nil {
					r.Status = StatusSkipped
				}
				state.record(p.server, p.tenant, verifiedRecord(rec, it, stored[i], now()))
			case holdsNone:
				r.Resent = rec != nil
				todo = append(todo, i)
				continue
			default:
				r.Status, r.Err = StatusFailed, &VerifyError{Server: p.server, Checks: stored[i], Before: true}
			}
		case rec != nil:
			r.Status = StatusSkipped
		default:
			todo = append(todo, i)
			continue
		}
		p.progress(*r)
	}

	// stop ends the push early on a fatal error (credentials rejected).
	pctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var (
		mu       sync.Mutex // guards state, lastSave, dirty, rep.StateErr, refusedOld
		lastSave = time.Now()
		dirty    bool
		// refusedOld is the newest start the server refused as older than
		// its ingestion window, with the refusal: every profile at least
		// as old is refused too, so it is not sent.
		refusedOld    time.Time
		refusedOldErr error
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
	// pushed lists the profiles the server accepted, for verifying.
	var pushed []int
	totals := make([][]Total, len(items))
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
					mu.Lock()
					old, oldErr := refusedOld, refusedOldErr
					mu.Unlock()
					if oldErr != nil && !r.Start.After(old) {
						r.Status, r.Err = StatusFailed, oldErr
						p.progress(*r)
						continue
					}
					pr, err := Prepare(dir, r.Item)
					if err != nil {
						r.Status, r.Err = StatusFailed, err
						p.progress(*r)
						continue
					}
					r.Bytes = len(pr.Bytes)
					r.Tries, err = p.pushOne(pctx, r.Item, pr.Bytes)
					if err != nil {
						r.Status, r.Err = StatusFailed, err
						if isFatal(err) {
							stop(err)
						}
						if tooOld(err) {
							mu.Lock()
							if r.Start.After(refusedOld) || refusedOldErr == nil {
								refusedOld, refusedOldErr = r.Start, err
							}
							mu.Unlock()
						}
						p.progress(*r)
						continue
					}
					r.Status = StatusPushed
					mu.Lock()
					totals[i] = pr.Totals
					pushed = append(pushed, i)
					state.record(p.server, p.tenant, PushedProfile{ID: r.ID, Target: r.Target, Kind: r.Kind, Pushed: now()})
					dirty = true
					save(false)
					mu.Unlock()
					if !opts.Verify {
						p.progress(*r)
					}
				}
			})
		})
	}
	for _, i := range todo {
		work <- i
	}
	close(work)
	wg.Wait()

	// What was accepted is stored: query it back.
	if opts.Verify && len(pushed) > 0 && pctx.Err() == nil {
		wait := orDefault(opts.VerifyWait, DefaultVerifyWait)
		got, err := p.check(pctx, dir, m.ID, items, totals, wait)
		for _, i := range pushed {
			r := &rep.Results[i]
			switch {
			case err != nil:
				r.Err = err // accepted, but not verified: still a failure of --verify
				r.Status = StatusFailed
			case holds(got[i]) == holdsAll:
				r.Checks, r.Verified = got[i], true
				state.record(p.server, p.tenant, verifiedRecord(state.find(p.server, p.tenant, r.ID), r.Item, got[i], now()))
			default:
				r.Checks = got[i]
				r.Status, r.Err = StatusFailed, &VerifyError{Server: p.server, Checks: got[i]}
				if holds(got[i]) == holdsNone {
					// Accepted but not stored: not "already pushed".
					state.forget(p.server, p.tenant, r.ID)
				}
			}
			p.progress(*r)
		}
		mu.Lock()
		dirty = true
		mu.Unlock()
	} else if opts.Verify {
		for _, i := range pushed {
			p.progress(rep.Results[i])
		}
	}
	mu.Lock()
	if rep.ServerInfo.Known() && (len(pushed) > 0 || stored != nil) {
		d := state.destination(p.server, p.tenant, true)
		info := rep.ServerInfo
		d.ServerInfo = &info
		dirty = true
	}
	dirty = dirty || stored != nil
	save(true)
	mu.Unlock()
	var cause error
	if pctx.Err() != nil {
		cause = context.Cause(pctx)
	}
	return rep, failures(rep, p.server, cause)
}

// verifiedRecord is the pushed.json record of a profile the server gave
// back whole.
func verifiedRecord(rec *PushedProfile, it Item, checks []Check, now string) PushedProfile {
	out := PushedProfile{ID: it.ID, Target: it.Target, Kind: it.Kind, Pushed: now}
	if rec != nil {
		out.Pushed = rec.Pushed
	}
	out.Verified = now
	out.Totals = map[string]int64{}
	for _, c := range checks {
		out.Totals[c.Type] = c.Bundle
	}
	return out
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
	conn        *conn  // nil for a dry run without a server
	server      string // base URL without credentials
	tenant      string
	client      pushv1connect.PusherServiceClient
	query       *Client
	concurrency int
	progressMu  sync.Mutex
	progressFn  func(Result)
}

func newPusher(opts Options) (*pusher, error) {
	p := &pusher{
		concurrency: orDefault(opts.Concurrency, DefaultConcurrency),
		progressFn:  opts.Progress,
		tenant:      opts.Credentials.Tenant,
	}
	if opts.DryRun && opts.Server == "" {
		return p, nil
	}
	c, err := newConn(connOptions{
		Server: opts.Server, Credentials: opts.Credentials, HTTPClient: opts.HTTPClient, UserAgent: opts.UserAgent,
		Tries: opts.Tries, MinBackoff: opts.MinBackoff, MaxBackoff: opts.MaxBackoff, Timeout: opts.Timeout,
	})
	if err != nil {
		return nil, err
	}
	p.conn, p.server = c, c.server
	p.client = pushv1connect.NewPusherServiceClient(c.hc, c.server)
	p.query = newClient(c)
	return p, nil
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
	tries, err := p.conn.retry(ctx, pushProcedure, func(ctx context.Context) error {
		_, err := p.client.Push(ctx, connect.NewRequest(msg))
		return err
	})
	var he *HTTPError
	if errors.As(err, &he) {
		if le := limitFor(he, it.Start); le != nil {
			err = le
		}
	}
	return tries, err
}
