// Package tokioconsole is the tokio-console collector: async-task profiles
// of a Tokio runtime, read from console-subscriber's gRPC API. It is a
// package of its own so that gRPC is built only into programs that import
// it (profcap itself), not into everything that imports collectors.
package tokioconsole

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	pb "github.com/profcap/profcap/internal/consolepb"
	"github.com/profcap/profcap/targets"
)

// Options configure the tokio-console collector. The zero value is usable.
type Options struct {
	// ConnectTimeout bounds the wait for the first answer (default 3 s):
	// console-subscriber answers WatchState and sends the full state of
	// WatchUpdates as soon as a watcher subscribes.
	ConnectTimeout time.Duration
}

// Collector captures async-task profiles of a Tokio runtime through
// console-subscriber's gRPC API (rs.tokio.console.instrument.Instrument,
// h2c), from outside the process. It only watches: it never pauses or
// resumes the runtime's instrumentation. What connecting costs the service
// is in docs/tokio-console.md ("What connecting does"): the probe opens only
// WatchState (or, before console-subscriber 0.5.0, a WatchTaskDetails for a
// task that does not exist), never WatchUpdates; a capture opens exactly one
// WatchUpdates stream, plus one WatchState stream.
type Collector struct {
	opts Options
}

var (
	_ collectors.Collector = (*Collector)(nil)
	_ collectors.Preparer  = (*Collector)(nil)
)

// New returns the tokio-console collector.
func New(opts Options) *Collector {
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 3 * time.Second
	}
	return &Collector{opts: opts}
}

// Name implements Collector.
func (c *Collector) Name() string { return "tokio-console" }

// Kinds implements Collector: async, for a target with a console address.
func (c *Collector) Kinds(t *targets.Target) []bundle.Kind {
	if t == nil || t.TokioConsole == "" {
		return nil
	}
	return []bundle.Kind{bundle.Async}
}

// maxRecvMsgSize: the subscriber keeps its first update under 4 MiB (the
// gRPC default limit) by cutting its retention, but sends no first update
// at all when that is not enough, and then its next update, which carries
// every task no watcher was sent yet, has no limit: leave ample room.
const maxRecvMsgSize = 64 << 20

// dialTarget turns a tokio_console address into a gRPC target: HOST:PORT
// (optionally http://HOST:PORT/) over TCP, or a Unix socket as unix:/PATH,
// unix:///PATH or file:///PATH (the tokio-console CLI's form) —
// console-subscriber serves either (ServerAddr::Unix since 0.1.9/0.2.0).
func dialTarget(a string) (target, shown string, err error) {
	a = strings.TrimSpace(a)
	switch {
	case strings.HasPrefix(a, "unix:"):
		p := strings.TrimPrefix(a, "unix:")
		if strings.HasPrefix(p, "//") {
			p = strings.TrimPrefix(p, "//")
		}
		if !strings.HasPrefix(p, "/") {
			return "", a, fmt.Errorf("tokio-console address %q: want unix:/ABSOLUTE/PATH", a)
		}
		return "unix://" + p, "unix:" + p, nil
	case strings.HasPrefix(a, "file://"):
		p := strings.TrimPrefix(strings.TrimPrefix(a, "file://"), "localhost")
		if !strings.HasPrefix(p, "/") {
			return "", a, fmt.Errorf("tokio-console address %q: want file:///ABSOLUTE/PATH", a)
		}
		return "unix://" + p, "unix:" + p, nil
	}
	a = strings.TrimPrefix(a, "http://")
	a = strings.TrimSuffix(a, "/")
	return "passthrough:///" + a, a, nil
}

func (c *Collector) dial(addr string) (*grpc.ClientConn, string, error) {
	target, shown, err := dialTarget(addr)
	if err != nil {
		return nil, shown, err
	}
	bo := backoff.DefaultConfig
	bo.MaxDelay = time.Second
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()), // console-subscriber serves h2c
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: c.opts.ConnectTimeout}),
	)
	if err != nil {
		return nil, shown, fmt.Errorf("tokio-console at %s: %w", shown, err)
	}
	return conn, shown, nil
}

