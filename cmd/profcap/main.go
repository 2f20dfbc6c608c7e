// Command profcap captures CPU, heap, off-CPU and async-task profiles of live
// services over one window and renders them as flame graphs and a report.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/profcap/profcap/formats"
	"github.com/profcap/profcap/internal/termsafe"
	"github.com/profcap/profcap/targets"
)

// command is one subcommand. run gets the arguments after the subcommand name.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	hidden  bool
}

var commands = map[string]command{
	"record":   {summary: "capture profiles of live services over one window into a bundle", run: runRecord},
	"targets":  {summary: "list the configured targets and probe what can be captured from each", run: runTargets},
	"flame":    {summary: "render profiles, folded stacks, perf script text or a bundle as flame graphs", run: runFlame},
	"diff":     {summary: "differential flame graph of two profiles or bundles (before/after)", run: runDiff},
	"collapse": {summary: "fold perf script text into stacks (stackcollapse-perf.pl compatible)", run: runCollapse},
	"convert":  {summary: "convert a profile (samply, speedscope, folded, perf script, pprof) to pprof, folded or speedscope", run: runConvert},
	"merge":    {summary: "merge profiles of one kind (any input format) into one pprof file", run: runMerge},
	"push":     {summary: "send a bundle's profiles to Grafana Pyroscope (labels, retries, resumable)", run: runPush},
	"demo":     {summary: "start (or --stop) a demo cluster on loopback", run: runDemo},
	"version":  {summary: "print the version", run: runVersion},
	// demo-service is what each process of the demo cluster runs.
	"demo-service": {summary: "run one demo cluster service", run: runDemoService, hidden: true},
}

// exitError carries an exit status other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks bad command-line usage (exit status 2).
func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func main() {
	setMemoryLimit()
	os.Exit(realMain())
}

// memoryLimit is profcap's memory budget: the garbage collector works
// harder as the heap nears it, so a capture that meets a hostile target
// (a profile of a million samples, a gzip bomb) stays within it. What
// profcap itself keeps is far less: profiles stream to disk, parses run one
// at a time, profiles and flame trees are cut to fixed sizes
// (docs/record.md, "Memory"). GOMEMLIMIT, if set, wins.
const memoryLimit = 512 << 20

func setMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}

func realMain() int {
	ctx := context.Background()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return 0
	}
	if err.Error() != "" && !errors.Is(err, errSilent) {
		fmt.Fprintf(os.Stderr, "profcap: %s\n", termsafe.Message(err.Error(), 500))
	}
	return exitCode(err)
}

// exitCode is the exit status for what run returned: 0 for nil, the code
// of an *exitError, 2 for a command-line mistake a package found (a target
// selection, inputs that do not go together), else 1.
func exitCode(err error) int {
	var ee *exitError
	var tu *targets.UsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &tu), errors.Is(err, formats.ErrMixedInputs), errors.Is(err, formats.ErrKindsWithoutBundles):
		return 2
	}
	return 1
}

// errSilent is wrapped by errors whose message was already printed.
var errSilent = errors.New("")

// run runs profcap with the given arguments (without the program name).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return &exitError{code: 2, err: errSilent}
	}
	name := args[0]
	switch name {
	case "-h", "--help", "help":
		usage(stdout)
		return nil
	case "--version":
		name = "version"
	}
	cmd, ok := commands[name]
	if !ok {
		usage(stderr)
		return usageError("unknown command %q%s", name, didYouMean(name, commandNames()))
	}
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "profcap captures profiles of live services and renders them as flame graphs.\n\nUsage:\n  profcap COMMAND [flags]\n\nCommands:\n")
	var names []string
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'profcap COMMAND --help' for a command's flags and examples.\n")
}

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func runVersion(_ context.Context, args []string, stdout, _ io.Writer) error {
	fs := pflag.NewFlagSet("version", pflag.ContinueOnError)
	if done, err := parseArgs(fs, args, stdout, func(w io.Writer) {
		fmt.Fprint(w, "Usage: profcap version\n\nPrint profcap's version, the Go version and the platform.\n")
	}); done || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("version takes no arguments")
	}
	fmt.Fprintf(stdout, "profcap %s\n", versionInfo())
	return nil
}

// versionInfo is profcap's version (set at build time, else from the build
// info), the Go version and the platform, as written into manifests.
func versionInfo() string {
	v := version
	if v == "" {
		v = "devel"
		if bi, ok := debug.ReadBuildInfo(); ok {
			if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
				v = bi.Main.Version
			}
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 12 {
					v += "+" + s.Value[:12]
				}
			}
		}
	}
	return fmt.Sprintf("%s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// notifySignals returns a channel that receives every SIGINT and SIGTERM
// (record ends the window on the first and abandons what is in flight on
// the second), and a function that stops the delivery.
func notifySignals() (ch chan os.Signal, stop func()) {
	ch = make(chan os.Signal, 4)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	return ch, func() { signal.Stop(ch) }
}

// parseArgs parses args with fs, the same way for every command: --help
// prints help on stdout (done is true), and a bad flag is a usage error
// (exit status 2) that names the command's --help. pflag itself prints
// nothing: the error is printed once, by realMain.
func parseArgs(fs *pflag.FlagSet, args []string, stdout io.Writer, help func(w io.Writer)) (done bool, err error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			help(stdout)
			return true, nil
		}
		return false, usageError("%s: %v%s (see 'profcap %s --help')", fs.Name(), err, flagSuggestion(fs, err), fs.Name())
	}
	return false, nil
}
