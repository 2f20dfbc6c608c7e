package collectors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/pprof/profile"
	"golang.org/x/sys/unix"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/formats/perfscript"
	"github.com/profcap/profcap/targets"
)

// PerfOptions configure the perf collector. The zero value is usable.
type PerfOptions struct {
	// Frequency is the CPU sampling frequency in Hz (perf record -F).
	// 0 means 99: a prime, so sampling does not run in lockstep with
	// periodic work (timers at 10 ms, 100 Hz ticks).
	Frequency int
	// CallGraph is how perf unwinds stacks: "fp" (frame pointers, cheap;
	// needs code built with frame pointers) or "dwarf" (copies 8 KB of
	// stack per sample and unwinds afterwards; works without frame
	// pointers, costs far more). "" means "fp".
	CallGraph string
	// ExcludeRunnable leaves preempted time (state R) out of off-CPU
	// profiles; by default it is kept apart under its own root frame.
	ExcludeRunnable bool
	// NoFollow profiles the PID as given even when it is a launcher
	// (uv, npm, sh -c ...) whose child does the work.
	NoFollow bool
	// PerfPath is the perf binary; "" looks up "perf" in PATH.
	PerfPath string
	// TempDir holds perf.data while capturing; "" is os.TempDir().
	TempDir string
}

// Perf captures on-CPU and off-CPU profiles of a native process with
// Linux perf: see docs/perf.md.
type Perf struct {
	opt PerfOptions
}

var _ Collector = (*Perf)(nil)

// NewPerf returns a perf collector.
func NewPerf(opt PerfOptions) *Perf {
	if opt.Frequency <= 0 {
		opt.Frequency = 99
	}
	if opt.CallGraph == "" {
		opt.CallGraph = "fp"
	}
	return &Perf{opt: opt}
}

// ValidCallGraph reports whether s is a --call-graph mode the collector
// accepts.
func ValidCallGraph(s string) bool { return s == "" || s == "fp" || s == "dwarf" }

func (p *Perf) Name() string { return "perf" }

func (p *Perf) Kinds(t *targets.Target) []bundle.Kind {
	if t.HasPID() {
		return []bundle.Kind{bundle.CPU, bundle.OffCPU}
	}
	return nil
}

// ErrPerfMissing is returned when no perf binary is found.
var ErrPerfMissing = errors.New("perf is not installed: install linux-perf (Debian: apt-get install linux-perf; Ubuntu: linux-tools-generic; Fedora/RHEL: perf)")

func (p *Perf) perfPath() (string, error) {
	name := p.opt.PerfPath
	if name == "" {
		name = "perf"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", ErrPerfMissing
	}
	return path, nil
}

// permissionProblem says why this process may not record kind, or "".
func permissionProblem(kind bundle.Kind, pid int) string {
	if os.Geteuid() == 0 || hasCap(capSysAdmin) {
		return ""
	}
	paranoid := perfParanoid()
	perfmon := hasCap(capPerfmon)
	switch kind {
	case bundle.CPU:
		if perfmon || paranoid <= 1 {
			break
		}
		if paranoid >= 3 {
			return fmt.Sprintf("kernel.perf_event_paranoid is %d, which forbids perf for non-root users: run profcap as root, give it CAP_PERFMON, or lower the sysctl (sysctl -w kernel.perf_event_paranoid=1)", paranoid)
		}
	case bundle.OffCPU:
		if paranoid > -1 && !perfmon {
			return fmt.Sprintf("off-CPU profiling records the sched:sched_switch tracepoint, which kernel.perf_event_paranoid=%d forbids for non-root users: run profcap as root (or with CAP_PERFMON and read access to /sys/kernel/tracing), or lower the sysctl (sysctl -w kernel.perf_event_paranoid=-1)", paranoid)
		}
	}
	if st, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() && !hasCap(19 /* CAP_SYS_PTRACE */) {
			return fmt.Sprintf("pid %d belongs to uid %d, not to you (uid %d): run profcap as root or as that user", pid, sys.Uid, os.Geteuid())
		}
	}
	return ""
}

