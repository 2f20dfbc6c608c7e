package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/google/pprof/profile"
	"github.com/spf13/pflag"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/capture"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/collectors/ebpf"
	"github.com/profcap/profcap/collectors/taskdump"
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
	fs.StringVar(&perfOpt.CallGraph, "call-graph", "auto", "perf stack unwinding: fp (frame pointers, cheap), dwarf (works without frame pointers, about 30 times the data) or auto (dwarf only for executables built without frame pointers)")
	fs.BoolVar(&perfOpt.ExcludeRunnable, "offcpu-exclude-runnable", false, "leave preempted (runnable, state R) time out of offcpu profiles")
	fs.BoolVar(&perfOpt.NoFollow, "perf-no-follow", false, "profile the PID as given, without following a launcher (uv run, sh -c) to its child")
	var tdOpt taskdump.Options
	fs.DurationVar(&tdOpt.Interval, "taskdump-interval", taskdump.DefaultInterval, "time between task dumps of a Tokio target (await profiles); each dump pauses the runtime's workers for a moment (docs/taskdump.md)")
	force := fs.String("collector", "", "take every kind this collector offers from it, even where another would be preferred: perf, samply, py-spy, rbspy, pprof or tokio-console")
	baseline := fs.Duration("baseline", time.Second, "measure each local target's CPU use for this long before the window, to compare with its use during the window (0 to skip)")
	quiet := fs.Bool("quiet", false, "print only the bundle path and errors")
	push := fs.String("push", "", "after the capture, send the bundle to the Grafana Pyroscope server at `URL` (credentials from PROFCAP_PYROSCOPE_* variables; see profcap push --help)")
	pushVerify := fs.Bool("push-verify", true, "with --push, query the server back and compare what it stores with the bundle (=false for credentials that may push but not query)")
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
		return usageError("--call-graph %q: want auto, fp or dwarf", perfOpt.CallGraph)
	}
	if perfOpt.Frequency <= 0 || perfOpt.Frequency > 100000 {
		return usageError("--perf-frequency must be between 1 and 100000")
	}
	limit, err := parseSize(*maxSize)
	if err != nil {
		return usageError("--max-profile-size: %v", err)
	}
	if tdOpt.Interval < 10*time.Millisecond {
		return usageError("--taskdump-interval must be at least 10ms")
	}
	preset, ok := presets[*overhead]
	if !ok {
		return usageError("--overhead %q: want low, default or full", *overhead)
	}
	if !fs.Changed("perf-frequency") && preset.perfFrequency > 0 {
		perfOpt.Frequency = preset.perfFrequency // before the collectors are made
	}
	cs := defaultCollectors(limit, perfOpt, tdOpt)
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
	if len(*kinds) > 0 {
		ks, err := parseKinds("--profiles", *kinds)
		if err != nil {
			return usageError("%v", err)
		}
		want = ks
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
		Enrich:     joinAwait,
		Version:    versionInfo(),
		Baseline:   *baseline,
	})
	if err != nil {
		return err
	}
	p.summary(outcome)
	if *push != "" && outcome.Captured > 0 && ctx.Err() == nil {
		// The capture itself is kept whole whatever the push does; a
		// failed push makes the run partial (exit status 3), and profcap
		// push can send the rest later.
		server := pyroscope.RedactURL(*push)
		opts := pyroscope.Options{Server: *push, Credentials: pushCreds, Verify: *pushVerify, UserAgent: "profcap/" + strings.Fields(versionInfo() + " devel")[0]}
		rep, err := pyroscope.Push(ctx, outcome.Dir, opts)
		if opts.Verify && cannotQuery(err) && (rep == nil || rep.Count(pyroscope.StatusPushed) == 0) {
			// The server cannot be queried with these credentials (or at
			// all): push without verifying rather than not at all.
			fmt.Fprintf(stderr, "push to %s: cannot verify (%v); pushing without verifying (--push-verify=false says so up front)\n", server, err)
			opts.Verify = false
			rep, err = pyroscope.Push(ctx, outcome.Dir, opts)
		}
		if rep != nil {
			for _, n := range rep.Notes {
				fmt.Fprintf(stderr, "push to %s: note: %s\n", server, n)
			}
			msg := fmt.Sprintf("pushed %d of %d profile(s) to %s", rep.Count(pyroscope.StatusPushed), len(rep.Results), server)
			if opts.Verify {
				msg += fmt.Sprintf(", %d verified (the server's totals equal the bundle's)", rep.Verified())
			}
			if n := rep.Count(pyroscope.StatusSkipped) + rep.Count(pyroscope.StatusStored); n > 0 {
				msg += fmt.Sprintf(", %d already there", n)
			}
			if n := rep.Count(pyroscope.StatusFailed) + rep.Count(pyroscope.StatusNotTried); n > 0 {
				msg += fmt.Sprintf(", %d failed", n)
			}
			fmt.Fprintln(stderr, msg)
		}
		if err != nil {
			fmt.Fprintf(stderr, "push to %s: %v\n(the bundle is intact; run 'profcap push %s --server %s --verify' to retry)\n", server, err, outcome.Dir, server)
			if !*jsonOut {
				fmt.Fprintf(stdout, "%s\n", outcome.Dir)
			}
			return &exitError{code: 3, err: errSilent}
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
func defaultCollectors(maxProfileSize int64, perf collectors.PerfOptions, td taskdump.Options) []collectors.Collector {
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
		// the whole process tree, counted in the kernel, stacks walked by
		// frame pointers or, for an executable without them, by its
		// .eh_frame; perf otherwise.
		// All three leave the cpu of a Go program without symbols to its
		// pprof endpoint, which names its functions (DefersToPprof).
		collectors.DefersToPprof(ebpf.New(ebpf.Options{Frequency: perf.Frequency, ExcludeRunnable: perf.ExcludeRunnable, NoFollow: perf.NoFollow}), bundle.CPU),
		collectors.DefersToPprof(collectors.NewPerf(perf), bundle.CPU),
		collectors.DefersToPprof(collectors.NewSamply(collectors.SamplyOptions{}), bundle.CPU),
		collectors.NewPprof(collectors.PprofOptions{MaxProfileSize: maxProfileSize}),
		tokioconsole.New(tokioconsole.Options{}),
		taskdump.New(td),
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

// joinAwait joins a target's await profile with its tokio-console view of
// the same capture (spawn location, state, busy/scheduled/idle per task)
// before the await profiles are merged.
func joinAwait(dir string, t *bundle.Target, p *profile.Profile) {
	if len(p.SampleType) == 0 || p.SampleType[0].Type != taskdump.SampleType {
		return
	}
	ap := t.Profile(bundle.Async)
	if ap == nil || ap.Path == "" {
		return
	}
	if as, err := bundle.LoadProfile(dir, ap.Path); err == nil {
		_, _ = taskdump.JoinConsole(p, as)
	}
}
