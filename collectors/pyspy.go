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
	"syscall"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/formats/folded"
	"github.com/profcap/profcap/targets"
)

// SpyOptions configure the py-spy and rbspy collectors. The zero value is
// usable.
type SpyOptions struct {
	// Rate is the sampling rate in Hz (--rate). 0 means 100, both tools'
	// default: they read the interpreter's memory from outside, which
	// costs the target little but the sampler a lot per sample.
	Rate int
	// Path is the tool's binary; "" looks up py-spy or rbspy in PATH.
	Path string
	// TempDir holds the output while capturing; "" is os.TempDir().
	TempDir string
	// NoFollow profiles the PID as given even when it is a launcher
	// (uv run, poetry run, bundle exec via sh -c ...).
	NoFollow bool
	// StopTimeout is how long the tool may take to write its file after
	// SIGINT; 0 means 15 s.
	StopTimeout time.Duration
}

// spyTool describes one interpreter sampler.
type spyTool struct {
	name    string // py-spy, rbspy
	lang    string // python, ruby (the targets' labels.language)
	display string // Python, Ruby
	install string
	args    func(pid, secs, rate int, file string) []string
	isExe   func(base string) bool
}

var pySpyTool = spyTool{
	name: "py-spy", lang: "python", display: "Python",
	install: "py-spy is not installed: install it with 'pip install py-spy' (or a release binary from github.com/benfred/py-spy/releases)",
	args: func(pid, secs, rate int, file string) []string {
		return []string{"record", "--pid", strconv.Itoa(pid), "--duration", strconv.Itoa(secs), "--rate", strconv.Itoa(rate), "--format", "raw", "-o", file}
	},
	isExe: func(b string) bool { return strings.HasPrefix(b, "python") || strings.HasPrefix(b, "pypy") },
}

var rbspyTool = spyTool{
	name: "rbspy", lang: "ruby", display: "Ruby",
	install: "rbspy is not installed: install it with 'cargo install rbspy' (or a release binary from github.com/rbspy/rbspy/releases)",
	args: func(pid, secs, rate int, file string) []string {
		return []string{"record", "--pid", strconv.Itoa(pid), "--duration", strconv.Itoa(secs), "--rate", strconv.Itoa(rate), "--format", "collapsed", "--file", file}
	},
	isExe: func(b string) bool { return strings.HasPrefix(b, "ruby") },
}

// Spy captures CPU profiles of Python (py-spy) or Ruby (rbspy) processes
// with the interpreter's own frames: see docs/importers.md.
type Spy struct {
	tool spyTool
	opt  SpyOptions
}

var _ Collector = (*Spy)(nil)

// NewPySpy returns the py-spy collector, for targets labelled
// language=python or whose executable is python*.
func NewPySpy(opt SpyOptions) *Spy { return newSpy(pySpyTool, opt) }

// NewRbspy returns the rbspy collector, for targets labelled
// language=ruby or whose executable is ruby*.
func NewRbspy(opt SpyOptions) *Spy { return newSpy(rbspyTool, opt) }

func newSpy(tool spyTool, opt SpyOptions) *Spy {
	if opt.Rate <= 0 {
		opt.Rate = 100
	}
	if opt.StopTimeout <= 0 {
		opt.StopTimeout = 15 * time.Second
	}
	return &Spy{tool: tool, opt: opt}
}

func (s *Spy) Name() string { return s.tool.name }

// exeLanguage is the interpreter pid runs, from /proc/PID/exe: "python",
// "ruby" or "".
func exeLanguage(pid int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return ""
	}
	b := filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
	for _, t := range []spyTool{pySpyTool, rbspyTool} {
		if t.isExe(b) {
			return t.lang
		}
	}
	return ""
}

// Kinds is CPU for targets with a PID whose language label names this
// tool's language or, without a label, whose executable is its interpreter.
func (s *Spy) Kinds(t *targets.Target) []bundle.Kind {
	if !t.HasPID() {
		return nil
	}
	if l := strings.ToLower(t.Labels["language"]); l != "" {
		if l == s.tool.lang {
			return []bundle.Kind{bundle.CPU}
		}
		return nil
	}
	pid, err := t.ResolvePID()
	if err != nil || pid == 0 {
		return nil
	}
	if !s.opt.NoFollow {
		pid, _ = followLauncher(pid)
	}
	if exeLanguage(pid) == s.tool.lang {
		return []bundle.Kind{bundle.CPU}
	}
	return nil
}

