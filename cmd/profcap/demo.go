package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/profcap/profcap/internal/consoleapi"
	"github.com/profcap/profcap/internal/demo"
)

const demoHelp = `Usage: profcap demo [--dir DIR] [--detach | --stop] [flags]

Start a demo cluster on loopback, shaped like the reference cluster: two
orchestration services (orchestration-1, -2) and three workers
(worker-rust-1, worker-ruby-1, worker-python-1). Each is a Go process serving
net/http/pprof (/debug/pprof/), fgprof (/debug/fgprof), /health and /metrics.
The orchestrators run workflows (linear, diamond and tree DAGs of steps) and
dispatch the steps to the workers, which hash, encode JSON, allocate, contend
on a shared lock and wait on a slow fake database, so that CPU, heap, mutex,
block and wall-clock profiles all have something to show. At the default rate
the whole cluster uses about half of one CPU core.

The cluster directory gets .pids/NAME.pid, .logs/NAME.log and a profcap.yaml
naming every service. Ports follow the reference layout: orchestration 8080+,
worker-rust 8100+, worker-ruby 8200+, worker-python 8300+.

Without --detach the cluster runs until Ctrl-C (or SIGTERM), then stops;
with --detach it keeps running until 'profcap demo --stop'.

Examples:
  profcap demo                              # run in the foreground until Ctrl-C
  profcap demo --detach --dir /tmp/demo     # start in the background
  profcap demo --stop --dir /tmp/demo       # stop it
  profcap demo --port-offset 1000           # ports 9080, 9100, 9200, 9300
  profcap demo --free-ports --detach        # any free ports (see profcap.yaml)
  profcap demo --workers 3 --sick worker-rust-2 --detach
                                            # three of each worker, one of them sick:
                                            # the report's outlier view should find it

Flags:
`

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
	var (
		opts  demo.Options
		dir   = fs.String("dir", "demo-cluster", "cluster `directory`: .pids/, .logs/ and profcap.yaml go here")
		stop  = fs.Bool("stop", false, "stop the cluster running in --dir")
		grace = fs.Duration("grace", demo.DefaultStopGrace, "how long services get to exit after SIGTERM before SIGKILL")
	)
	fs.BoolVar(&opts.Detach, "detach", false, "start the cluster, print its targets and return; it runs until --stop")
	fs.IntVar(&opts.PortOffset, "port-offset", 0, "shift every port of the reference layout by `N`")
	fs.BoolVar(&opts.FreePorts, "free-ports", false, "use any free ports instead of the reference layout")
	fs.Float64Var(&opts.Rate, "rate", demo.DefaultRate, "workflows each orchestrator starts per second")
	fs.Float64Var(&opts.Work, "work", 1, "scale of the CPU work each step does")
	fs.DurationVar(&opts.HealthTimeout, "timeout", demo.DefaultHealthTimeout, "how long to wait for every service to answer /health")
	fs.IntVar(&opts.Workers, "workers", 1, "instances of each worker (worker-rust-1 … worker-rust-`N`, and as many Ruby and Python workers)")
	fs.StringSliceVar(&opts.Sick, "sick", nil, "make these services sick (comma-separated `names`): a worker checksums every step 6× over and waits on a 3× slower database that reconnects for every query, an orchestrator's database is 3× slower")
	if done, err := parseArgs(fs, args, stdout, func(w io.Writer) { fmt.Fprint(w, demoHelp+fs.FlagUsages()) }); done || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("demo: unexpected argument %q (see 'profcap demo --help')", fs.Arg(0))
	}
	if *stop {
		for _, f := range []string{"detach", "port-offset", "free-ports", "rate", "work", "timeout", "workers", "sick"} {
			if fs.Changed(f) {
				return usageError("demo: --stop cannot be combined with --%s", f)
			}
		}
		return stopDemo(ctx, *dir, *grace, stdout)
	}
	if opts.FreePorts && fs.Changed("port-offset") {
		return usageError("demo: --free-ports and --port-offset cannot be combined")
	}
	if opts.Rate <= 0 || opts.Rate > 1000 {
		return usageError("demo: --rate must be above 0 and at most 1000")
	}
	if opts.Work <= 0 || opts.Work > 100 {
		return usageError("demo: --work must be above 0 and at most 100")
	}
	if opts.Workers < 1 || opts.Workers > demo.MaxWorkers {
		return usageError("demo: --workers must be between 1 and %d", demo.MaxWorkers)
	}
	opts.Dir = *dir

	sigs, stopSignals := notifySignals()
	defer stopSignals()
	startCtx, cancelStart := context.WithCancel(ctx)
	defer cancelStart()
	go func() {
		select {
		case <-sigs: // Ctrl-C while starting: give up; Start stops what it began
			cancelStart()
		case <-startCtx.Done():
		}
	}()
	if !opts.Detach {
		opts.OnExit = func(s demo.Service, err error) {
			fmt.Fprintf(stderr, "profcap demo: %s (pid %d) exited: %v; see %s\n", s.Name, s.PID, describeExit(err), s.LogFile)
		}
	}
	c, err := demo.Start(startCtx, opts)
	cancelStart()
	if err != nil {
		return fmt.Errorf("starting the demo cluster: %w", err)
	}
	printCluster(stdout, c)
	if opts.Detach {
		fmt.Fprintf(stdout, "\nStop it with: profcap demo --stop --dir %s\n", shellQuote(c.Dir))
		return nil
	}
	fmt.Fprintf(stdout, "\nRunning; press Ctrl-C to stop.\n")

	select {
	case <-sigs:
		fmt.Fprintf(stderr, "stopping the demo cluster (Ctrl-C again to kill it now)...\n")
	case <-ctx.Done():
	case <-c.Done():
		c.Stop(context.Background()) // removes the PID files
		fmt.Fprintf(stderr, "profcap demo: every service has exited; logs are in %s\n", filepath.Join(c.Dir, demo.LogsDir))
		return nil
	}
	killCtx, kill := context.WithCancel(context.Background())
	defer kill()
	go func() {
		select {
		case <-sigs:
			kill()
		case <-killCtx.Done():
		}
	}()
	if err := c.Stop(killCtx); err != nil {
		return fmt.Errorf("stopping the demo cluster: %w", err)
	}
	fmt.Fprintf(stderr, "demo cluster stopped\n")
	return nil
}

