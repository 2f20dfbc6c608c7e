package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/collectors/taskdump"
	"github.com/profcap/profcap/internal/secret"
	"github.com/profcap/profcap/internal/termsafe"
	"github.com/profcap/profcap/targets"
)

const targetsExamples = `
Examples:
  profcap targets                       # profcap.yaml here, else .pids/
  profcap targets --config cluster.yaml --target 'worker-*'
  profcap targets --url http://127.0.0.1:6060/debug/pprof
`

func runTargets(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("targets", pflag.ContinueOnError)
	var tf targetFlags
	tf.register(fs)
	noProbe := fs.Bool("no-probe", false, "only list the targets; do not contact them")
	if done, err := parseArgs(fs, args, stdout, func(w io.Writer) {
		fmt.Fprintf(w, "Usage: profcap targets [flags]\n\nList the targets and probe each: which collectors and kinds are available, and why not.\n\nFlags:\n%s%s", fs.FlagUsages(), targetsExamples)
	}); done || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments %q", fs.Args())
	}
	ts, source, err := targets.Resolve(tf.selection(false))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d target(s) from %s\n", len(ts), source)
	cs := defaultCollectors(0, collectors.PerfOptions{}, taskdump.Options{})
	results := make([][]collectors.Availability, len(ts))
	if !*noProbe {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := range ts {
			for _, c := range cs {
				if len(c.Kinds(&ts[i])) == 0 {
					continue // nothing configured for this collector
				}
				wg.Add(1)
				go func(i int, c collectors.Collector) {
					defer wg.Done()
					a := c.Probe(ctx, &ts[i])
					mu.Lock()
					results[i] = append(results[i], a...)
					mu.Unlock()
				}(i, c)
			}
		}
		wg.Wait()
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for i, t := range ts {
		fmt.Fprintf(tw, "\n%s\t%s\n", termsafe.String(t.Name), termsafe.String(describeTarget(&t)))
		if *noProbe {
			continue
		}
		if len(results[i]) == 0 {
			fmt.Fprintf(tw, "  -\tno collector applies: give it a pprof URL, a pid or a tokio_console address\n")
		}
		rs := results[i]
		sort.SliceStable(rs, func(a, b int) bool { return kindOrder(rs[a].Kind) < kindOrder(rs[b].Kind) })
		// One line for a collector that cannot reach the target at all.
		byCollector := map[string][]collectors.Availability{}
		var order []string
		for _, a := range rs {
			if _, ok := byCollector[a.Collector]; !ok {
				order = append(order, a.Collector)
			}
			byCollector[a.Collector] = append(byCollector[a.Collector], a)
		}
		for _, c := range order {
			as := byCollector[c]
			same := len(as) > 1
			for _, a := range as {
				same = same && !a.Available && a.Reason == as[0].Reason
			}
			if same {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", "*", c, "unreachable", termsafe.String(secret.RedactText(as[0].Reason)))
				rs = slices.DeleteFunc(rs, func(a collectors.Availability) bool { return a.Collector == c })
			}
		}
		for _, a := range rs {
			state := "available"
			if !a.Available {
				state = "unavailable"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", a.Kind, a.Collector, state, termsafe.String(secret.RedactText(a.Reason)))
		}
	}
	return tw.Flush()
}

func kindOrder(k bundle.Kind) int {
	for i, kk := range bundle.AllKinds {
		if kk == k {
			return i
		}
	}
	return len(bundle.AllKinds)
}

func describeTarget(t *targets.Target) string {
	var parts []string
	if t.Pprof != "" {
		parts = append(parts, "pprof "+secret.RedactURL(t.Pprof))
	}
	if t.PID != 0 {
		parts = append(parts, fmt.Sprintf("pid %d", t.PID))
	} else if t.PIDFile != "" {
		if pid, err := t.ResolvePID(); err == nil {
			parts = append(parts, fmt.Sprintf("pid %d (%s)", pid, t.PIDFile))
		} else {
			parts = append(parts, fmt.Sprintf("pidfile %s: %v", t.PIDFile, err))
		}
	}
	if t.TokioConsole != "" {
		parts = append(parts, "tokio-console "+t.TokioConsole)
	}
	if len(t.Labels) > 0 {
		var ls []string
		for k, v := range t.Labels {
			ls = append(ls, k+"="+v)
		}
		sort.Strings(ls)
		parts = append(parts, "labels "+strings.Join(ls, ","))
	}
	return strings.Join(parts, "; ")
}