func (s *Spy) path() (string, error) {
	name := s.opt.Path
	if name == "" {
		name = s.tool.name
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", errors.New(s.tool.install)
	}
	return p, nil
}

// resolve finds the PID and checks it runs this tool's interpreter.
func (s *Spy) resolve(t *targets.Target) (int, []string, error) {
	pid, notes, err := resolveProcess(t, s.opt.NoFollow)
	if err != nil {
		return 0, nil, err
	}
	if l := exeLanguage(pid); l != s.tool.lang {
		if label := strings.ToLower(t.Labels["language"]); label != s.tool.lang || l != "" {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			return 0, nil, fmt.Errorf("pid %d runs %s, not a %s interpreter", pid, exe, s.tool.display)
		}
		// Labelled, but an embedded interpreter (uwsgi, unicorn ...):
		// let the tool try.
	}
	return pid, notes, nil
}

// ptraceProblem says why this process may not read pid's memory, or "".
func ptraceProblem(pid int) string {
	if os.Geteuid() == 0 || hasCap(19 /* CAP_SYS_PTRACE */) {
		return ""
	}
	if st, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
			return fmt.Sprintf("pid %d belongs to uid %d, not to you (uid %d): run profcap as root or as that user", pid, sys.Uid, os.Geteuid())
		}
	}
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	if err == nil {
		if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n >= 1 {
			return fmt.Sprintf("kernel.yama.ptrace_scope is %d, which lets only a parent read a process's memory: run profcap as root, give it CAP_SYS_PTRACE, or sysctl -w kernel.yama.ptrace_scope=0", n)
		}
	}
	return ""
}

func (s *Spy) Probe(ctx context.Context, t *targets.Target) []Availability {
	if !t.HasPID() {
		return nil
	}
	a := Availability{Kind: bundle.CPU, Collector: s.Name()}
	if _, err := s.path(); err != nil {
		a.Reason = err.Error()
		return []Availability{a}
	}
	pid, notes, err := s.resolve(t)
	if err != nil {
		a.Reason = err.Error()
		return []Availability{a}
	}
	if why := ptraceProblem(pid); why != "" {
		a.Reason = why
		return []Availability{a}
	}
	a.Available = true
	a.Reason = strings.Join(append([]string{fmt.Sprintf("pid %d (%s)", pid, procName(pid))}, notes...), "; ")
	return []Availability{a}
}

func (s *Spy) Collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	pprof.Do(ctx, pprof.Labels("component", "collector/"+s.tool.name), func(ctx context.Context) {
		s.collect(ctx, w, t, kinds, emit)
	})
}

