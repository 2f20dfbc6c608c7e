// Package collectors holds one file per profile source (pprof HTTP endpoints,
// perf, samply, tokio-console). Every collector turns what it captures over a
// capture window into *profile.Profile values and hands them to an Emit
// function as soon as each one is ready, so a capture cut short keeps every
// profile already finished.
package collectors

import (
	"context"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/targets"
)

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
)

// AllKinds lists every kind in the order reports show them.
var AllKinds = []Kind{CPU, Wall, OffCPU, Async, Heap, Allocs, Goroutine, Mutex, Block}

// ParseKind reports whether s names a known kind.
func ParseKind(s string) (Kind, bool) {
	for _, k := range AllKinds {
		if string(k) == s {
			return k, true
		}
	}
	return "", false
}

// Status is the outcome of capturing one profile.
type Status string

const (
	StatusOK          Status = "ok"
	StatusPartial     Status = "partial"     // some data, but the capture was cut short
	StatusFailed      Status = "failed"      // nothing usable
	StatusUnsupported Status = "unsupported" // the target does not offer this kind
)

// Result is one captured (or failed) profile of one target.
type Result struct {
	Kind      Kind
	Collector string
	Profile   *profile.Profile // nil unless Status is ok or partial
	Start     time.Time        // when sampling actually started
	End       time.Time        // when sampling actually ended
	Status    Status
	Err       error  // why it failed, is partial or unsupported
	Note      string // advice for the reader, e.g. "mutex profiling is off"
}

// Emit receives results. It is safe to call from several goroutines.
type Emit func(Result)

// Availability says whether a collector can capture a kind from a target.
type Availability struct {
	Kind      Kind
	Collector string
	Available bool
	Reason    string // why not, or what was found
}

// Collector captures profiles of one target over one window.
//
// Kinds lists what the collector could capture from t without touching the
// target (from its configuration alone). Probe checks the target for real and
// must return quickly (a few seconds at most). Collect captures the given
// kinds over w and emits exactly one Result per kind before it returns; it
// stops sampling when w ends and abandons everything when ctx is done.
type Collector interface {
	Name() string
	Kinds(t *targets.Target) []Kind
	Probe(ctx context.Context, t *targets.Target) []Availability
	Collect(ctx context.Context, w *Window, t *targets.Target, kinds []Kind, emit Emit)
}

// Preflighter is implemented by collectors that can tell cheaply, without
// touching the target, that they cannot take a kind here (a tool is
// missing, privileges are lacking). A capture then prefers another
// collector that offers the same kind.
type Preflighter interface {
	Preflight(t *targets.Target, k Kind) error
}
