package collectors

// The one lifecycle of an external profiler (perf, samply, py-spy, rbspy and
// the eBPF tools to come): look it up, check the privilege it needs, start
// it under the window, wait for the window's end, the target's exit, its own
// exit or cancellation, stop it with SIGINT so that it writes its output,
// kill it (with everything it started) when it does not stop, and say in one
// message, from what it printed, why it failed.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/targets"
)

// Tool is an external profiler a collector runs against a target process.
type Tool struct {
	// Name is the program looked up in PATH and the first word of the
	// tool's messages: perf, samply, py-spy.
	Name string
	// Path is the binary to run; "" looks Name up in PATH.
	Path string
	// Missing is the error when the binary is not there: it says how to
	// install the tool. nil means "NAME is not installed".
	Missing error
	// Access is the privilege the tool needs to record another process.
	Access Access
}

// Access is a privilege a tool needs to record another process.
type Access int

const (
	// PerfEvents: the tool samples through perf_event_open (perf,
	// samply): root, CAP_PERFMON or a low kernel.perf_event_paranoid, and
	// a target of the same user.
	PerfEvents Access = iota
	// Ptrace: the tool reads the target's memory (py-spy, rbspy): root,
	// CAP_SYS_PTRACE, or a target of the same user with
	// kernel.yama.ptrace_scope 0.
	Ptrace
)

// lack marks an error of this machine, not of the target: a tool or a
// privilege is missing. A collector may report it as unsupported.
type lack struct{ error }

func (l lack) Unwrap() error { return l.error }

// isLack reports whether err says that this machine lacks a tool or a
// privilege (see Tool.Find and Tool.Permitted).
func isLack(err error) bool {
	var l lack
	return errors.As(err, &l)
}

func (t *Tool) missing() error {
	if t.Missing != nil {
		return lack{t.Missing}
	}
	return lack{fmt.Errorf("%s is not installed", t.Name)}
}

// Find returns the path of the tool's binary, or its Missing error.
func (t *Tool) Find() (string, error) {
	name := t.Path
	if name == "" {
		name = t.Name
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", t.missing()
	}
	return p, nil
}

// Process is the start of every tool's check: the tool is installed, and
// the target's process resolves (past a launcher unless noFollow; notes
// say so).
func (t *Tool) Process(tg *targets.Target, noFollow bool) (pid int, notes []string, err error) {
	if _, err := t.Find(); err != nil {
		return 0, nil, err
	}
	return resolveProcess(tg, noFollow)
}

// Permitted returns why this process may not record kind k of pid with the
// tool (it lacks the tool's Access), or nil.
func (t *Tool) Permitted(pid int, k bundle.Kind) error {
	why := ""
	switch t.Access {
	case PerfEvents:
		why = perfEventProblem(k, pid)
	case Ptrace:
		why = ptraceProblem(pid)
	}
	if why == "" {
		return nil
	}
	return lack{errors.New(why)}
}

// RunOptions describe one run of a tool.
type RunOptions struct {
	Args []string
	// PID is the process the tool records: its exit ends the run. 0 means
	// none (a system-wide recording ends with the window).
	PID int
	// Kind is what the run records, for messages.
	Kind bundle.Kind
	// StopTimeout is how long the tool may take to write its output after
	// SIGINT before it is killed; 0 means 15 s.
	StopTimeout time.Duration
	// Tick, if set, is called every 100 ms while the target lives, with the
	// number of the tick (1, 2, …).
	Tick func(n int)
	// Ready, if set, runs once the tool has started and before sampling
	// counts as started (perf enables its events through a control FIFO
	// here); exited is closed if the tool exits meanwhile. Its error does
	// not stop the run: it is kept in Run.ReadyErr.
	Ready func(ctx context.Context, exited <-chan struct{}) error
}

// Run is a finished run of a tool.
type Run struct {
	Args []string
	PID  int
	Kind bundle.Kind
	// Start is when sampling started (the tool was started and Ready
	// returned); End is when it ended: at the window's end, the target's
	// exit, the tool's own exit or cancellation, before the tool was
	// stopped (what it does after SIGINT is not part of the window).
	Start, End time.Time
	// ReadyErr is the error of RunOptions.Ready.
	ReadyErr error
	// Err is the tool's exit, as exec.Cmd.Wait returned it (see Failed).
	Err error
	// Exited says the tool exited by itself before anything else ended
	// the run.
	Exited bool
	// TargetGone says the target exited before the window ended;
	// TargetGoneAt is when that was seen, zero when it was seen only after
	// the tool stopped.
	TargetGone   bool
	TargetGoneAt time.Time

	tool *Tool
	out  *tailBuffer
}

// Output is the tail of what the tool printed (stdout and stderr, at most
// 8 KB).
func (r *Run) Output() string { return r.out.String() }

// Failed reports whether the tool exited with an error of its own: not 0,
// and not the SIGINT that stopped it.
func (r *Run) Failed() bool { return r.Err != nil && !stoppedByInterrupt(r.Err) }

