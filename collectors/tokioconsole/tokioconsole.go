// Package tokioconsole is the tokio-console collector: async-task profiles
// of a Tokio runtime, read from console-subscriber's gRPC API. It is a
// package of its own so that gRPC is built only into programs that import
// it (profcap itself), not into everything that imports collectors.
package tokioconsole

import (
	"context"
	"errors"
	"fmt"
	"github.com/google/pprof/profile"
	"io"
	"math"
	"runtime/pprof"
	"strings"
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
	// ConnectTimeout bounds the wait for the first update (default 3 s):
	// console-subscriber sends the full state as soon as a watcher subscribes.
	ConnectTimeout time.Duration
}

// Collector captures async-task profiles of a Tokio runtime through
// console-subscriber's gRPC API (rs.tokio.console.instrument.Instrument/
// WatchUpdates, h2c), from outside the process. It only watches: it never
// pauses the runtime's instrumentation.
type Collector struct {
	opts Options
}

var _ collectors.Collector = (*Collector)(nil)

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

// maxRecvMsgSize: the first update carries the whole state; the subscriber
// keeps it under 4 MiB by shrinking retention, but the gRPC default limit is
// exactly 4 MiB, so leave ample room.
const maxRecvMsgSize = 64 << 20

func consoleAddr(a string) string {
	a = strings.TrimPrefix(a, "http://")
	return strings.TrimSuffix(a, "/")
}

func (c *Collector) dial(addr string) (*grpc.ClientConn, error) {
	bo := backoff.DefaultConfig
	bo.MaxDelay = time.Second
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()), // console-subscriber serves h2c
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: c.opts.ConnectTimeout}),
	)
	if err != nil {
		return nil, fmt.Errorf("tokio-console at %s: %w", addr, err)
	}
	return conn, nil
}

// explain turns a gRPC failure into a message that says what to check.
func explain(addr string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
		return fmt.Errorf("tokio-console at %s: no update within the connect timeout (is it a console-subscriber endpoint?): %w", addr, err)
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "connection refused"):
		return fmt.Errorf("tokio-console at %s: connection refused: nothing listens there (is the service running with console-subscriber and TOKIO_CONSOLE_BIND=%s?): %w", addr, addr, err)
	case status.Code(err) == codes.Unimplemented:
		return fmt.Errorf("tokio-console at %s: the server answers gRPC but does not serve rs.tokio.console.instrument.Instrument/WatchUpdates: %w", addr, err)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("tokio-console at %s: stream closed by the server: %w", addr, err)
	case status.Code(err) == codes.Unavailable:
		return fmt.Errorf("tokio-console at %s: unavailable: %w", addr, err)
	}
	return fmt.Errorf("tokio-console at %s: %w", addr, err)
}

// Probe implements Collector: it opens WatchUpdates and waits for the first
// (full) update.
func (c *Collector) Probe(ctx context.Context, t *targets.Target) []collectors.Availability {
	av := collectors.Availability{Kind: bundle.Async, Collector: c.Name()}
	if t == nil || t.TokioConsole == "" {
		av.Reason = "no tokio_console address configured"
		return []collectors.Availability{av}
	}
	addr := consoleAddr(t.TokioConsole)
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	conn, err := c.dial(addr)
	if err != nil {
		av.Reason = err.Error()
		return []collectors.Availability{av}
	}
	defer conn.Close()
	first, err := firstUpdate(ctx, pb.NewInstrumentClient(conn))
	if err != nil {
		av.Reason = explain(addr, err).Error()
		return []collectors.Availability{av}
	}
	av.Available = true
	av.Reason = fmt.Sprintf("console-subscriber at %s answers: %d tasks", addr, len(first.GetTaskUpdate().GetNewTasks()))
	return []collectors.Availability{av}
}

func firstUpdate(ctx context.Context, cl pb.InstrumentClient) (*pb.Update, error) {
	stream, err := cl.WatchUpdates(ctx, &pb.InstrumentRequest{})
	if err != nil {
		return nil, err
	}
	u, err := stream.Recv()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if u.GetNow() == nil {
		return nil, errNoNow
	}
	return u, nil
}

// Collect implements Collector. The window is measured between two updates
// of the subscriber: the first one received at or after w.Start and the last
// one received before the window ends, on the subscriber's clock (Result.Start
// and End are those two `now`s).
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

