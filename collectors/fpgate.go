package collectors

import (
	"context"
	"fmt"
	"slices"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/targets"
)

// NeedsFramePointers wraps a collector that walks user stacks by frame
// pointers only (the eBPF collector) so that a capture does not take kinds
// of a process whose executable sets up no frame pointers from it: its
// stacks would stop after the sampled function (94% of refsvc-release's
// samples had at most 2 user frames with perf --call-graph fp). Preflight
// then fails for those kinds, so Plan takes the next collector, perf,
// which records them with --call-graph dwarf (auto); Probe says why. A
// forced --collector still gets it. Everything else is the wrapped
// collector's.
func NeedsFramePointers(c Collector, kinds ...bundle.Kind) Collector {
	g := &fpGate{Collector: c, kinds: kinds}
	g.pf, _ = c.(Preflighter)
	g.prep, _ = c.(Preparer)
	return g
}

type fpGate struct {
	Collector
	pf    Preflighter
	prep  Preparer
	kinds []bundle.Kind
}

var _ interface {
	Collector
	Preflighter
	Preparer
} = (*fpGate)(nil)

// framelessProcess says why pid's stacks cannot be walked by frame
// pointers, or "".
func framelessProcess(t *targets.Target) string {
	pid, _, err := resolveProcess(t, false)
	if err != nil {
		return ""
	}
	fp := framePointers(fmt.Sprintf("/proc/%d/exe", pid))
	if !fp.Known || fp.Present {
		return ""
	}
	return fmt.Sprintf("%s has %s, and this collector walks stacks by frame pointers only: perf records it with --call-graph dwarf instead", exePath(pid), fp)
}

func (g *fpGate) Preflight(t *targets.Target, k bundle.Kind) error {
	if g.pf != nil {
		if err := g.pf.Preflight(t, k); err != nil {
			return err
		}
	}
	if slices.Contains(g.kinds, k) {
		if why := framelessProcess(t); why != "" {
			return lack{fmt.Errorf("%s", why)}
		}
	}
	return nil
}

func (g *fpGate) Probe(ctx context.Context, t *targets.Target) []Availability {
	av := g.Collector.Probe(ctx, t)
	why := ""
	for i := range av {
		if av[i].Available && slices.Contains(g.kinds, av[i].Kind) {
			if why == "" {
				why = framelessProcess(t)
				if why == "" {
					break
				}
			}
			av[i].Available, av[i].Reason = false, why
		}
	}
	return av
}

func (g *fpGate) Prepares() bool { return g.prep != nil && g.prep.Prepares() }