// resolve finds the PID to profile and notes about it.
func (p *Perf) resolve(t *targets.Target) (pid int, notes []string, err error) {
	if pid, notes, err = resolveProcess(t, p.opt.NoFollow); err != nil {
		return 0, nil, err
	}
	if path, stripped, err := strippedBinary(pid); err == nil && stripped {
		notes = append(notes, strippedNote(path))
	}
	return pid, notes, nil
}

func (p *Perf) Probe(ctx context.Context, t *targets.Target) []Availability {
	if !t.HasPID() {
		return nil
	}
	avail := func(ok bool, reason string) []Availability {
		return []Availability{
			{Kind: bundle.CPU, Collector: p.Name(), Available: ok, Reason: reason},
			{Kind: bundle.OffCPU, Collector: p.Name(), Available: ok, Reason: reason},
		}
	}
	if _, err := p.perfPath(); err != nil {
		return avail(false, err.Error())
	}
	pid, notes, err := p.resolve(t)
	if err != nil {
		return avail(false, err.Error())
	}
	var out []Availability
	for _, k := range []bundle.Kind{bundle.CPU, bundle.OffCPU} {
		a := Availability{Kind: k, Collector: p.Name(), Available: true}
		if why := permissionProblem(k, pid); why != "" {
			a.Available, a.Reason = false, why
		} else {
			a.Reason = strings.Join(append([]string{fmt.Sprintf("pid %d (%s)", pid, procName(pid))}, notes...), "; ")
		}
		out = append(out, a)
	}
	return out
}

// recording is one running `perf record`.
type recording struct {
	kind   bundle.Kind
	file   string
	cmd    *exec.Cmd
	stderr *tailBuffer
	done   chan struct{} // closed when perf exited
	err    error         // perf's exit error, valid after done
	args   []string
	ctl    string // control FIFO (perf record --control)
	ack    string
	// enableErr is why perf could not be started sampling.
	enableErr error
	// enabledAt is when the enable command was written and ackedAt when
	// perf acknowledged it: perf samples from a moment in between. Each
	// recording's window starts at its own acknowledgement, so one slow
	// perf does not stretch another's window.
	enabledAt, ackedAt time.Time
}

