// Package collectors holds one file per profile source (pprof HTTP
// endpoints, perf, samply, py-spy and rbspy; tokio-console is the package
// collectors/tokioconsole, so that gRPC is built only where it is used).
// Every collector turns what it captures over a capture window into
// *profile.Profile values and hands them to an Emit function as soon as each
// one is ready, so a capture cut short keeps every profile already finished.
//
// What the sources share has one home: the window (window.go); the run of an
// external tool, with its one failure classifier (toolrun.go); the process
// facts, the privilege checks and the plumbing of the collectors that record
// a process with a tool (proc.go).
package collectors

import (
	"context"
	"fmt"
	"slices"
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
// kinds over w and emits one Result for each of them before it returns; it
// stops sampling when w ends and abandons everything when ctx is done.
//
// The caller asks Collect only for kinds that Kinds offered. A collector
// computes what it computes: it may emit results for kinds it was not asked
// for (two kinds from one recording, say), and the capture keeps only the
// kinds it asked for. So a collector does not check again which of its own
// kinds were asked for, except to save work it would otherwise do.
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

// Unsupported emits an unsupported result for each of kinds that the
// collector does not offer, and returns the kinds it does offer, in order.
// A collector's Collect starts with it, so that every kind asked of it gets
// a result even from a caller that did not go by Kinds.
func Unsupported(collector string, kinds []bundle.Kind, emit Emit, offers ...bundle.Kind) []bundle.Kind {
	var ok []bundle.Kind
	for _, k := range kinds {
		if slices.Contains(offers, k) {
			ok = append(ok, k)
			continue
		}
		emit(Result{Kind: k, Collector: collector, Status: bundle.StatusUnsupported, Err: fmt.Errorf("%s does not capture %s profiles", collector, k)})
	}
	return ok
}

// orDefault is v, or def where v is not positive: the zero value of an
// option (and a nonsense negative one) means its default.
func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