// explain turns a gRPC failure into a message that says what to check.
func explain(addr string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
		return fmt.Errorf("tokio-console at %s: no answer within the connect timeout (is it a console-subscriber endpoint?): %w", addr, err)
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "connection refused"):
		return fmt.Errorf("tokio-console at %s: connection refused: nothing listens there (is the service running with console-subscriber and TOKIO_CONSOLE_BIND=%s?): %w", addr, addr, err)
	case strings.Contains(msg, "no such file or directory"):
		return fmt.Errorf("tokio-console at %s: no such socket: nothing listens there (is the service running with console-subscriber on this Unix socket?): %w", addr, err)
	case status.Code(err) == codes.Unimplemented:
		return fmt.Errorf("tokio-console at %s: the server answers gRPC but does not serve rs.tokio.console.instrument.Instrument: %w", addr, err)
	case status.Code(err) == codes.ResourceExhausted:
		return fmt.Errorf("tokio-console at %s: an update is larger than profcap accepts (%d MiB): %w", addr, maxRecvMsgSize>>20, err)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("tokio-console at %s: stream closed by the server: %w", addr, err)
	case status.Code(err) == codes.Unavailable:
		return fmt.Errorf("tokio-console at %s: unavailable: %w", addr, err)
	}
	return fmt.Errorf("tokio-console at %s: %w", addr, err)
}

// Probe implements Collector. It checks the endpoint without WatchUpdates,
// which would make the subscriber serialise its whole state for it (and,
// when that is 4 MiB or more, cut its retention for good and reset the
// dropped-events count every watcher reads): it opens WatchState
// (console-subscriber 0.5.0 and later), which answers at once with live or
// paused; where that is unimplemented, a WatchTaskDetails for a span id no
// task has, which an older console-subscriber answers NotFound (another
// gRPC server answers Unimplemented).
func (c *Collector) Probe(ctx context.Context, t *targets.Target) []collectors.Availability {
	av := collectors.Availability{Kind: bundle.Async, Collector: c.Name()}
	if t == nil || t.TokioConsole == "" {
		av.Reason = "no tokio_console address configured"
		return []collectors.Availability{av}
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	conn, addr, err := c.dial(t.TokioConsole)
	if err != nil {
		av.Reason = err.Error()
		return []collectors.Availability{av}
	}
	defer conn.Close()
	cl := pb.NewInstrumentClient(conn)
	st, err := firstState(ctx, cl)
	if status.Code(err) == codes.Unimplemented {
		err = probeOld(ctx, cl)
		if err == nil {
			av.Available = true
			av.Reason = fmt.Sprintf("console-subscriber at %s answers (older than 0.5.0: no WatchState, so a pause by another client is seen only as missing updates)", addr)
			return []collectors.Availability{av}
		}
	}
	if err != nil {
		av.Reason = explain(addr, err).Error()
		return []collectors.Availability{av}
	}
	av.Available = true
	av.Reason = fmt.Sprintf("console-subscriber at %s answers: live", addr)
	if st.GetTemporality() == pb.Temporality_PAUSED {
		av.Reason = fmt.Sprintf("console-subscriber at %s answers: paused by a client (it publishes no updates until one resumes it; profcap never does)", addr)
	}
	return []collectors.Availability{av}
}

// firstState opens WatchState and returns its first message.
func firstState(ctx context.Context, cl pb.InstrumentClient) (*pb.State, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // closes the stream
	s, err := cl.WatchState(ctx, &pb.StateRequest{})
	if err != nil {
		return nil, err
	}
	st, err := s.Recv()
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return st, err
}

// probeOld asks for the details of a span id no task has (tracing's ids are
// slab indices plus one: the largest u64 is never one in practice).
func probeOld(ctx context.Context, cl pb.InstrumentClient) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := cl.WatchTaskDetails(ctx, &pb.TaskDetailsRequest{Id: &pb.Id{Id: math.MaxUint64}})
	if err == nil {
		_, err = s.Recv()
	}
	switch {
	case err == nil, status.Code(err) == codes.NotFound:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return err
}

// Collect implements Collector. Connected before the window opens (see
// Prepares), it interpolates each task's figures at the window's start and
// end between the subscriber's updates around them, on the subscriber's
// clock (its offset from ours estimated from the updates' `now` and their
// arrival), and Result.Start and End are the window's. Opened later, the
// window starts at the first update received in it.
func (c *Collector) Collect(ctx context.Context, w *collectors.Window, t *targets.Target, kinds []bundle.Kind, emit collectors.Emit) {
	collectors.Unsupported(c.Name(), kinds, emit, bundle.Async)
	pprof.Do(ctx, pprof.Labels("component", c.Name()), func(ctx context.Context) {
		emit(c.capture(ctx, w, t))
	})
}

type consoleMsg struct {
	upd *pb.Update
	at  time.Time // local receive time, only to place the update in the window
	err error
}

// pauses follows WatchState: when the subscriber was seen paused, on the
// local clock (State carries no time).
type pauses struct {
	mu        sync.Mutex
	supported bool
	paused    bool
	since     time.Time
	spans     [][2]time.Time // ended pauses
}

func (p *pauses) watch(ctx context.Context, cl pb.InstrumentClient) {
	s, err := cl.WatchState(ctx, &pb.StateRequest{})
	if err != nil {
		return
	}
	for {
		st, err := s.Recv()
		if err != nil {
			return
		}
		now := time.Now()
		p.mu.Lock()
		p.supported = true
		switch on := st.GetTemporality() == pb.Temporality_PAUSED; {
		case on && !p.paused:
			p.paused, p.since = true, now
		case !on && p.paused:
			p.paused = false
			p.spans = append(p.spans, [2]time.Time{p.since, now})
		}
		p.mu.Unlock()
	}
}

func (p *pauses) answered() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.supported
}