// enable tells perf to start sampling and waits for its acknowledgement.
func (r *recording) enable(ctx context.Context, windowDone <-chan struct{}) error {
	ctl, err := os.OpenFile(r.ctl, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer ctl.Close()
	ack, err := os.OpenFile(r.ack, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer ack.Close()
	r.enabledAt = time.Now()
	if _, err := ctl.WriteString("enable\n"); err != nil {
		return err
	}
	type acked struct {
		at  time.Time
		err error
	}
	got := make(chan acked, 1)
	go func() {
		buf := make([]byte, 4)
		_, err := io.ReadFull(ack, buf)
		got <- acked{time.Now(), err}
	}()
	select {
	case a := <-got:
		r.ackedAt = a.at
		return a.err
	case <-r.done:
		return errors.New("perf exited before it started sampling")
	case <-ctx.Done():
		return ctx.Err()
	case <-windowDone:
		return errors.New("the window ended before perf was ready to sample")
	case <-time.After(30 * time.Second):
		return errors.New("perf did not start sampling within 30s")
	}
}

// tailBuffer keeps the last 8 KB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 8<<10 {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-8<<10:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(string(b.buf))
}

func (p *Perf) recordArgs(kind bundle.Kind, pid int, file string) []string {
	// -B: no build-id pass over the samples at exit (perf script runs at
	// once on this machine), which makes stopping a system-wide recording
	// seconds faster.
	args := []string{"record", "-q", "-B", "-o", file, "--call-graph", p.opt.CallGraph}
	switch kind {
	case bundle.CPU:
		args = append(args, "-F", strconv.Itoa(p.opt.Frequency), "-p", strconv.Itoa(pid))
	case bundle.OffCPU:
		// Per process, no -a: the sched_switch tracepoint gives each
		// switch-out with its state and stack, --switch-events the
		// thread's own switch-in (PERF_RECORD_SWITCH IN). A system-wide
		// recording would also see switch-ins, but in the context of the
		// task switched out, which costs a stack and a side-band stream
		// for every process and was seen to drop idle-task events.
		// CLOCK_MONOTONIC timestamps let intervals still open at the end
		// of the window be closed at its real end.
		args = append(args, "-e", "sched:sched_switch", "--switch-events", "-k", "CLOCK_MONOTONIC", "-p", strconv.Itoa(pid))
	}
	return args
}

func (p *Perf) startRecord(ctx context.Context, perf string, kind bundle.Kind, pid int, dir string) (*recording, error) {
	r := &recording{kind: kind, file: filepath.Join(dir, string(kind)+".data"), stderr: &tailBuffer{}, done: make(chan struct{})}
	r.args = p.recordArgs(kind, pid, r.file)
	// perf starts with its events disabled (-D -1) and enables them when
	// told on the control FIFO, acknowledging on the other: the window then
	// starts when sampling really starts, not before perf's set-up (which
	// takes up to a second for a system-wide recording on a busy machine).
	r.ctl, r.ack = filepath.Join(dir, string(kind)+".ctl"), filepath.Join(dir, string(kind)+".ack")
	for _, f := range []string{r.ctl, r.ack} {
		if err := unix.Mkfifo(f, 0o600); err != nil {
			return nil, fmt.Errorf("perf control fifo: %w", err)
		}
	}
	args := append([]string{}, r.args...)
	args = append(args[:1:1], append([]string{"-D", "-1", "--control", "fifo:" + r.ctl + "," + r.ack}, args[1:]...)...)
	r.cmd = exec.CommandContext(ctx, perf, args...)
	r.cmd.Stderr = r.stderr
	r.cmd.Stdout = r.stderr
	// Own process group: a Ctrl-C on the terminal reaches profcap, which
	// ends the window and stops perf itself. Pdeathsig stops perf if
	// profcap dies.
	r.cmd.SysProcAttr = toolProcAttr()
	r.cmd.WaitDelay = 5 * time.Second
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting perf: %w", err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	return r, nil
}

// stop sends SIGINT so perf flushes perf.data, and waits for it (killing it
// if it does not exit within 15 s).
func (r *recording) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// perfError turns what perf printed into one message with the fix.
func perfError(kind bundle.Kind, pid int, stderr string, err error) error {
	low := strings.ToLower(stderr)
	switch {
	case strings.Contains(low, "perf_event_paranoid") || strings.Contains(low, "access to performance monitoring") ||
		strings.Contains(low, "permission denied") || strings.Contains(low, "operation not permitted"):
		return fmt.Errorf("perf has no permission to record %s of pid %d (kernel.perf_event_paranoid=%d): run profcap as root, give it CAP_PERFMON, or lower the sysctl (sysctl -w kernel.perf_event_paranoid=%d)",
			kind, pid, perfParanoid(), map[bundle.Kind]int{bundle.CPU: 1, bundle.OffCPU: -1}[kind])
	case strings.Contains(low, "no such process") || strings.Contains(low, "couldn't find") && strings.Contains(low, "pid"):
		return fmt.Errorf("pid %d exited before perf could attach", pid)
	case strings.Contains(low, "sched:sched_switch") || strings.Contains(low, "tracepoint") || strings.Contains(low, "tracefs") || strings.Contains(low, "debugfs"):
		return fmt.Errorf("perf cannot use the scheduler tracepoints: run as root and make sure tracefs is mounted (mount -t tracefs nodev /sys/kernel/tracing): %s", lastLine(stderr))
	}
	if stderr == "" && err != nil {
		return fmt.Errorf("perf record failed: %w", err)
	}
	return fmt.Errorf("perf record failed: %s", lastLine(stderr))
}

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

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func monotonicNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

func (p *Perf) Collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	pprof.Do(ctx, pprof.Labels("component", "collector/perf"), func(ctx context.Context) {
		p.collect(ctx, w, t, kinds, emit)
	})
}