func (c *Collector) capture(ctx context.Context, w *collectors.Window, t *targets.Target) collectors.Result {
	res := collectors.Result{Kind: bundle.Async, Collector: c.Name(), Status: bundle.StatusFailed}
	if t == nil || t.TokioConsole == "" {
		res.Status = bundle.StatusUnsupported
		res.Err = errors.New("no tokio_console address configured")
		return res
	}
	addr := consoleAddr(t.TokioConsole)
	conn, err := c.dial(addr)
	if err != nil {
		res.Err = err
		return res
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream and the receiver
	stream, err := pb.NewInstrumentClient(conn).WatchUpdates(sctx, &pb.InstrumentRequest{})
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
	connect := time.NewTimer(c.opts.ConnectTimeout)
	defer connect.Stop()
	var streamErr error
	opened := func() bool {
		select {
		case <-w.Opened():
			return true
		default:
			return false
		}
	}
	var lastAt time.Time
	var gap time.Duration // between the last two updates, local clock
	prewindow := false    // the baseline is an update from before the window
loop:
	for {
		select {
		case <-ctx.Done():
			res.Err = fmt.Errorf("tokio-console at %s: capture abandoned: %w", addr, ctx.Err())
			return res
		case <-connect.C:
			if st.updates == 0 {
				res.Err = explain(addr, context.DeadlineExceeded)
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
			if !lastAt.IsZero() {
				gap = m.at.Sub(lastAt)
			}
			lastAt = m.at
			if !opened() {
				// Before the window: the latest update is the baseline,
				// and the first one says the stream works.
				st.markStart()
				prewindow = true
				collectors.Ready(ctx)
				continue
			}
			if !st.started && !m.at.Before(w.Start) {
				st.markStart()
			}
		}
	}
	// The window ended between two updates: take the next one too, so
	// the measurement spans the whole window (it is scaled to it below).
	if streamErr == nil && ctx.Err() == nil && prewindow {
		bound := min(max(gap*3/2+100*time.Millisecond, 200*time.Millisecond), 3*time.Second)
		select {
		case m := <-ch:
			if m.err == nil {
				if err := st.apply(m.upd); err != nil {
					streamErr = fmt.Errorf("malformed update: %w", err)
				}
			}
		case <-time.After(bound):
		case <-ctx.Done():
		}
	}
	if !st.started {
		switch {
		case streamErr != nil && st.updates == 0:
			res.Err = explain(addr, streamErr)
		case streamErr != nil:
			res.Err = fmt.Errorf("tokio-console at %s: stream closed before the window started: %w", addr, streamErr)
		default:
			res.Err = fmt.Errorf("tokio-console at %s: no update received in the window", addr)
		}
		return res
	}
	cw := st.window()
	prof := cw.asyncProfile(t.Name)
	if err := prof.CheckValid(); err != nil {
		res.Err = fmt.Errorf("tokio-console at %s: building the async profile: %w", addr, err)
		return res
	}
	res.Profile = prof
	res.Start, res.End = cw.Start, cw.End
	var scaled string
	if win := w.Ended().Sub(w.Start); prewindow && win > 0 && cw.End.Sub(cw.Start) > win {
		// Updates come once per publish interval (1 s by default), so
		// the measurement runs from the last update before the window
		// to the first after it: scale it to the window (shares are
		// unchanged; values assume the tasks' rates were steady across
		// the edges), and say so.
		span := cw.End.Sub(cw.Start)
		scaleProfile(prof, float64(win)/float64(span))
		prof.TimeNanos, prof.DurationNanos = w.Start.UnixNano(), int64(win)
		res.Start, res.End = w.Start, w.Ended()
		scaled = fmt.Sprintf("; measured between subscriber updates %v apart around the %v window, scaled to it", span.Round(time.Millisecond), win.Round(time.Millisecond))
	}
	res.Status = bundle.StatusOK
	switch {
	case streamErr != nil:
		res.Status = bundle.StatusPartial
		if errors.Is(streamErr, io.EOF) || status.Code(streamErr) != codes.Unknown {
			res.Err = fmt.Errorf("tokio-console at %s: stream closed mid-window after %d updates; the profile covers %v of the window: %w",
				addr, st.updates, cw.End.Sub(cw.Start).Round(time.Millisecond), streamErr)
		} else {
			res.Err = fmt.Errorf("tokio-console at %s: %w", addr, streamErr)
		}
	case st.afterMk == 0:
		res.Status = bundle.StatusPartial
		res.Err = fmt.Errorf("tokio-console at %s: only one update in the window: the publish interval (TOKIO_CONSOLE_PUBLISH_INTERVAL) is longer than the window, or the console is paused by another client", addr)
	}
	res.Note = consoleNote(cw) + scaled
	return res
}

// Prepares says the collector connects before the window opens: its
// baseline is then the last update before the window, not the first one
// in it (which comes up to a publish interval late).
func (c *Collector) Prepares() bool { return true }

// scaleProfile multiplies every time value (nanoseconds) of p by f;
// counts (polls) stay as measured.
func scaleProfile(p *profile.Profile, f float64) {
	for _, s := range p.Sample {
		for i, v := range s.Value {
			if p.SampleType[i].Unit == "nanoseconds" {
				s.Value[i] = int64(math.Round(float64(v) * f))
			}
		}
	}
}

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
	fmt.Fprintf(&b, "%d tasks alive in the window (%d spawned, %d completed in it)", len(cw.Tasks), spawned, finished)
	if cw.Dropped > 0 {
		fmt.Fprintf(&b, "; the subscriber dropped %d events", cw.Dropped)
	}
	if len(cw.Warnings) > 0 {
		fmt.Fprintf(&b, "; %d warnings:", len(cw.Warnings))
		for _, w := range cw.Warnings {
			b.WriteString("\n  ")
			b.WriteString(strings.TrimPrefix(w, bundle.WarningPrefix))
		}
	}
	return b.String()
}
