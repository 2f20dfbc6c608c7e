package bundle

import (
	"time"
)

// The vocabulary every package that produces, stores or reads a bundle
// shares. It lives with the format so that rendering (flame, report) and
// publishing (pyroscope) never depend on the packages that capture.

// Kind names a kind of profile. The names are the ones used in bundles,
// flags and reports.
type Kind string

const (
	CPU       Kind = "cpu"       // on-CPU samples (time)
	Wall      Kind = "wall"      // wall-clock samples, on and off CPU (fgprof)
	OffCPU    Kind = "offcpu"    // time blocked, by the stack that blocked
	Heap      Kind = "heap"      // live heap at the end of the window
	Allocs    Kind = "allocs"    // allocations during the window
	Goroutine Kind = "goroutine" // goroutines at the end of the window
	Mutex     Kind = "mutex"     // lock contention during the window
	Block     Kind = "block"     // blocking on synchronisation during the window
	Async     Kind = "async"     // async task busy/scheduled/idle time (tokio-console)
	Wakeup    Kind = "wakeup"    // blocked time by the stack that woke the thread, joined to the blocked stack
	Await     Kind = "await"     // task-seconds by the await point where each async task is suspended (task dumps)
)

// AllKinds lists every kind in the order reports show them.
var AllKinds = []Kind{CPU, Wall, OffCPU, Wakeup, Async, Await, Heap, Allocs, Goroutine, Mutex, Block}

// ParseKind reports whether s names a known kind.
func ParseKind(s string) (Kind, bool) {
	for _, k := range AllKinds {
		if string(k) == s {
			return k, true
		}
	}
	return "", false
}

// IsDelta reports whether a profile of kind k covers the window (what
// happened during it) rather than an instant at its end. Heap and goroutine
// profiles are instants; every other kind is a delta over the window.
func (k Kind) IsDelta() bool { return k != Heap && k != Goroutine }

// Status is the state of a profile, a target or a whole bundle.
type Status string

const (
	StatusOK          Status = "ok"
	StatusPartial     Status = "partial"     // some data, but the capture was cut short
	StatusFailed      Status = "failed"      // nothing usable
	StatusUnsupported Status = "unsupported" // the target does not offer this kind
	// StatusPending is a planned profile whose result has not arrived.
	StatusPending Status = "pending"
	// StatusCapturing is a target or bundle whose window is still open.
	StatusCapturing Status = "capturing"
)

// Kept reports whether a profile of this status has data on disk.
func (s Status) Kept() bool { return s == StatusOK || s == StatusPartial }

// Final reports whether the status will not change again.
func (s Status) Final() bool { return s != StatusPending && s != StatusCapturing && s != "" }

// WarningPrefix starts every profile comment that is a warning for the
// reader (a lint, data known to be missing): the report lists them.
const WarningPrefix = "warning: "

// TimeFormat is the format of window and profile times in the manifest.
const TimeFormat = time.RFC3339Nano