// TargetExit says that the target exited before the window ended and the
// profile covers the time until then, or is nil.
func (r *Run) TargetExit() error {
	switch {
	case !r.TargetGone:
		return nil
	case r.TargetGoneAt.IsZero():
		return fmt.Errorf("the target (pid %d) exited during the window; the profile covers the time until then", r.PID)
	}
	return fmt.Errorf("the target (pid %d) exited after %s, before the window ended; the profile covers the time until then", r.PID, r.TargetGoneAt.Sub(r.Start).Round(time.Millisecond))
}

// Failure says why the run left no profile, in one message with the fix
// (see classify), after the target's exit if the target exited.
func (r *Run) Failure() error {
	var exit error
	if r.Failed() {
		exit = r.Err
	}
	err := r.tool.classify(r.Args, r.PID, r.Kind, r.Output(), exit)
	if gone := r.TargetExit(); gone != nil {
		return fmt.Errorf("%v (%w)", gone, err)
	}
	return err
}

// Run runs the tool under w. It returns when the tool has exited: after the
// window ends, the target exits, the tool exits by itself or ctx is done,
// the tool gets SIGINT (its Ctrl-C: it stops sampling and writes its
// output) and StopTimeout to exit; then it is killed, with every process it
// started. ctx done kills it at once. The error is for a tool that could
// not be started; how the run went is in the Run.
//
// The tool runs in its own process group, so a Ctrl-C in the terminal
// reaches profcap only (which ends the window and stops the tool itself),
// and on Linux the kernel sends it SIGTERM if profcap dies first, so no tool
// outlives the capture.
func (t *Tool) Run(ctx context.Context, w *Window, o RunOptions) (*Run, error) {
	path, err := t.Find()
	if err != nil {
		return nil, err
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 15 * time.Second
	}
	r := &Run{Args: o.Args, PID: o.PID, Kind: o.Kind, tool: t, out: &tailBuffer{}}
	cmd := exec.CommandContext(ctx, path, o.Args...)
	cmd.Stdout, cmd.Stderr = r.out, r.out
	cmd.SysProcAttr = toolProcAttr()
	cmd.Cancel = func() error { return killGroup(cmd.Process) }
	// A process the tool started may hold its output open after the tool
	// exits; do not wait for it longer than this.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return nil, t.missing()
		}
		return nil, fmt.Errorf("starting %s: %w", t.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		r.Err = cmd.Wait()
		close(exited)
	}()
	if o.Ready != nil {
		r.ReadyErr = o.Ready(ctx, exited)
	}
	r.Start = time.Now()

	var gone <-chan struct{}
	var watch *exitWatch
	if o.PID > 0 {
		watch = watchExit(o.PID, o.Tick)
		gone = watch.Gone
	}
	select {
	case <-w.Done():
	case <-gone:
	case <-exited:
		r.Exited = true
	case <-ctx.Done():
	}
	if watch != nil {
		watch.Stop()
	}
	r.End = time.Now()
	stopTool(cmd.Process, exited, o.StopTimeout)

	if watch != nil {
		select {
		case <-watch.Gone:
			r.TargetGone, r.TargetGoneAt = true, watch.At
		default:
			r.TargetGone = !processExists(o.PID)
		}
	}
	return r, nil
}

// FileOptions describe a run of a tool that writes its profile to one
// file (samply, py-spy, rbspy).
type FileOptions struct {
	RunOptions // Args is set from ArgsFor
	// TempDir is where the run's own directory is made; "" is os.TempDir().
	TempDir string
	// File is the output's name in that directory: cpu.json.
	File string
	// ArgsFor returns the tool's arguments, given the output's path.
	ArgsFor func(file string) []string
	// Read reads the output into a profile.
	Read func(file string) (*profile.Profile, error)
	// EmptyIsNothing counts an empty file as no output (a JSON profile is
	// never empty; a folded one with no samples is).
	EmptyIsNothing bool
}

// Record runs the tool into a file (see Run) and reads the file: one
// Result of kind o.Kind, failed with Failure's message when the tool wrote
// nothing, partial when the target exited before the window ended, its
// profile covering the run and naming the command. The Run, nil when the
// tool did not start, is for the caller's own notes.
func (t *Tool) Record(ctx context.Context, w *Window, collector string, o FileOptions) (Result, *Run) {
	res := Result{Kind: o.Kind, Collector: collector, Status: bundle.StatusFailed}
	dir, err := os.MkdirTemp(w.tempDir(o.TempDir), "profcap-"+t.Name+"-")
	if err != nil {
		res.Err = fmt.Errorf("%s: temp dir: %w", t.Name, err)
		return res, nil
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, o.File)
	o.Args = o.ArgsFor(file)
	run, err := t.Run(ctx, w, o.RunOptions)
	if err != nil {
		res.Err = err
		return res, nil
	}
	res.Start, res.End = run.Start, run.End
	if ctx.Err() != nil {
		res.Err = fmt.Errorf("%s capture abandoned: %w", t.Name, ctx.Err())
		return res, run
	}
	if st, err := os.Stat(file); err != nil || o.EmptyIsNothing && st.Size() == 0 {
		res.Err = run.Failure()
		return res, run
	}
	prof, err := o.Read(file)
	if err != nil {
		res.Err = fmt.Errorf("reading %s's output: %w", t.Name, err)
		return res, run
	}
	prof.TimeNanos = run.Start.UnixNano()
	prof.DurationNanos = run.End.Sub(run.Start).Nanoseconds()
	prof.Comments = append(prof.Comments, t.Name+" "+strings.Join(run.Args, " "))
	res.Profile, res.Status = prof, bundle.StatusOK
	if exited := run.TargetExit(); exited != nil {
		res.Status, res.Err = bundle.StatusPartial, exited
	}
	return res, run
}

