package collectors

import (
	"context"
	"debug/elf"
	"fmt"
	"slices"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/targets"
)

// The gates below turn a native collector away from some kinds of a
// process whose executable it would profile badly, so that Plan takes the
// next collector that offers them: Preflight fails for those kinds (a
// lack, as a missing tool is) and Probe says why. A forced --collector
// still gets them. Everything else is the wrapped collector's.

// DefersToPprof wraps a native collector (eBPF, perf, samply) so that it
// leaves kinds to the target's pprof endpoint where the target is a Go
// program whose executable has no symbol table (go build -ldflags=-s,
// strip, Debian's prometheus): the native collector could name none of its
// Go functions (frames show as prometheus+0x...), while the endpoint's
// profile is named by the Go runtime's own tables (.gopclntab, which
// stripping keeps). Only kinds the endpoint also serves should be gated:
// cpu. offcpu and wakeup, which only native collectors take, stay.
func DefersToPprof(c Collector, kinds ...bundle.Kind) Collector {
	return newGate(c, kinds, func(t *targets.Target) string {
		if why := GoWithoutSymbols(t); why != "" {
			return why + ": this collector would name none of its Go functions, its pprof endpoint does; taken from pprof"
		}
		return ""
	})
}

func newGate(c Collector, kinds []bundle.Kind, why func(*targets.Target) string) Collector {
	g := &gate{Collector: c, kinds: kinds, why: why}
	g.pf, _ = c.(Preflighter)
	g.prep, _ = c.(Preparer)
	return g
}

type gate struct {
	Collector
	pf    Preflighter
	prep  Preparer
	kinds []bundle.Kind
	// why says why the gated kinds of t are not this collector's, or "".
	why func(t *targets.Target) string
}

var _ interface {
	Collector
	Preflighter
	Preparer
} = (*gate)(nil)

// GoWithoutSymbols says, for a target with both a pprof endpoint and a
// PID, that its process is a Go program whose executable has no .symtab
// ("/usr/bin/prometheus is a Go binary without symbols (no .symtab)"), or
// "" (no endpoint, no process, symbols present, not Go, unreadable).
func GoWithoutSymbols(t *targets.Target) string {
	if t.Pprof == "" || !t.HasPID() {
		return ""
	}
	pid, _, err := resolveProcess(t, false)
	if err != nil {
		return ""
	}
	f, err := elf.Open(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return ""
	}
	defer f.Close()
	isGo := f.Section(".go.buildinfo") != nil || f.Section(".gopclntab") != nil
	if !isGo || f.Section(".symtab") != nil {
		return ""
	}
	return fmt.Sprintf("%s is a Go binary without symbols (no .symtab)", exePath(pid))
}

func (g *gate) Preflight(t *targets.Target, k bundle.Kind) error {
	if g.pf != nil {
		if err := g.pf.Preflight(t, k); err != nil {
			return err
		}
	}
	if slices.Contains(g.kinds, k) {
		if why := g.why(t); why != "" {
			return lack{fmt.Errorf("%s", why)}
		}
	}
	return nil
}

func (g *gate) Probe(ctx context.Context, t *targets.Target) []Availability {
	av := g.Collector.Probe(ctx, t)
	why := ""
	for i := range av {
		if av[i].Available && slices.Contains(g.kinds, av[i].Kind) {
			if why == "" {
				why = g.why(t)
				if why == "" {
					break
				}
			}
			av[i].Available, av[i].Reason = false, why
		}
	}
	return av
}

func (g *gate) Prepares() bool { return g.prep != nil && g.prep.Prepares() }
