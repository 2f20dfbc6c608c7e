package collectors

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/formats/firefox"
	"github.com/profcap/profcap/targets"
)

// SamplyOptions configure the samply collector. The zero value is usable.
type SamplyOptions struct {
	// Rate is the sampling rate in Hz (samply record -r). 0 means 997: a
	// prime next to samply's own default of 1000, so sampling does not
	// run in lockstep with periodic work.
	Rate int
	// SamplyPath is the samply binary; "" looks up "samply" in PATH.
	SamplyPath string
	// TempDir holds the recording; "" is os.TempDir().
	TempDir string
	// NoFollow profiles the PID as given even when it is a launcher.
	NoFollow bool
	// NoSymbolize keeps samply's unsymbolicated frames as LIB+0xADDR
	// instead of naming them from the target's ELF files.
	NoSymbolize bool
	// StopTimeout is how long samply may take to write its file after
	// SIGINT before it is killed; 0 means 30 s (it symbolicates nothing
	// with --save-only, but a long recording of many threads is large).
	StopTimeout time.Duration
}

// Samply captures on-CPU profiles of a process with samply
// (github.com/mstange/samply) where perf is missing or unwanted: see
// docs/samply.md.
type Samply struct {
	opt SamplyOptions
}

var _ Collector = (*Samply)(nil)

// NewSamply returns a samply collector.
func NewSamply(opt SamplyOptions) *Samply {
	if opt.Rate <= 0 {
		opt.Rate = 997
	}
	if opt.StopTimeout <= 0 {
		opt.StopTimeout = 30 * time.Second
	}
	return &Samply{opt: opt}
}

func (s *Samply) Name() string { return "samply" }

func (s *Samply) Kinds(t *targets.Target) []bundle.Kind {
	if t.HasPID() {
		return []bundle.Kind{bundle.CPU}
	}
	return nil
}

// ErrSamplyMissing is returned when no samply binary is found.
var ErrSamplyMissing = errors.New("samply is not installed: install it with 'cargo install --locked samply', or put a release binary from github.com/mstange/samply/releases in PATH")

func (s *Samply) samplyPath() (string, error) {
	name := s.opt.SamplyPath
	if name == "" {
		name = "samply"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", ErrSamplyMissing
	}
	return path, nil
}

func (s *Samply) resolve(t *targets.Target) (int, []string, error) {
	return resolveProcess(t, s.opt.NoFollow)
}

func (s *Samply) Probe(ctx context.Context, t *targets.Target) []Availability {
	if !t.HasPID() {
		return nil
	}
	a := Availability{Kind: bundle.CPU, Collector: s.Name()}
	if _, err := s.samplyPath(); err != nil {
		a.Reason = err.Error()
		return []Availability{a}
	}
	pid, notes, err := s.resolve(t)
	if err != nil {
		a.Reason = err.Error()
		return []Availability{a}
	}
	// samply records through perf_event_open, as perf does.
	if why := permissionProblem(bundle.CPU, pid); why != "" {
		a.Reason = why
		return []Availability{a}
	}
	a.Available = true
	a.Reason = strings.Join(append([]string{fmt.Sprintf("pid %d (%s)", pid, procName(pid))}, notes...), "; ")
	return []Availability{a}
}

func (s *Samply) Collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	pprof.Do(ctx, pprof.Labels("component", "collector/samply"), func(ctx context.Context) {
		s.collect(ctx, w, t, kinds, emit)
	})
}

// recordArgs are samply's arguments. -d is a backstop (the window's length
// plus a margin): profcap stops samply with SIGINT at the window's end, and
// -d ends the recording even if that signal is lost.
func (s *Samply) recordArgs(pid int, file string, d time.Duration) []string {
	secs := int(math.Ceil(d.Seconds())) + 5
	return []string{"record", "--save-only", "-o", file, "-r", strconv.Itoa(s.opt.Rate), "-d", strconv.Itoa(secs), "-p", strconv.Itoa(pid)}
}

