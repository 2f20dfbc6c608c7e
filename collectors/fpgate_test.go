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

// TestNeedsFramePointers: the gate turns the frame-pointer collector away
// from the gated kinds of a process whose executable has no frame pointers
// (refsvc's release build), says why in the probe, and leaves a process
// with them (this Go test binary), the other kinds and Prepares alone.
func TestNeedsFramePointers(t *testing.T) {
	svc := rusttest.Start(t, rusttest.Release, "worker", "--no-console")
	g := NeedsFramePointers(fpFake{}, bundle.CPU)
	if p, ok := g.(Preparer); !ok || !p.Prepares() {
		t.Error("Prepares not forwarded")
	}
	pf := g.(Preflighter)
	frameless := &targets.Target{Name: "refsvc", PID: svc.PID}
	err := pf.Preflight(frameless, bundle.CPU)
	if err == nil || !isLack(err) || !strings.Contains(err.Error(), "no frame pointers") || !strings.Contains(err.Error(), "--call-graph dwarf") {
		t.Errorf("preflight cpu of refsvc-release: %v, want a lack naming the missing frame pointers", err)
	}
	if err := pf.Preflight(frameless, bundle.Wakeup); err != nil {
		t.Errorf("preflight wakeup (not gated): %v", err)
	}
	for _, a := range g.Probe(context.Background(), frameless) {
		if a.Kind == bundle.CPU && (a.Available || !strings.Contains(a.Reason, "frame pointers only")) {
			t.Errorf("probe cpu: %+v", a)
		}
		if a.Kind == bundle.Wakeup && !a.Available {
			t.Errorf("probe wakeup: %+v", a)
		}
	}
	self := &targets.Target{Name: "self", PID: os.Getpid()}
	if err := pf.Preflight(self, bundle.CPU); err != nil {
		t.Errorf("preflight cpu of a Go binary (frame pointers): %v", err)
	}
}
