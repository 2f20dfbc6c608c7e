package collectors

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	lib     string // the interpreter's shared library, when it is embedded
}

var pySpyTool = spyTool{
	name: "py-spy", lang: "python", display: "Python",
	install: "py-spy is not installed: install it with 'pip install py-spy' (or a release binary from github.com/benfred/py-spy/releases)",
	args: func(pid, secs, rate int, file string) []string {
		return []string{"record", "--pid", strconv.Itoa(pid), "--duration", strconv.Itoa(secs), "--rate", strconv.Itoa(rate), "--format", "raw", "-o", file}
	},
	isExe: func(b string) bool { return strings.HasPrefix(b, "python") || strings.HasPrefix(b, "pypy") },
	lib:   "libpython",
}

var rbspyTool = spyTool{
	name: "rbspy", lang: "ruby", display: "Ruby",
	install: "rbspy is not installed: install it with 'cargo install rbspy' (or a release binary from github.com/rbspy/rbspy/releases)",
	args: func(pid, secs, rate int, file string) []string {
		return []string{"record", "--pid", strconv.Itoa(pid), "--duration", strconv.Itoa(secs), "--rate", strconv.Itoa(rate), "--format", "collapsed", "--file", file}
	},
	isExe: func(b string) bool { return strings.HasPrefix(b, "ruby") },
	lib:   "libruby",
}

// Spy captures CPU profiles of Python (py-spy) or Ruby (rbspy) processes
// with the interpreter's own frames: see docs/importers.md.
type Spy struct {
	pidCollector
	spy spyTool
	opt SpyOptions
}

// NewPySpy returns the py-spy collector, for targets labelled
// language=python or whose executable is python*.
func NewPySpy(opt SpyOptions) *Spy { return newSpy(pySpyTool, opt) }

// NewRbspy returns the rbspy collector, for targets labelled
// language=ruby or whose executable is ruby*.
func NewRbspy(opt SpyOptions) *Spy { return newSpy(rbspyTool, opt) }

func newSpy(spy spyTool, opt SpyOptions) *Spy {
	opt.Rate = orDefault(opt.Rate, 100)
	opt.StopTimeout = orDefault(opt.StopTimeout, 15*time.Second)
	s := &Spy{spy: spy, opt: opt}
	s.pidCollector = pidCollector{
		// Both read the interpreter's memory from outside (process_vm_readv).
		tool:   Tool{Name: spy.name, Path: opt.Path, Missing: errors.New(spy.install), Access: Ptrace},
		offers: []bundle.Kind{bundle.CPU}, check: s.check, collect: s.collect,
	}
	return s
}

// exeLanguage is the interpreter pid runs, from /proc/PID/exe: "python",
// "ruby" or "".
// libMapped reports whether pid maps the interpreter's shared library
// (libpython3.11.so, libruby.so.3.1): an interpreter embedded in another
// program.
func (t spyTool) libMapped(pid int) bool {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.LastIndexByte(line, '/'); i >= 0 && strings.HasPrefix(line[i+1:], t.lib) {
			return true
		}
	}
	return false
}

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
		if l == s.spy.lang {
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
	if exeLanguage(pid) == s.spy.lang {
		return []bundle.Kind{bundle.CPU}
	}
	return nil
}

// check is the one test behind Probe, Preflight and Collect: the tool is
// installed, the PID runs its interpreter (or is labelled with its
// language) and this user may read the process's memory.
func (s *Spy) check(t *targets.Target, k bundle.Kind) (pid int, notes []string, err error) {
	if pid, notes, err = s.tool.Process(t, s.opt.NoFollow); err != nil {
		return 0, nil, err
	}
	if l := exeLanguage(pid); l != s.spy.lang {
		label := strings.ToLower(t.Labels["language"])
		// Labelled, and an interpreter embedded in another executable
		// (uwsgi, a Rust worker that embeds Python) loads its library:
		// let the tool try. Anything else is not this tool's to profile.
		if label != s.spy.lang || l != "" || !s.spy.libMapped(pid) {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			return 0, nil, fmt.Errorf("pid %d runs %s, not a %s interpreter (and maps no %s library)", pid, exe, s.spy.display, s.spy.lib)
		}
	}
	return pid, notes, s.tool.Permitted(pid, k)
}

func (s *Spy) collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	pid, notes, err := s.check(t, bundle.CPU)
	if err != nil {
		emit(Result{Kind: bundle.CPU, Collector: s.Name(), Status: bundle.StatusFailed, Err: err})
		return
	}
	res, _ := s.tool.Record(ctx, w, s.Name(), FileOptions{
		RunOptions: RunOptions{PID: pid, Kind: bundle.CPU, StopTimeout: s.opt.StopTimeout},
		TempDir:    s.opt.TempDir,
		File:       "cpu.folded",
		// --duration is whole seconds, rounded up: SIGINT at the window's
		// end stops the tool earlier, and both tools write their file on
		// SIGINT.
		ArgsFor: func(file string) []string { return s.spy.args(pid, w.RemainingSeconds(), s.opt.Rate, file) },
		Read: func(file string) (*profile.Profile, error) {
			f, err := os.Open(file)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			p, err := folded.Parse(f)
			if err != nil {
				return nil, err
			}
			return asCPU(p, s.opt.Rate), nil
		},
	})
	if res.Profile != nil && len(res.Profile.Sample) == 0 {
		notes = append(notes, "no samples: the interpreter ran no "+s.spy.display+" code on a CPU during the window")
	}
	if res.Profile != nil {
		res.Note = strings.Join(notes, "; ")
	}
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