func (p *Perf) collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	var want []bundle.Kind
	for _, k := range kinds {
		if k == bundle.CPU || k == bundle.OffCPU {
			want = append(want, k)
			continue
		}
		emit(Result{Kind: k, Collector: p.Name(), Status: bundle.StatusUnsupported, Err: fmt.Errorf("perf does not capture %s profiles", k)})
	}
	if len(want) == 0 {
		return
	}
	failAll := func(err error, note string) {
		for _, k := range want {
			emit(Result{Kind: k, Collector: p.Name(), Status: bundle.StatusFailed, Err: err, Note: note})
		}
	}
	perf, err := p.perfPath()
	if err != nil {
		// This machine cannot take perf profiles at all: unsupported (a
		// failure only where the kind was asked for by name), with the fix.
		for _, k := range want {
			emit(Result{Kind: k, Collector: p.Name(), Status: bundle.StatusUnsupported, Err: err})
		}
		return
	}
	pid, notes, err := p.resolve(t)
	if err != nil {
		failAll(err, "")
		return
	}
	dir, err := os.MkdirTemp(p.opt.TempDir, "profcap-perf-")
	if err != nil {
		failAll(fmt.Errorf("perf: temp dir: %w", err), "")
		return
	}
	defer os.RemoveAll(dir)

	start := time.Now()
	var recs []*recording
	for _, k := range want {
		if why := permissionProblem(k, pid); why != "" {
			// Not allowed here (perf_event_paranoid, capabilities): like a
			// missing tool, unsupported with the fix in the message.
			emit(Result{Kind: k, Collector: p.Name(), Status: bundle.StatusUnsupported, Err: errors.New(why)})
			continue
		}
		r, err := p.startRecord(ctx, perf, k, pid, dir)
		if err != nil {
			emit(Result{Kind: k, Collector: p.Name(), Status: bundle.StatusFailed, Err: err})
			continue
		}
		recs = append(recs, r)
	}
	if len(recs) == 0 {
		return
	}
	var ewg sync.WaitGroup
	for _, r := range recs {
		ewg.Add(1)
		go func() {
			defer ewg.Done()
			if err := r.enable(ctx, w.Done()); err != nil {
				r.enableErr = err
			}
		}()
	}
	ewg.Wait()
	start = time.Now()

	// Wait for the window's end, the target's exit, every perf exiting
	// (an error, or perf following the target out), or cancellation.
	allDone := make(chan struct{})
	go func() {
		for _, r := range recs {
			<-r.done
		}
		close(allDone)
	}()
	watch := watchExit(pid, nil)
	select {
	case <-w.Done():
	case <-watch.Gone:
	case <-allDone:
	case <-ctx.Done():
	}
	watch.Stop()
	// Sampling ends when perf gets SIGINT; what it does after (writing
	// perf.data) is not part of the window.
	end := time.Now()
	endMono := monotonicNow()
	var wg sync.WaitGroup
	for _, r := range recs {
		wg.Add(1)
		go func() { defer wg.Done(); r.stop() }()
	}
	wg.Wait()
	exited := ""
	select {
	case <-watch.Gone:
		exited = fmt.Sprintf("the target (pid %d) exited after %s, before the window ended; the profile covers the time until then", pid, watch.At.Sub(start).Round(time.Millisecond))
	default:
		if !processExists(pid) {
			exited = fmt.Sprintf("the target (pid %d) exited during the window; the profile covers the time until then", pid)
		}
	}

	for _, r := range recs {
		rstart := start
		if !r.ackedAt.IsZero() {
			rstart = r.ackedAt
		} else if !r.enabledAt.IsZero() {
			rstart = r.enabledAt
		}
		res := Result{Kind: r.kind, Collector: p.Name(), Start: rstart, End: end}
		if ctx.Err() != nil {
			res.Status, res.Err = bundle.StatusFailed, fmt.Errorf("perf %s capture abandoned: %w", r.kind, ctx.Err())
			emit(res)
			continue
		}
		st, statErr := os.Stat(r.file)
		// After the SIGINT that stops it perf writes perf.data, then
		// re-raises the signal (or exits 130); it exits 0 when the target
		// exits. Anything else is perf failing.
		failed := r.err != nil && !stoppedByInterrupt(r.err)
		if statErr != nil || st.Size() == 0 || failed && exited == "" {
			res.Status, res.Err = bundle.StatusFailed, perfError(r.kind, pid, r.stderr.String(), r.err)
			if exited != "" && statErr == nil {
				res.Err = errors.New(exited)
			}
			emit(res)
			continue
		}
		prof, err := p.script(ctx, perf, r, pid, endMono)
		if err != nil {
			res.Status, res.Err = bundle.StatusFailed, err
			emit(res)
			continue
		}
		prof.TimeNanos = rstart.UnixNano()
		prof.DurationNanos = end.Sub(rstart).Nanoseconds()
		prof.Comments = append(prof.Comments, "perf "+strings.Join(r.args, " "))
		res.Profile = prof
		res.Status = bundle.StatusOK
		resNotes := append([]string(nil), notes...)
		if exited != "" {
			res.Status = bundle.StatusPartial
			res.Err = errors.New(exited)
		}
		if r.enableErr != nil {
			resNotes = append(resNotes, r.enableErr.Error())
		}
		if len(prof.Sample) == 0 {
			resNotes = append(resNotes, "no samples: the target did not run (cpu) or switch (offcpu) during the window")
		}
		res.Note = strings.Join(resNotes, "; ")
		emit(res)
	}
}

