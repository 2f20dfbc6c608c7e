package collectors

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/rusttest"
	"github.com/profcap/profcap/targets"
)

// fpFake is a collector that offers cpu and wakeup, prepares, and passes
// every preflight.
type fpFake struct{}

func (fpFake) Name() string                        { return "fake" }
func (fpFake) Kinds(*targets.Target) []bundle.Kind { return []bundle.Kind{bundle.CPU, bundle.Wakeup} }
func (fpFake) Probe(context.Context, *targets.Target) []Availability {
	return []Availability{{Kind: bundle.CPU, Collector: "fake", Available: true}, {Kind: bundle.Wakeup, Collector: "fake", Available: true}}
}
func (fpFake) Collect(context.Context, *Window, *targets.Target, []bundle.Kind, Emit) {}
func (fpFake) Preflight(*targets.Target, bundle.Kind) error                           { return nil }
func (fpFake) Prepares() bool                                                         { return true }

// TestGate: a gate turns its collector away from the gated kinds of a
// target it has a reason for, says why in the probe (a lack, so that Plan
// takes the next collector), and leaves other targets, the other kinds
// and Prepares alone.
func TestGate(t *testing.T) {
	g := newGate(fpFake{}, []bundle.Kind{bundle.CPU}, func(t *targets.Target) string {
		if t.Name == "refused" {
			return "refused for the test"
		}
		return ""
	})
	if p, ok := g.(Preparer); !ok || !p.Prepares() {
		t.Error("Prepares not forwarded")
	}
	pf := g.(Preflighter)
	refused := &targets.Target{Name: "refused", PID: os.Getpid()}
	err := pf.Preflight(refused, bundle.CPU)
	if err == nil || !isLack(err) || !strings.Contains(err.Error(), "refused for the test") {
		t.Errorf("preflight cpu: %v, want a lack with the reason", err)
	}
	if err := pf.Preflight(refused, bundle.Wakeup); err != nil {
		t.Errorf("preflight wakeup (not gated): %v", err)
	}
	for _, a := range g.Probe(context.Background(), refused) {
		if a.Kind == bundle.CPU && (a.Available || !strings.Contains(a.Reason, "refused for the test")) {
			t.Errorf("probe cpu: %+v", a)
		}
		if a.Kind == bundle.Wakeup && !a.Available {
			t.Errorf("probe wakeup: %+v", a)
		}
	}
	if err := pf.Preflight(&targets.Target{Name: "other", PID: os.Getpid()}, bundle.CPU); err != nil {
		t.Errorf("preflight cpu of another target: %v", err)
	}
}

// TestFramePointersVerdict: refsvc's release build (Rust, no frame
// pointers) and its profiling build (frame pointers) get the verdicts the
// perf collector (--call-graph dwarf) and the eBPF collector (CFI
// unwinding) act on.
func TestFramePointersVerdict(t *testing.T) {
	for _, tc := range []struct {
		variant string
		want    bool
	}{{rusttest.Release, false}, {rusttest.Profiling, true}} {
		if fp := FramePointersOf(rusttest.Binary(t, tc.variant)); !fp.Known || fp.Present != tc.want {
			t.Errorf("refsvc-%s: %s, want frame pointers %v", tc.variant, fp, tc.want)
		}
	}
}