func (s *Samply) collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	want := false
	for _, k := range kinds {
		if k == bundle.CPU {
			want = true
			continue
		}
		emit(Result{Kind: k, Collector: s.Name(), Status: bundle.StatusUnsupported, Err: fmt.Errorf("samply does not capture %s profiles", k)})
	}
	if !want {
		return
	}
	fail := func(err error) {
		emit(Result{Kind: bundle.CPU, Collector: s.Name(), Status: bundle.StatusFailed, Err: err})
	}
	samply, err := s.samplyPath()
	if err != nil {
		fail(err)
		return
	}
	pid, notes, err := s.resolve(t)
	if err != nil {
		fail(err)
		return
	}
	if why := permissionProblem(bundle.CPU, pid); why != "" {
		fail(errors.New(why))
		return
	}
	dir, err := os.MkdirTemp(s.opt.TempDir, "profcap-samply-")
	if err != nil {
		fail(fmt.Errorf("samply: temp dir: %w", err))
		return
	}
	defer os.RemoveAll(dir)
	// A plain .json name: samply gzips only names ending in .gz, and the
	// file is read once, here.
	file := filepath.Join(dir, "cpu.json")
	var sym *ELFSymbolizer
	if !s.opt.NoSymbolize {
		sym = NewELFSymbolizer(pid) // the maps while the target surely runs
	}
	args := s.recordArgs(pid, file, w.Remaining())
	cmd := exec.CommandContext(ctx, samply, args...)
	out := &tailBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group: a Ctrl-C on the terminal reaches profcap, which
	// ends the window and stops samply itself; Pdeathsig stops samply if
	// profcap dies.
	cmd.SysProcAttr = toolProcAttr()
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fail(fmt.Errorf("starting samply: %w", err))
		return
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()

	var tick func(int)
	if sym != nil {
		tick = func(n int) {
			if n%20 == 0 {
				sym.AddMaps() // libraries loaded during the window, every 2 s
			}
		}
	}
	watch := watchExit(pid, tick)
	exitedEarly := false
	select {
	case <-w.Done():
	case <-watch.Gone:
	case <-done:
		exitedEarly = true
	case <-ctx.Done():
	}
	watch.Stop()
	end := time.Now()
	if sym != nil {
		sym.AddMaps()
	}
	// SIGINT is samply's Ctrl+C: it stops sampling and writes the file.
	select {
	case <-done:
	default:
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(s.opt.StopTimeout):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	res := Result{Kind: bundle.CPU, Collector: s.Name(), Start: start, End: end}
	if ctx.Err() != nil {
		res.Status, res.Err = bundle.StatusFailed, fmt.Errorf("samply capture abandoned: %w", ctx.Err())
		emit(res)
		return
	}
	exited := ""
	select {
	case <-watch.Gone:
		exited = fmt.Sprintf("the target (pid %d) exited before the window ended; the profile covers the time until then", pid)
	default:
	}
	if st, err := os.Stat(file); err != nil || st.Size() == 0 {
		res.Status, res.Err = bundle.StatusFailed, samplyError(pid, out.String(), waitErr)
		if exited != "" {
			res.Err = fmt.Errorf("%s (%w)", exited, res.Err)
		}
		emit(res)
		return
	}
	opt := firefox.Options{}
	if sym != nil {
		opt.Symbolize = sym.Symbolize
	}
	prof, err := firefox.ParseFile(file, opt)
	if err != nil {
		res.Status, res.Err = bundle.StatusFailed, fmt.Errorf("reading samply's profile: %w", err)
		emit(res)
		return
	}
	prof.TimeNanos = start.UnixNano()
	prof.DurationNanos = end.Sub(start).Nanoseconds()
	prof.Comments = append(prof.Comments, "samply "+strings.Join(args, " "))
	res.Profile, res.Status = prof, bundle.StatusOK
	if sym != nil {
		if n := sym.Notes(); n != "" {
			notes = append(notes, n)
		}
	} else {
		notes = append(notes, "symbolization off: native frames show as LIB+0xADDR")
	}
	switch {
	case exited != "":
		res.Status, res.Err = bundle.StatusPartial, errors.New(exited)
	case exitedEarly && end.Before(w.Deadline.Add(-time.Second)) && w.EndedEarly() == "":
		res.Status, res.Err = bundle.StatusPartial, fmt.Errorf("samply stopped %s before the window ended: %s", w.Deadline.Sub(end).Round(time.Millisecond), lastLine(out.String()))
	}
	if len(prof.Sample) == 0 {
		notes = append(notes, "no samples: the target did not run on a CPU during the window")
	}
	res.Note = strings.Join(notes, "; ")
	emit(res)
}

// samplyError turns what samply printed into one message with the fix.
func samplyError(pid int, output string, err error) error {
	low := strings.ToLower(output)
	switch {
	case strings.Contains(low, "perf_event_paranoid") || strings.Contains(low, "permission denied") || strings.Contains(low, "operation not permitted"):
		return fmt.Errorf("samply has no permission to profile pid %d (kernel.perf_event_paranoid=%d): run profcap as root, give it CAP_PERFMON, or lower the sysctl (sysctl -w kernel.perf_event_paranoid=1)", pid, perfParanoid())
	case strings.Contains(low, "no such process"):
		return fmt.Errorf("pid %d exited before samply could attach", pid)
	}
	if strings.TrimSpace(output) == "" {
		if err != nil {
			return fmt.Errorf("samply record wrote no profile: %w", err)
		}
		return errors.New("samply record wrote no profile")
	}
	return fmt.Errorf("samply record wrote no profile: %s", lastLine(output))
}

var _ Preflighter = (*Samply)(nil)

// Preflight implements Preflighter: samply is installed, the target's PID
// resolves to a live process, and this user may profile it. A capture that
// lists samply after perf thus takes samply for cpu where perf is missing
// or not permitted.
func (s *Samply) Preflight(t *targets.Target, k bundle.Kind) error {
	if k != bundle.CPU {
		return fmt.Errorf("samply does not capture %s profiles", k)
	}
	if _, err := s.samplyPath(); err != nil {
		return err
	}
	pid, _, err := s.resolve(t)
	if err != nil {
		return err
	}
	if why := permissionProblem(bundle.CPU, pid); why != "" {
		return errors.New(why)
	}
	return nil
}
