package collectors

import (
	"context"
	"math"
	"os"
	"sync"
	"time"
)

// Window is the one capture window every collector of a capture shares.
// A capture makes it pending, starts the collectors that need set-up
// (Preparer), and opens it when every one of them is ready: the window is
// then the time every collector really samples. It ends at the Deadline,
// or earlier when End is called (the workload exited, the user pressed
// Ctrl-C).
type Window struct {
	// Start and Deadline are set when the window opens; read them after
	// Opened is closed (collectors started after the window opened may
	// read them at once).
	Start    time.Time
	Deadline time.Time
	// Slice is the longest single request a collector should make for
	// duration-based endpoints (a Go CPU profile cannot be stopped early, so
	// a window cut short loses at most one slice).
	Slice time.Duration
	// TempDir, if set, is where collectors keep their temporary files
	// (a directory inside the bundle, which the capture removes at its
	// end): a profcap killed mid-capture leaves them in the bundle it was
	// writing, not scattered in $TMPDIR.
	TempDir string

	d        time.Duration
	ctx      context.Context
	cancel   context.CancelFunc
	opened   chan struct{}
	openOnce sync.Once
	mu       sync.Mutex
	reason   string
	ended    time.Time
}

// ReasonInterrupted is the End reason for a user's Ctrl-C or SIGTERM: the
// user wants out now, so collectors drop requests in flight rather than wait
// for them. For other reasons (the workload exited) a request in flight may
// finish.
const ReasonInterrupted = "interrupted"

// Interrupted reports whether the window was ended by the user.
func (w *Window) Interrupted() bool { return w.EndedEarly() == ReasonInterrupted }

// NewWindow opens a window of the given duration now.
func NewWindow(d, slice time.Duration) *Window {
	w := NewPendingWindow(d, slice)
	w.Open()
	return w
}

// NewPendingWindow returns a window of the given duration that opens when
// Open is called.
func NewPendingWindow(d, slice time.Duration) *Window {
	ctx, cancel := context.WithCancel(context.Background())
	if slice <= 0 || slice > d {
		slice = d
	}
	return &Window{Slice: slice, d: d, ctx: ctx, cancel: cancel, opened: make(chan struct{})}
}

// Open opens the window now (once; later calls do nothing). A window ended
// before it opened stays ended.
func (w *Window) Open() {
	w.openOnce.Do(func() {
		w.mu.Lock()
		w.Start = time.Now()
		w.Deadline = w.Start.Add(w.d)
		w.mu.Unlock()
		time.AfterFunc(w.d, func() { w.end("") })
		close(w.opened)
	})
}

// Opened is closed when the window opens.
func (w *Window) Opened() <-chan struct{} { return w.opened }

// Done is closed when the window ends.
func (w *Window) Done() <-chan struct{} { return w.ctx.Done() }

// Context is done when the window ends. Collectors use it to stop sampling
// (not to abandon data: that is the ctx passed to Collect).
func (w *Window) Context() context.Context { return w.ctx }

// End ends the window now, recording why. Later calls keep the first reason.
func (w *Window) End(reason string) { w.end(reason) }

func (w *Window) end(reason string) {
	w.mu.Lock()
	if w.ctx.Err() == nil {
		w.reason = reason
		w.ended = time.Now()
	}
	w.mu.Unlock()
	w.cancel()
}

// Ended is when the window ended (zero while it is open).
func (w *Window) Ended() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ended
}

// EndedEarly returns the reason given to End if the window ended before its
// deadline, or "".
func (w *Window) EndedEarly() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reason
}

// Remaining is the time left until the window ends (0 once it has ended,
// the whole duration while it has not opened).
func (w *Window) Remaining() time.Duration {
	if w.ctx.Err() != nil {
		return 0
	}
	w.mu.Lock()
	deadline := w.Deadline
	w.mu.Unlock()
	if deadline.IsZero() {
		return w.d
	}
	if d := time.Until(deadline); d > 0 {
		return d
	}
	return 0
}

// RemainingSeconds is Remaining in whole seconds, rounded up, and at least
// 1: the duration to give a tool that takes whole seconds (samply -d,
// py-spy --duration) and is stopped at the window's end anyway.
func (w *Window) RemainingSeconds() int {
	return max(1, int(math.Ceil(w.Remaining().Seconds())))
}

// Preparer is implemented by collectors that need set-up before they can
// sample (start a tool, load and attach BPF programs). The capture starts
// them before the window opens, and opens it when each has called Ready;
// they then wait for Opened before sampling. Other collectors are started
// once the window is open.
type Preparer interface {
	Prepares() bool
}

type readyKey struct{}

// WithReady returns a context whose Ready calls fn (once).
func WithReady(ctx context.Context, fn func()) context.Context {
	var once sync.Once
	return context.WithValue(ctx, readyKey{}, func() { once.Do(fn) })
}

// Ready tells the capture that the collector running under ctx is set up
// and will sample from the moment the window opens. A collector calls it
// once from Collect (also when it fails to set up: it is then ready to
// report). Without a capture waiting, it does nothing.
func Ready(ctx context.Context) {
	if fn, ok := ctx.Value(readyKey{}).(func()); ok {
		fn()
	}
}

// WaitOpen waits until the window opens; false if it ended first or ctx
// was done.
func (w *Window) WaitOpen(ctx context.Context) bool {
	select {
	case <-w.opened:
		return w.ctx.Err() == nil
	case <-w.Done():
		return false
	case <-ctx.Done():
		return false
	}
}

// tempDir is where a collector makes its temporary directory: its own
// option, else the window's, else os.TempDir().
func (w *Window) tempDir(own string) string {
	if own != "" {
		return own
	}
	if w != nil && w.TempDir != "" {
		if err := os.MkdirAll(w.TempDir, 0o700); err == nil {
			return w.TempDir
		}
	}
	return ""
}
