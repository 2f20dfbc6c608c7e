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

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/targets"
)

// Result is one captured (or failed) profile of one target.
type Result struct {
	Kind      bundle.Kind
	Collector string
	Profile   *profile.Profile // nil unless Status is ok or partial
	Start     time.Time        // when sampling actually started
	End       time.Time        // when sampling actually ended
	Status    bundle.Status
	Err       error  // why it failed, is partial or unsupported
	Note      string // advice for the reader, e.g. "mutex profiling is off"
}

// Emit receives results. It is safe to call from several goroutines.
type Emit func(Result)

// Availability says whether a collector can capture a kind from a target.
type Availability struct {
	Kind      bundle.Kind
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
	Kinds(t *targets.Target) []bundle.Kind
	Probe(ctx context.Context, t *targets.Target) []Availability
	Collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit)
}

// Preflighter is implemented by collectors that can tell cheaply, without
// touching the target, that they cannot take a kind here (a tool is
// missing, privileges are lacking). A capture then prefers another
// collector that offers the same kind.
type Preflighter interface {
	Preflight(t *targets.Target, k bundle.Kind) error
}