func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func printCluster(w io.Writer, c *demo.Cluster) {
	fmt.Fprintf(w, "demo cluster running in %s\n\n", c.Dir)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "NAME\tROLE\tLANGUAGE\tPID\tPPROF\n")
	for _, s := range c.Services {
		name := s.Name
		if s.Sick {
			name += " (sick)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s/debug/pprof\n", name, s.Group(), s.Language, s.PID, s.URL)
	}
	tw.Flush()
	fmt.Fprintf(w, "\ntargets: %s\nlogs:    %s\n", c.ConfigPath, filepath.Join(c.Dir, demo.LogsDir))
}

func stopDemo(ctx context.Context, dir string, grace time.Duration, stdout io.Writer) error {
	// A second Ctrl-C while waiting for the grace period kills at once.
	sigs, stopSignals := notifySignals()
	defer stopSignals()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	results, err := demo.Stop(ctx, dir, grace)
	if len(results) == 0 && err == nil {
		fmt.Fprintf(stdout, "no demo cluster running in %s\n", dir)
		return nil
	}
	for _, r := range results {
		if r.PID > 0 {
			fmt.Fprintf(stdout, "%s (pid %d): %s\n", r.Name, r.PID, r.Outcome)
		} else {
			fmt.Fprintf(stdout, "%s: %s\n", r.Name, r.Outcome)
		}
	}
	if err != nil {
		return fmt.Errorf("stopping the demo cluster in %s: %w", dir, err)
	}
	return nil
}

func shellQuote(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '/' || r == '.' || r == '-' || r == '_') {
			return "'" + s + "'"
		}
	}
	return s
}

