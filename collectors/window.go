package collectors

import (
	"context"
	"math"
	"sync"
	"time"
)

// Window is the one capture window every collector of a capture shares.
// It starts at Start and ends at the Deadline, or earlier when End is called
// (the workload exited, the user pressed Ctrl-C).
type Window struct {
	Start    time.Time
	Deadline time.Time
	// Slice is the longest single request a collector should make for
	// duration-based endpoints (a Go CPU profile cannot be stopped early, so
	// a window cut short loses at most one slice).
	Slice time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	reason string
}

// ReasonInterrupted is the End reason for a user's Ctrl-C or SIGTERM: the
// user wants out now, so collectors drop requests in flight rather than wait
// for them. For other reasons (the workload exited) a request in flight may
// finish.
const ReasonInterrupted = "interrupted"

// Interrupted reports whether the window was ended by the user.
func (w *Window) Interrupted() bool { return w.EndedEarly() == ReasonInterrupted }

// NewWindow starts a window of the given duration now.
func NewWindow(d, slice time.Duration) *Window {
	start := time.Now()
	deadline := start.Add(d)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	if slice <= 0 || slice > d {
		slice = d
	}
	return &Window{Start: start, Deadline: deadline, Slice: slice, ctx: ctx, cancel: cancel}
}

// Done is closed when the window ends.
func (w *Window) Done() <-chan struct{} { return w.ctx.Done() }

// Context is done when the window ends. Collectors use it to stop sampling
// (not to abandon data: that is the ctx passed to Collect).
func (w *Window) Context() context.Context { return w.ctx }

// End ends the window now, recording why. Later calls keep the first reason.
func (w *Window) End(reason string) {
	w.mu.Lock()
	if w.reason == "" && w.ctx.Err() == nil {
		w.reason = reason
	}
	w.mu.Unlock()
	w.cancel()
}

// EndedEarly returns the reason given to End if the window ended before its
// deadline, or "".
func (w *Window) EndedEarly() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reason
}

// Remaining is the time left until the window ends (0 once it has ended).
func (w *Window) Remaining() time.Duration {
	if w.ctx.Err() != nil {
		return 0
	}
	if d := time.Until(w.Deadline); d > 0 {
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