// stopTool sends the tool SIGINT and waits for it to exit, killing its
// process group after timeout.
func stopTool(p *os.Process, exited <-chan struct{}, timeout time.Duration) {
	select {
	case <-exited:
		return
	default:
	}
	_ = p.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(timeout):
		_ = killGroup(p)
		<-exited
	}
}

// killGroup kills the tool and every process it started (its process
// group: the tool leads it, see toolProcAttr).
func killGroup(p *os.Process) error {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		return p.Kill()
	}
	return nil
}

// classify turns what a tool printed when it left no profile into one
// message with the fix. It is the one reader of tools' error output: perf,
// samply, py-spy and rbspy fail on the same few things (the kernel's
// permission, a target gone before they attached, tracefs) and say so in
// much the same words. exitErr is the tool's own failure, nil when it
// exited 0 or was stopped.
func (t *Tool) classify(args []string, pid int, k bundle.Kind, output string, exitErr error) error {
	low := strings.ToLower(output)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(low, s) {
				return true
			}
		}
		return false
	}
	switch {
	case has("perf_event_paranoid", "access to performance monitoring", "permission denied", "operation not permitted"):
		if t.Access == Ptrace {
			return fmt.Errorf("%s has no permission to read pid %d's memory: run profcap as root or with CAP_SYS_PTRACE (%s)", t.Name, pid, lastLine(output))
		}
		level := 1
		if k == bundle.OffCPU {
			level = -1
		}
		return fmt.Errorf("%s has no permission to record %s of pid %d (kernel.perf_event_paranoid=%d): run profcap as root, give it CAP_PERFMON, or lower the sysctl (sysctl -w kernel.perf_event_paranoid=%d)",
			t.Name, k, pid, perfParanoid(), level)
	case has("no such process") || has("couldn't find") && has("pid"):
		return fmt.Errorf("pid %d exited before %s could attach", pid, t.Name)
	case has("command not found"):
		// A wrapper (a pyenv or pipx shim) found, the tool behind it not.
		return fmt.Errorf("%w (%s)", t.missing(), lastLine(output))
	case has("sched:sched_switch", "tracepoint", "tracefs", "debugfs"):
		return fmt.Errorf("%s cannot use the kernel's scheduler tracepoints: run as root and make sure tracefs is mounted (mount -t tracefs nodev /sys/kernel/tracing): %s", t.Name, lastLine(output))
	}
	what := t.Name
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		what += " " + args[0] // the subcommand: perf record
	}
	output = strings.TrimSpace(output)
	switch {
	case exitErr != nil && output == "":
		return fmt.Errorf("%s failed: %w", what, exitErr)
	case exitErr != nil:
		return fmt.Errorf("%s failed: %s", what, lastLine(output))
	case output == "":
		return fmt.Errorf("%s wrote no profile", what)
	}
	return fmt.Errorf("%s wrote no profile: %s", what, lastLine(output))
}

// stoppedByInterrupt reports whether a tool's exit is the SIGINT that
// stopped it: killed by the signal, or exit status 130 after handling it.
func stoppedByInterrupt(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	if ee.ExitCode() == 130 {
		return true
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGINT
}

// tailBuffer keeps the last 8 KB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 8 << 10

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > tailSize {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-tailSize:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(string(b.buf))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// exitWatch polls a process every 100 ms while a tool records it.
type exitWatch struct {
	Gone chan struct{} // closed when the process has exited
	At   time.Time     // when that was seen; read after Gone is closed
	stop chan struct{}
	done chan struct{} // closed when the poller has returned
}

// watchExit starts watching pid. tick, if not nil, is called on every poll
// with its number (1, 2, …) while the process lives.
func watchExit(pid int, tick func(n int)) *exitWatch {
	e := &exitWatch{Gone: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(e.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-e.stop:
				return
			case <-t.C:
				if !processExists(pid) {
					e.At = time.Now()
					close(e.Gone)
					return
				}
				if tick != nil {
					tick(n)
				}
			}
		}
	}()
	return e
}

// Stop ends the watch and waits for the poller, so tick is not called
// after it returns; call it once.
func (e *exitWatch) Stop() {
	close(e.stop)
	<-e.done
}