// script streams `perf script` output of one recording into the parser.
func (p *Perf) script(ctx context.Context, perf string, r *recording, pid int, endMono int64) (*profile.Profile, error) {
	fields := "comm,pid,tid,time,period,event,ip,sym,symoff,dso"
	if r.kind == bundle.OffCPU {
		fields = "comm,pid,tid,cpu,time,event,trace,ip,sym,symoff,dso"
	}
	args := []string{"script", "-i", r.file, "--ns", "-F", fields}
	if r.kind == bundle.OffCPU {
		args = append(args, "--show-switch-events")
	}
	cmd := exec.CommandContext(ctx, perf, args...)
	stderr := &tailBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting perf script: %w", err)
	}
	var prof *profile.Profile
	var perr error
	switch r.kind {
	case bundle.CPU:
		prof, perr = perfscript.Parse(out, perfscript.Options{Frequency: p.opt.Frequency, PID: pid})
	case bundle.OffCPU:
		prof, perr = perfscript.ParseOffCPU(out, perfscript.OffCPUOptions{PID: pid, ExcludeRunnable: p.opt.ExcludeRunnable, EndTime: endMono})
	}
	if perr != nil {
		_ = cmd.Process.Kill()
	}
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	if perr != nil {
		return nil, fmt.Errorf("reading perf script output: %w", perr)
	}
	if werr != nil {
		return nil, fmt.Errorf("perf script: %v: %s", werr, lastLine(stderr.String()))
	}
	return prof, nil
}

var _ Preflighter = (*Perf)(nil)

// Preflight implements Preflighter: perf is installed, the target's PID
// resolves and exists, and this user may profile it for kind k.
func (p *Perf) Preflight(t *targets.Target, k bundle.Kind) error {
	if _, err := p.perfPath(); err != nil {
		return err
	}
	pid, err := t.ResolvePID()
	if err != nil {
		return err
	}
	if pid == 0 || !processExists(pid) {
		return fmt.Errorf("no process with pid %d", pid)
	}
	if why := permissionProblem(k, pid); why != "" {
		return errors.New(why)
	}
	return nil
}