func (s *Spy) collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	want := false
	for _, k := range kinds {
		if k == bundle.CPU {
			want = true
			continue
		}
		emit(Result{Kind: k, Collector: s.Name(), Status: bundle.StatusUnsupported, Err: fmt.Errorf("%s does not capture %s profiles", s.tool.name, k)})
	}
	if !want {
		return
	}
	fail := func(err error) {
		emit(Result{Kind: bundle.CPU, Collector: s.Name(), Status: bundle.StatusFailed, Err: err})
	}
	bin, err := s.path()
	if err != nil {
		fail(err)
		return
	}
	pid, notes, err := s.resolve(t)
	if err != nil {
		fail(err)
		return
	}
	if why := ptraceProblem(pid); why != "" {
		fail(errors.New(why))
		return
	}
	dir, err := os.MkdirTemp(s.opt.TempDir, "profcap-"+s.tool.name+"-")
	if err != nil {
		fail(fmt.Errorf("%s: temp dir: %w", s.tool.name, err))
		return
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "cpu.folded")
	// --duration is whole seconds, rounded up: SIGINT at the window's end
	// stops the tool earlier, and both tools write their file on SIGINT.
	secs := max(1, int(math.Ceil(w.Remaining().Seconds())))
	args := s.tool.args(pid, secs, s.opt.Rate, file)
	cmd := exec.CommandContext(ctx, bin, args...)
	out := &tailBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = toolProcAttr()
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fail(fmt.Errorf("starting %s: %w", s.tool.name, err))
		return
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	watch := watchExit(pid, nil)
	select {
	case <-w.Done():
	case <-watch.Gone:
	case <-done:
	case <-ctx.Done():
	}
	watch.Stop()
	end := time.Now()
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
		res.Status, res.Err = bundle.StatusFailed, fmt.Errorf("%s capture abandoned: %w", s.tool.name, ctx.Err())
		emit(res)
		return
	}
	exited := ""
	select {
	case <-watch.Gone:
		exited = fmt.Sprintf("the target (pid %d) exited before the window ended; the profile covers the time until then", pid)
	default:
	}
	f, err := os.Open(file)
	if err != nil {
		res.Status, res.Err = bundle.StatusFailed, s.toolError(pid, out.String(), waitErr)
		if exited != "" {
			res.Err = fmt.Errorf("%s (%w)", exited, res.Err)
		}
		emit(res)
		return
	}
	p, err := folded.Parse(f)
	f.Close()
	if err != nil {
		res.Status, res.Err = bundle.StatusFailed, fmt.Errorf("reading %s output: %w", s.tool.name, err)
		emit(res)
		return
	}
	p = asCPU(p, s.opt.Rate)
	p.TimeNanos = start.UnixNano()
	p.DurationNanos = end.Sub(start).Nanoseconds()
	p.Comments = append(p.Comments, s.tool.name+" "+strings.Join(args, " "))
	res.Profile, res.Status = p, bundle.StatusOK
	if exited != "" {
		res.Status, res.Err = bundle.StatusPartial, errors.New(exited)
	}
	if len(p.Sample) == 0 {
		notes = append(notes, "no samples: the interpreter ran no "+s.tool.display+" code on a CPU during the window")
	}
	res.Note = strings.Join(notes, "; ")
	emit(res)
}

// asCPU turns a folded profile (sample counts) into a CPU profile:
// samples/count and cpu/nanoseconds at 1/rate seconds a sample.
func asCPU(p *profile.Profile, rate int) *profile.Profile {
	period := int64(time.Second) / int64(rate)
	p.SampleType = []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}}
	p.PeriodType = &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}
	p.Period = period
	for _, s := range p.Sample {
		s.Value = []int64{s.Value[0], s.Value[0] * period}
	}
	return p
}

func (s *Spy) toolError(pid int, output string, err error) error {
	low := strings.ToLower(output)
	switch {
	case strings.Contains(low, "permission denied") || strings.Contains(low, "operation not permitted"):
		return fmt.Errorf("%s may not read pid %d's memory: run profcap as root or with CAP_SYS_PTRACE (%s)", s.tool.name, pid, lastLine(output))
	case strings.Contains(low, "no such process"):
		return fmt.Errorf("pid %d exited before %s could attach", pid, s.tool.name)
	}
	if strings.TrimSpace(output) == "" {
		if err != nil {
			return fmt.Errorf("%s record wrote no profile: %w", s.tool.name, err)
		}
		return fmt.Errorf("%s record wrote no profile", s.tool.name)
	}
	return fmt.Errorf("%s record wrote no profile: %s", s.tool.name, lastLine(output))
}

var _ Preflighter = (*Spy)(nil)

// Preflight implements Preflighter: the tool is installed, the PID runs
// its interpreter (or is labelled with its language), and this user may
// read the process's memory.
func (s *Spy) Preflight(t *targets.Target, k bundle.Kind) error {
	if k != bundle.CPU {
		return fmt.Errorf("%s does not capture %s profiles", s.tool.name, k)
	}
	if _, err := s.path(); err != nil {
		return err
	}
	pid, _, err := s.resolve(t)
	if err != nil {
		return err
	}
	if why := ptraceProblem(pid); why != "" {
		return errors.New(why)
	}
	return nil
}
