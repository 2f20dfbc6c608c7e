package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/capture"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/collectors/ebpf"
	"github.com/profcap/profcap/collectors/tokioconsole"
	"github.com/profcap/profcap/pyroscope"
	"github.com/profcap/profcap/report"
	"github.com/profcap/profcap/targets"
)

const recordExamples = `
Examples:
  # From a cluster root with .pids/ (or a profcap.yaml): one service, 60 s
  profcap record --target orchestration-1 --duration 60s

  # Every worker, only CPU and heap
  profcap record --target 'worker-*' --profiles cpu,heap

  # Any Go service with net/http/pprof, no configuration
  profcap record --url http://127.0.0.1:6060/debug/pprof --duration 5s --out /tmp/cap

  # The window lasts as long as a benchmark run (at most --duration)
  profcap record --all --duration 5m -- ./run-benchmark.sh
`

// targetFlags are the flags that pick targets (record and targets share them).
type targetFlags struct {
	fs  *pflag.FlagSet
	sel targets.Selection
}

func (tf *targetFlags) register(fs *pflag.FlagSet) {
	tf.fs = fs
	fs.StringVar(&tf.sel.Config, "config", targets.DefaultConfig, "targets file")
	fs.StringArrayVar(&tf.sel.Names, "target", nil, "target name or shell pattern, e.g. 'worker-*' (repeatable)")
	fs.BoolVar(&tf.sel.All, "all", false, "every target of the targets file or .pids/")
	fs.StringArrayVar(&tf.sel.URLs, "url", nil, "ad-hoc target: pprof base URL, e.g. http://127.0.0.1:6060/debug/pprof (repeatable)")
	fs.IntSliceVar(&tf.sel.PIDs, "pid", nil, "ad-hoc target: process id for perf/samply (repeatable)")
}

// selection is what the parsed flags select; require as in targets.Selection.
func (tf *targetFlags) selection(require bool) targets.Selection {
	sel := tf.sel
	sel.ConfigExplicit = tf.fs.Changed("config")
	sel.Require = require
	return sel
}