const demoServiceHelp = `Usage: profcap demo-service --name NAME --role ROLE (--port P | --listen-fd FD) [flags]

Run one service of the demo cluster in the foreground. 'profcap demo' starts
five of these; run one by hand only to debug it. It exits cleanly on SIGINT
or SIGTERM.

Examples:
  profcap demo-service --name worker-rust-1 --role worker --language rust --port 8100
  profcap demo-service --name orchestration-1 --role orchestration --port 8080 \
      --peers http://127.0.0.1:8100

Flags:
`

func runDemoService(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("demo-service", pflag.ContinueOnError)
	var (
		cfg       demo.ServiceConfig
		role      = fs.String("role", "", "orchestration or worker")
		listenFD  = fs.Int("listen-fd", 0, "serve the listening socket inherited on file descriptor `FD` instead of opening --port")
		consoleFD = fs.Int("console-fd", 0, "serve the tokio-console gRPC API on the listening socket inherited on file descriptor `FD`")
		console   = fs.String("console", "", "serve the tokio-console gRPC API on `HOST:PORT`")
		parentPID = fs.Int("parent-pid", 0, "exit when the parent process is no longer `PID` (foreground clusters)")
	)
	fs.StringVar(&cfg.Name, "name", "", "service name, e.g. worker-rust-1")
	fs.StringVar(&cfg.Language, "language", "go", "language label: rust, ruby, python or go (scales a worker's CPU work)")
	fs.IntVar(&cfg.Port, "port", 0, "loopback `port` to serve on")
	fs.StringSliceVar(&cfg.Peers, "peers", nil, "worker base `URLs`, comma-separated (orchestration only)")
	fs.Float64Var(&cfg.Rate, "rate", demo.DefaultRate, "workflows started per second (orchestration only)")
	fs.Float64Var(&cfg.Work, "work", 1, "scale of the CPU work of each step")
	fs.BoolVar(&cfg.Sick, "sick", false, "make this service an outlier: more CPU in every step, a slower database")
	fs.String("cluster", "", "cluster `directory` (identifies the process to 'profcap demo --stop')")
	if done, err := parseArgs(fs, args, stdout, func(w io.Writer) { fmt.Fprint(w, demoServiceHelp+fs.FlagUsages()) }); done || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("demo-service: unexpected argument %q", fs.Arg(0))
	}
	if cfg.Name == "" {
		return usageError("demo-service: --name is required")
	}
	r, err := demo.ParseRole(*role)
	if err != nil {
		return usageError("demo-service: --role: %v", err)
	}
	cfg.Role = r
	switch {
	case *listenFD > 0:
		f := os.NewFile(uintptr(*listenFD), "listener")
		if f == nil {
			return fmt.Errorf("demo-service: no file descriptor %d", *listenFD)
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("demo-service: listener on fd %d: %w", *listenFD, err)
		}
		cfg.Listener = ln
	case cfg.Port <= 0 || cfg.Port > 65535:
		return usageError("demo-service: give --port (1-65535) or --listen-fd")
	}
	switch {
	case *consoleFD > 0:
		f := os.NewFile(uintptr(*consoleFD), "console")
		if f == nil {
			return fmt.Errorf("demo-service: no file descriptor %d", *consoleFD)
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("demo-service: console listener on fd %d: %w", *consoleFD, err)
		}
		cfg.ConsoleListener = ln
	case *console != "":
		ln, err := net.Listen("tcp", *console)
		if err != nil {
			return fmt.Errorf("demo-service: --console: %w", err)
		}
		cfg.ConsoleListener = ln
	}
	if cfg.ConsoleListener != nil {
		cfg.Console = consoleapi.NewServer(consoleapi.Options{Target: "demo::" + cfg.Name})
	}
	if cfg.Role == demo.RoleOrchestration && len(cfg.Peers) == 0 {
		return usageError("demo-service: an orchestration service needs --peers")
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *parentPID > 0 {
		var cancel context.CancelFunc
		ctx, cancel = demo.WithParent(ctx, *parentPID)
		defer cancel()
	}
	if err := demo.RunService(ctx, cfg); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