// during says when the subscriber was paused within [a, b], or "".
func (p *pauses) during(a, b time.Time) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	spans := append([][2]time.Time(nil), p.spans...)
	if p.paused {
		spans = append(spans, [2]time.Time{p.since, b})
	}
	var parts []string
	for _, sp := range spans {
		if sp[1].Before(a) || sp[0].After(b) {
			continue
		}
		from, to := "before the window", "its end"
		if sp[0].After(a) {
			from = fmt.Sprintf("%v into it", sp[0].Sub(a).Round(time.Millisecond))
		}
		if sp[1].Before(b) {
			to = fmt.Sprintf("%v into it", sp[1].Sub(a).Round(time.Millisecond))
		}
		parts = append(parts, "from "+from+" to "+to)
	}
	return strings.Join(parts, ", ")
}

func (c *Collector) capture(ctx context.Context, w *collectors.Window, t *targets.Target) collectors.Result {
	res := collectors.Result{Kind: bundle.Async, Collector: c.Name(), Status: bundle.StatusFailed}
	if t == nil || t.TokioConsole == "" {
		res.Status = bundle.StatusUnsupported
		res.Err = errors.New("no tokio_console address configured")
		return res
	}
	conn, addr, err := c.dial(t.TokioConsole)
	if err != nil {
		res.Err = err
		return res
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the streams and the receiver
	cl := pb.NewInstrumentClient(conn)
	var ps pauses
	go ps.watch(sctx, cl)
	opened := time.Now()
	stream, err := cl.WatchUpdates(sctx, &pb.InstrumentRequest{})
	if err != nil {
		res.Err = explain(addr, err)
		return res
	}
	ch := make(chan consoleMsg)
	go func() {
		for {
			u, err := stream.Recv()
			select {
			case ch <- consoleMsg{upd: u, at: time.Now(), err: err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	st := newConsoleState()
	// Without a first update (see window.go) the first message comes a
	// publish interval later, which can be longer than the connect timeout:
	// a subscriber that answered WatchState is given the whole window.
	connect := time.NewTimer(c.opts.ConnectTimeout)
	defer connect.Stop()
	var streamErr error
	var firstAt, lastAt, prevAt time.Time
	var firstAfter time.Duration // subscribe → first message
	var gap time.Duration        // between the last two updates, local clock
	var offset time.Duration     // subscriber's clock − local clock (estimate)
	prewindow := false           // the baseline is an update from before the window
	after := false               // an update from after the window was taken
	inWindow := 0                // updates received in the window
	windowOpen := func() bool {
		select {
		case <-w.Opened():
			return true
		default:
			return false
		}
	}
loop:
	for {
		select {
		case <-ctx.Done():
			res.Err = fmt.Errorf("tokio-console at %s: capture abandoned: %w", addr, ctx.Err())
			return res
		case <-connect.C:
			if st.updates == 0 && !ps.answered() {
				res.Err = explain(addr, context.DeadlineExceeded)
				if p := ps.during(w.Start, time.Now()); p != "" {
					res.Err = fmt.Errorf("tokio-console at %s: the subscriber is paused by a client (%s) and publishes nothing: %w", addr, p, res.Err)
				}
				return res
			}
		case <-w.Done():
			break loop
		case m := <-ch:
			if m.err != nil {
				streamErr = m.err
				break loop
			}
			select {
			case <-w.Done(): // arrived as the window ended: not in it
				break loop
			default:
			}
			if err := st.apply(m.upd); err != nil {
				streamErr = fmt.Errorf("malformed update: %w", err)
				break loop
			}
			if !prevAt.IsZero() {
				gap = m.at.Sub(prevAt)
			}
			prevAt = m.at
			// The subscriber's clock minus ours, less the update's way here:
			// the largest difference is the closest.
			if d := st.now.Sub(m.at); st.updates == 1 || d > offset {
				offset = d
			}
			if st.updates == 1 {
				firstAfter = m.at.Sub(opened)
			}
			if !windowOpen() {
				// Before the window: the latest update is the baseline,
				// and the first one says the stream works.
				st.snapshot(snapB)
				prewindow = true
				collectors.Ready(ctx)
				continue
			}
			if !st.has[snapS] {
				if m.at.Before(w.Start) {
					st.snapshot(snapB) // received before the window opened
					prewindow = true
					continue
				}
				st.snapshot(snapS)
				firstAt = m.at
			}
			st.snapshot(snapL)
			inWindow++
			lastAt = m.at
		}
	}
	// The window ended between two updates: take the next ones until one
	// was made after the window's end (on the subscriber's clock), so that
	// each task's figures can be interpolated there.
	if streamErr == nil && ctx.Err() == nil && (prewindow || st.has[snapS]) {
		deadline := time.After(min(max(gap*3/2+100*time.Millisecond, 200*time.Millisecond), 3*time.Second))
	tail:
		for !st.now.After(w.Ended().Add(offset)) {
			select {
			case m := <-ch:
				if m.err != nil {
					break tail
				}
				if !st.now.IsZero() && st.now.Before(w.Ended().Add(offset)) && st.has[snapS] {
					st.snapshot(snapL) // the update before this one was still in the window
				}
				if err := st.apply(m.upd); err != nil {
					streamErr = fmt.Errorf("malformed update: %w", err)
					break tail
				}
				after = true
			case <-deadline:
				break tail
			case <-ctx.Done():
				break tail
			}
		}
	}
	if !st.started {
		switch {
		case streamErr != nil && st.updates == 0:
			res.Err = explain(addr, streamErr)
		case streamErr != nil:
			res.Err = fmt.Errorf("tokio-console at %s: stream closed before the window started: %w", addr, streamErr)
		case st.updates == 0:
			res.Err = fmt.Errorf("tokio-console at %s: the subscriber answers WatchState but sent no update in the window (paused, or a publish interval longer than the window)", addr)
		default:
			res.Err = fmt.Errorf("tokio-console at %s: no update received in the window", addr)
		}
		return res
	}
	// The window's instants on the subscriber's clock (it may be another
	// host's); the result reports them on ours.
	var cw consoleWindow
	w0, w1 := w.Start.Add(offset), w.Ended().Add(offset)
	if prewindow || after {
		cw = st.windowAt(w0, w1)
	} else {
		cw = st.window()
	}
	local := func(x time.Time) time.Time {
		switch {
		case x.Equal(w0):
			return w.Start
		case x.Equal(w1):
			return w.Ended()
		}
		return x.Add(-offset)
	}
	if firstAt.IsZero() {
		firstAt = w.Start
	}
	if lastAt.IsZero() {
		lastAt = time.Now()
	}
	paused := ps.during(firstAt, lastAt)
	if paused != "" {
		cw.Warnings = append(cw.Warnings, fmt.Sprintf("%spaused: a client paused the subscriber in the window (%s): it published nothing meanwhile, and the update after a resume carries everything since", bundle.WarningPrefix, paused))
	}
	prof := cw.asyncProfile(t.Name)
	if err := prof.CheckValid(); err != nil {
		res.Err = fmt.Errorf("tokio-console at %s: building the async profile: %w", addr, err)
		return res
	}
	res.Profile = prof
	res.Start, res.End = local(cw.Start), local(cw.End)
	prof.TimeNanos = res.Start.UnixNano()
	res.Status = bundle.StatusOK
	var why []string
	switch {
	case streamErr != nil:
		res.Status = bundle.StatusPartial
		if errors.Is(streamErr, io.EOF) || status.Code(streamErr) != codes.Unknown {
			why = append(why, fmt.Sprintf("stream closed mid-window after %d updates; the profile covers %v of the window: %v",
				st.updates, cw.End.Sub(cw.Start).Round(time.Millisecond), explain(addr, streamErr)))
		} else {
			why = append(why, streamErr.Error())
		}
	case inWindow == 0 || (inWindow == 1 && !(prewindow && after)):
		res.Status = bundle.StatusPartial
		reason := "the publish interval (TOKIO_CONSOLE_PUBLISH_INTERVAL) is longer than the window, or the console is paused by another client"
		if p := ps.during(w.Start, time.Now()); p != "" {
			reason = "the subscriber was paused by a client (" + p + ")"
		} else if ps.supported {
			reason = "the publish interval (TOKIO_CONSOLE_PUBLISH_INTERVAL) is longer than the window"
		}
		why = append(why, fmt.Sprintf("%d update(s) in the window: %s", inWindow, reason))
	}
	if len(cw.Missing) > 0 {
		res.Status = bundle.StatusPartial
		why = append(why, cw.Missing...)
	}
	if len(why) > 0 {
		res.Err = fmt.Errorf("tokio-console at %s: %s", addr, strings.Join(why, "; "))
	}
	cw.First += fmt.Sprintf(", %v after subscribing", firstAfter.Round(time.Millisecond))
	if prewindow && after {
		cw.First += fmt.Sprintf("; %d updates in the window, each task's figures interpolated at its start and end between the updates around them", inWindow)
	}
	res.Note = consoleNote(cw)
	return res
}

// Prepares says the collector connects before the window opens: its
// baseline is then the last update before the window, and each task's
// figures are interpolated between it and the first update in the window.
func (c *Collector) Prepares() bool { return true }

// consoleNote summarises the window for a reader: counts and the warnings.
func consoleNote(cw consoleWindow) string {
	var b strings.Builder
	spawned, finished := 0, 0
	for _, t := range cw.Tasks {
		if t.spawnedIn {
			spawned++
		}
		if t.finishedIn {
			finished++
		}
	}
	fmt.Fprintf(&b, "%d tasks alive in the window (%d spawned, %d completed in it); %s", len(cw.Tasks), spawned, finished, cw.First)
	if len(cw.Warnings) > 0 {
		fmt.Fprintf(&b, "; %d warnings:", len(cw.Warnings))
		for _, w := range cw.Warnings {
			b.WriteString("\n  ")
			b.WriteString(strings.TrimPrefix(w, bundle.WarningPrefix))
		}
	}
	return b.String()
}