func runRecord(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("record", pflag.ContinueOnError)
	var tf targetFlags
	tf.register(fs)
	duration := fs.Duration("duration", 30*time.Second, "length of the capture window")
	slice := fs.Duration("slice", 2*time.Second, "longest single request for CPU and wall profiles; an interrupted window loses at most this much of them")
	kinds := fs.StringSlice("profiles", nil, "kinds to capture, overriding --overhead's list: "+kindList())
	overhead := fs.String("overhead", "default", "what the capture may cost the targets: low (cpu at a low rate, heap), default (every kind but fgprof's wall clock), full (everything)")
	out := fs.String("out", "", "bundle directory (default ./profcap-<UTC time>-<first target>)")
	maxSize := fs.String("max-profile-size", "256MiB", "largest profile response accepted from a target")
	var perfOpt collectors.PerfOptions
	fs.IntVar(&perfOpt.Frequency, "perf-frequency", 99, "perf CPU sampling frequency in Hz (99: a prime, so sampling does not run in lockstep with periodic work)")
	fs.StringVar(&perfOpt.CallGraph, "call-graph", "fp", "perf stack unwinding: fp (frame pointers, cheap) or dwarf (works without frame pointers, costs more)")
	fs.BoolVar(&perfOpt.ExcludeRunnable, "offcpu-exclude-runnable", false, "leave preempted (runnable, state R) time out of offcpu profiles")
	fs.BoolVar(&perfOpt.NoFollow, "perf-no-follow", false, "profile the PID as given, without following a launcher (uv run, sh -c) to its child")
	force := fs.String("collector", "", "take every kind this collector offers from it, even where another would be preferred: perf, samply, py-spy, rbspy, pprof or tokio-console")
	baseline := fs.Duration("baseline", time.Second, "measure each local target's CPU use for this long before the window, to compare with its use during the window (0 to skip)")
	quiet := fs.Bool("quiet", false, "print only the bundle path and errors")
	push := fs.String("push", "", "after the capture, send the bundle to the Grafana Pyroscope server at `URL` (credentials from PROFCAP_PYROSCOPE_* variables; see profcap push --help)")
	jsonOut := fs.Bool("json", false, "print machine-readable events, one JSON object per line, on stdout")
	if done, err := parseArgs(fs, args, stdout, func(w io.Writer) {
		fmt.Fprintf(w, "Usage: profcap record [flags] [-- WORKLOAD COMMAND...]\n\nCapture profiles of live services over one window into a bundle with a report.\n\nFlags:\n%s%s", fs.FlagUsages(), recordExamples)
	}); done || err != nil {
		return err
	}
	var workload []string
	if dash := fs.ArgsLenAtDash(); dash >= 0 {
		if dash > 0 {
			return usageError("unexpected arguments before --: %q", fs.Args()[:dash])
		}
		workload = fs.Args()[dash:]
		if len(workload) == 0 {
			return usageError("-- must be followed by a workload command")
		}
	} else if fs.NArg() > 0 {
		return usageError("unexpected arguments %q (a workload command goes after --)", fs.Args())
	}
	if *duration <= 0 {
		return usageError("--duration must be positive")
	}
	if *slice < time.Second {
		return usageError("--slice must be at least 1s (pprof endpoints take whole seconds)")
	}
	if !collectors.ValidCallGraph(perfOpt.CallGraph) {
		return usageError("--call-graph %q: want fp or dwarf", perfOpt.CallGraph)
	}
	if perfOpt.Frequency <= 0 || perfOpt.Frequency > 100000 {
		return usageError("--perf-frequency must be between 1 and 100000")
	}
	limit, err := parseSize(*maxSize)
	if err != nil {
		return usageError("--max-profile-size: %v", err)
	}
	preset, ok := presets[*overhead]
	if !ok {
		return usageError("--overhead %q: want low, default or full", *overhead)
	}
	if !fs.Changed("perf-frequency") && preset.perfFrequency > 0 {
		perfOpt.Frequency = preset.perfFrequency // before the collectors are made
	}
	cs := defaultCollectors(limit, perfOpt)
	if *force != "" && !slices.ContainsFunc(cs, func(c collectors.Collector) bool { return c.Name() == *force }) {
		var names []string
		for _, c := range cs {
			names = append(names, c.Name())
		}
		return usageError("--collector %q: want one of %s", *force, strings.Join(names, ", "))
	}
	want, explicit := preset.kinds, false
	if len(*kinds) > 0 {
		want, explicit = nil, true
	}
	for _, k := range *kinds {
		kk, ok := bundle.ParseKind(strings.TrimSpace(k))
		if !ok {
			return usageError("--profiles: unknown kind %q (known: %s)", k, kindList())
		}
		want = append(want, kk)
	}
	var pushCreds pyroscope.Credentials
	if *push != "" {
		if err := pyroscope.ValidateServer(*push); err != nil {
			return usageError("--push: %v", err)
		}
		// Read the credentials now: a missing variable is better found
		// before a 60 s capture than after it.
		if pushCreds, err = pyroscope.DefaultCredentialSource().Resolve(); err != nil {
			return usageError("--push: %v", err)
		}
	}
	ts, _, err := targets.Resolve(tf.selection(true))
	if err != nil {
		return err
	}
	dir := *out
	if dir == "" {
		// Milliseconds, and a number added if the name is still taken:
		// captures started together never share a bundle.
		dir = "profcap-" + time.Now().UTC().Format("20060102T150405.000Z") + "-" + targets.SafeName(ts[0].Name)
	}

	// First SIGINT/SIGTERM ends the window and keeps everything; the second
	// abandons what is in flight (the manifest stays valid).
	sigs, stopSignals := notifySignals()
	defer stopSignals()
	stop := make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		n := 0
		for {
			select {
			case <-sigs:
				n++
				if n == 1 {
					close(stop)
				} else {
					cancel()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()

	p := newPrinter(stdout, stderr, *quiet, *jsonOut)
	p.header(ts, *duration, dir)
	outcome, err := capture.Run(ctx, capture.Options{
		Targets:    ts,
		Kinds:      want,
		Explicit:   explicit,
		Duration:   *duration,
		Slice:      *slice,
		Out:        dir,
		OutUnique:  *out == "",
		Workload:   workload,
		Collectors: cs,
		Prefer:     *force,
		Stop:       stop,
		Events:     p.event,
		Render:     report.Write,
		Version:    versionInfo(),
		Baseline:   *baseline,
	})
	if err != nil {
		return err
	}
	p.summary(outcome)
	if *push != "" && outcome.Captured > 0 && ctx.Err() == nil {
		rep, err := pyroscope.Push(ctx, outcome.Dir, pyroscope.Options{Server: *push, Credentials: pushCreds})
		switch {
		case err != nil:
			// The capture itself is kept whole; a failed push makes the
			// run partial, and profcap push can send the rest later.
			fmt.Fprintf(stderr, "push to %s: %v\n(the bundle is intact; run 'profcap push %s --server %s' to retry)\n", pyroscope.RedactURL(*push), err, outcome.Dir, pyroscope.RedactURL(*push))
			if !*jsonOut {
				fmt.Fprintf(stdout, "%s\n", outcome.Dir)
			}
			return &exitError{code: 3, err: errSilent}
		case rep != nil:
			fmt.Fprintf(stderr, "pushed %d profile(s) to %s\n", rep.Count(pyroscope.StatusPushed), pyroscope.RedactURL(*push))
		}
	}
	if !*jsonOut {
		fmt.Fprintf(stdout, "%s\n", outcome.Dir)
	}
	if code := outcome.ExitCode(); code != 0 {
		return &exitError{code: code, err: errSilent}
	}
	return nil
}

// A preset is what --overhead selects: the kinds taken when --profiles is
// not given, and perf's sampling rate. The figures behind them are in
// docs/overhead.md (make bench-overhead).
type preset struct {
	kinds         []bundle.Kind
	perfFrequency int
}

var presets = map[string]preset{
	// low: on-CPU at half perf's default rate and the live heap, nothing
	// that samples every goroutine or traces the scheduler.
	"low": {kinds: []bundle.Kind{bundle.CPU, bundle.Heap}, perfFrequency: 49},
	// default: everything but fgprof's wall clock, which samples every
	// goroutine 99 times a second and costs a saturated service the most.
	"default": {kinds: []bundle.Kind{bundle.CPU, bundle.OffCPU, bundle.Async, bundle.Heap,
		bundle.Allocs, bundle.Goroutine, bundle.Mutex, bundle.Block}},
	"full": {kinds: nil},
}

// defaultCollectors lists the collectors in priority order: a kind two of
// them offer for one target is taken by the first that can work here. perf
// comes first: where a target's PID is local and perf is allowed, its CPU
// profile costs a service less than Go's own profiler and also shows
// kernel and native frames.
func defaultCollectors(maxProfileSize int64, perf collectors.PerfOptions) []collectors.Collector {
	// py-spy and rbspy offer cpu only for Python and Ruby targets (and only
	// where installed); samply is taken where perf cannot work (macOS, no
	// permission).
	return []collectors.Collector{
		collectors.NewPySpy(collectors.SpyOptions{}),
		collectors.NewRbspy(collectors.SpyOptions{PerfFrequency: perf.Frequency}),
		// perf for processes that write a jitdump (Bun): it names their JIT
		// frames, which eBPF and plain perf leave unnamed.
		collectors.NewJITPerf(perf),
		// eBPF where it loads (root or CAP_BPF+CAP_PERFMON, kernel BTF):
		// the whole process tree, counted in the kernel; perf otherwise.
		ebpf.New(ebpf.Options{Frequency: perf.Frequency, ExcludeRunnable: perf.ExcludeRunnable, NoFollow: perf.NoFollow}),
		collectors.NewPerf(perf),
		collectors.NewSamply(collectors.SamplyOptions{}),
		collectors.NewPprof(collectors.PprofOptions{MaxProfileSize: maxProfileSize}),
		tokioconsole.New(tokioconsole.Options{}),
	}
}

func kindList() string {
	var ks []string
	for _, k := range bundle.AllKinds {
		ks = append(ks, string(k))
	}
	return strings.Join(ks, ",")
}

// parseSize parses sizes like 256MiB, 10MB, 4096.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.m
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != s {
		return 0, fmt.Errorf("%q is not a size like 256MiB", s)
	}
	return n * mult, nil
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
