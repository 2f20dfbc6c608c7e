package collectors

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/formats/folded"
	"github.com/profcap/profcap/targets"
)

// SpyOptions configure the py-spy and rbspy collectors. The zero value is
// usable.
type SpyOptions struct {
	// Rate is the sampling rate in Hz (--rate). 0 means the tool's
	// default rate (spyTool.rate): they read the interpreter's memory from
	// outside, which costs the target little but the sampler a lot per
	// sample.
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
	// NoNative leaves py-spy's --native out: Python frames only, without
	// the C, Cython or Rust frames of the libraries the interpreter calls.
	NoNative bool
	// NoJoin keeps rbspy's Ruby frames alone, without recording the same
	// process with perf and joining its native frames (the Rust code a
	// Ruby worker calls through FFI) under them.
	NoJoin bool
	// PerfPath is the perf binary rbspy's join records with; "" looks up
	// perf in PATH.
	PerfPath string
	// PerfFrequency is the joined perf recording's sampling rate (Hz); 0
	// means 99, as the perf collector's.
	PerfFrequency int
}

// spyTool describes one interpreter sampler.
type spyTool struct {
	name    string // py-spy, rbspy
	lang    string // python, ruby (the targets' labels.language)
	display string // Python, Ruby
	install string
	// args are the tool's arguments for one run: kind cpu samples only
	// threads on a CPU, wall every thread; raw is rbspy's timestamped
	// sample file ("" for none).
	args   func(o SpyOptions, k bundle.Kind, pid, secs int, file, raw string) []string
	isExe  func(base string) bool
	lib    string        // the interpreter's shared library, when it is embedded
	offers []bundle.Kind // what the tool captures
	// rate is the sampling rate (Hz) when SpyOptions.Rate is 0.
	rate int
}

var pySpyTool = spyTool{
	name: "py-spy", lang: "python", display: "Python",
	install: "py-spy is not installed: install it with 'pip install py-spy' (or a release binary from github.com/benfred/py-spy/releases)",
	args: func(o SpyOptions, k bundle.Kind, pid, secs int, file, _ string) []string {
		a := []string{"record", "--pid", strconv.Itoa(pid), "--duration", strconv.Itoa(secs), "--rate", strconv.Itoa(o.Rate)}
		if !o.NoNative {
			// The C, Cython and Rust frames under the Python ones (py-spy
			// unwinds them with libunwind while the process is paused).
			a = append(a, "--native")
		}
		if k == bundle.Wall {
			a = append(a, "--idle") // threads off CPU too
		}
		return append(a, "--format", "raw", "-o", file)
	},
	isExe:  func(b string) bool { return strings.HasPrefix(b, "python") || strings.HasPrefix(b, "pypy") },
	lib:    "libpython",
	offers: []bundle.Kind{bundle.CPU, bundle.Wall},
	// py-spy's own default: its timer draws each gap from an exponential
	// distribution, so it never locks in phase with the target.
	rate: 100,
}

var rbspyTool = spyTool{
	name: "rbspy", lang: "ruby", display: "Ruby",
	install: "rbspy is not installed: install it with 'cargo install rbspy' (or a release binary from github.com/rbspy/rbspy/releases)",
	args: func(o SpyOptions, k bundle.Kind, pid, secs int, file, raw string) []string {
		a := []string{"record", "--pid", strconv.Itoa(pid), "--duration", strconv.Itoa(secs), "--rate", strconv.Itoa(o.Rate)}
		if k == bundle.CPU {
			a = append(a, "--on-cpu") // only while the thread runs
		}
		a = append(a, "--format", "collapsed", "--file", file)
		if raw != "" {
			// The join's run: timestamped samples, and no ptrace stop of
			// the process at each sample, which perf's off-CPU recording
			// would see as the threads blocking (and the join would
			// cross).
			a = append(a, "--raw-file", raw, "--nonblocking")
		}
		return a
	},
	isExe:  func(b string) bool { return strings.HasPrefix(b, "ruby") },
	lib:    "libruby",
	offers: []bundle.Kind{bundle.CPU, bundle.Wall, bundle.OffCPU},
	// Not rbspy's 100: its timer samples at start + n/rate exactly, so at
	// 100 Hz it locks in phase with any loop of the target that runs at a
	// divisor of 100 Hz on its own fixed schedule (the Ruby worker's 20
	// steps a second): every sample falls at the same few points of the
	// cycle for the whole window, and a 4 ms step between two of them is
	// never seen. At 99 Hz (perf's default, for the same reason) the
	// points drift across a 50 ms cycle in a second.
	rate: 99,
}

// Spy captures profiles of Python (py-spy) or Ruby (rbspy) processes with
// the interpreter's own frames: see docs/collectors.md. py-spy records cpu
// and wall with --native, so one stack runs from a Python function into
// the C or Rust library it calls. rbspy has no native mode: for Ruby the
// collector records the same process with perf and joins the native frames
// under the Ruby ones (mixed.go), for cpu, wall and offcpu.
type Spy struct {
	pidCollector
	spy  spyTool
	opt  SpyOptions
	perf Tool // rbspy's join
}

// NewPySpy returns the py-spy collector, for targets labelled
// language=python or whose executable is python*.
func NewPySpy(opt SpyOptions) *Spy { return newSpy(pySpyTool, opt) }

// NewRbspy returns the rbspy collector, for targets labelled
// language=ruby or whose executable is ruby*.
func NewRbspy(opt SpyOptions) *Spy { return newSpy(rbspyTool, opt) }

func newSpy(spy spyTool, opt SpyOptions) *Spy {
	opt.Rate = orDefault(opt.Rate, spy.rate)
	opt.StopTimeout = orDefault(opt.StopTimeout, 15*time.Second)
	opt.PerfFrequency = orDefault(opt.PerfFrequency, 99)
	s := &Spy{spy: spy, opt: opt, perf: Tool{Name: "perf", Path: opt.PerfPath, Missing: ErrPerfMissing, Access: PerfEvents}}
	s.pidCollector = pidCollector{
		// Both read the interpreter's memory from outside (process_vm_readv).
		tool:   Tool{Name: spy.name, Path: opt.Path, Missing: errors.New(spy.install), Access: Ptrace},
		offers: spy.offers, check: s.check, collect: s.collect,
	}
	return s
}

// Prepares says rbspy's join starts perf before the window (as the perf
// collector does), so the window opens when perf samples.
func (s *Spy) Prepares() bool { return s.joins() }

func (s *Spy) joins() bool { return s.spy.name == "rbspy" && !s.opt.NoJoin }

// perfProblem says why rbspy's join cannot record kind k of pid with perf
// here, or nil.
func (s *Spy) perfProblem(pid int, k bundle.Kind) error {
	if _, err := s.perf.Find(); err != nil {
		return err
	}
	return s.perf.Permitted(pid, k)
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

// Kinds is what the tool offers (py-spy: cpu, wall; rbspy: cpu, wall,
// offcpu) for targets with a PID whose language label names this tool's
// language or, without a label, whose executable is its interpreter.
func (s *Spy) Kinds(t *targets.Target) []bundle.Kind {
	if !t.HasPID() {
		return nil
	}
	if l := strings.ToLower(t.Labels["language"]); l != "" {
		if l == s.spy.lang {
			return slices.Clone(s.spy.offers)
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
		return slices.Clone(s.spy.offers)
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
	if err := s.tool.Permitted(pid, k); err != nil {
		return 0, nil, err
	}
	if k == bundle.OffCPU {
		// rbspy alone cannot tell blocked time: off-CPU is perf's, joined.
		if s.opt.NoJoin {
			return 0, nil, lack{errors.New("rbspy records no off-CPU time by itself, and joining perf's was turned off")}
		}
		if err := s.perfProblem(pid, k); err != nil {
			return 0, nil, fmt.Errorf("rbspy's off-CPU profile is perf's, joined to Ruby stacks: %w", err)
		}
	}
	return pid, notes, nil
}

func (s *Spy) collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	defer Ready(ctx) // a Preparer is ready at the latest when it returns
	var ok []bundle.Kind
	var pid int
	var notes []string
	for _, k := range kinds {
		p, n, err := s.check(t, k)
		if err != nil {
			st := bundle.StatusFailed
			if isLack(err) && k == bundle.OffCPU {
				st = bundle.StatusUnsupported
			}
			emit(Result{Kind: k, Collector: s.Name(), Status: st, Err: err})
			continue
		}
		pid, notes = p, n
		ok = append(ok, k)
	}
	if len(ok) == 0 {
		return
	}
	if s.joins() {
		s.collectJoined(ctx, w, pid, notes, ok, emit)
		return
	}
	Ready(ctx)
	var wg sync.WaitGroup
	for _, k := range ok {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, run := s.record(ctx, w, pid, k, nil)
			emit(s.finish(res, run, notes))
		}()
	}
	wg.Wait()
}

// spyStartSlack is what py-spy's and rbspy's --duration adds to the
// window, in seconds (see record).
const spyStartSlack = 30

// record runs the tool for kind k (cpu or wall) into its folded file, and
// gives raw, if set, rbspy's timestamped samples.
func (s *Spy) record(ctx context.Context, w *Window, pid int, k bundle.Kind, raw *[]interpSample) (Result, *Run) {
	return s.tool.Record(ctx, w, s.Name(), FileOptions{
		RunOptions: RunOptions{PID: pid, Kind: k, StopTimeout: s.opt.StopTimeout},
		TempDir:    s.opt.TempDir,
		File:       string(k) + ".folded",
		// --duration is whole seconds, rounded up, and longer by
		// spyStartSlack: the tool starts before the window opens (it
		// opens when every collector is ready), so its own clock would
		// stop it that much early (py-spy's cpu once covered 94% of the
		// window: sampled to 9.4 s of 10). SIGINT at the window's end
		// stops it, and both tools write their file on SIGINT.
		ArgsFor: func(file string) []string {
			rawFile := ""
			if raw != nil {
				rawFile = strings.TrimSuffix(file, ".folded") + ".raw.gz"
			}
			return s.spy.args(s.opt, k, pid, w.RemainingSeconds()+spyStartSlack, file, rawFile)
		},
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
			if raw != nil {
				if *raw, err = readRbspyRaw(strings.TrimSuffix(file, ".folded") + ".raw.gz"); err != nil {
					return nil, err
				}
			}
			cleanSpyProfile(p, s.spy.name)
			return asSampled(p, k, s.opt.Rate), nil
		},
	})
}

// finish adds the notes of one run of the tool to its result.
func (s *Spy) finish(res Result, run *Run, notes []string) Result {
	if res.Profile == nil {
		return res
	}
	notes = slices.Clone(notes)
	if len(res.Profile.Sample) == 0 {
		if res.Kind == bundle.CPU {
			notes = append(notes, "no samples: the interpreter ran no "+s.spy.display+" code on a CPU during the window")
		} else {
			notes = append(notes, "no samples")
		}
	}
	if run != nil {
		// py-spy: "Samples: 55 Errors: 26": samples it could not take
		// (the process was busy, a thread exited) are missing from the
		// profile.
		if m := spyErrors.FindStringSubmatch(run.Output()); m != nil && m[2] != "0" {
			n, _ := strconv.Atoi(m[1])
			e, _ := strconv.Atoi(m[2])
			msg := fmt.Sprintf("%s could not take %d of %d samples", s.spy.name, e, n+e)
			if e*10 > n+e {
				msg = bundle.WarningPrefix + msg
			}
			notes = append(notes, msg)
			res.Profile.Comments = append(res.Profile.Comments, msg)
		}
	}
	if res.Kind == bundle.Wall {
		if share := markIdle(res.Profile); share > 0 {
			notes = append(notes, fmt.Sprintf("%.0f%% of the time is the interpreter's idle (under %s)", 100*share, IdleFrame))
		}
	}
	res.Note = strings.Join(notes, "; ")
	return res
}

var spyErrors = regexp.MustCompile(`Samples: (\d+) Errors: (\d+)`)

// asSampled turns a folded profile (sample counts) into a CPU or wall
// profile: samples/count and cpu/nanoseconds (wall: time/nanoseconds) at
// 1/rate seconds a sample.
func asSampled(p *profile.Profile, k bundle.Kind, rate int) *profile.Profile {
	period := int64(time.Second) / int64(rate)
	unit := "cpu"
	if k == bundle.Wall {
		unit = "time"
	}
	p.SampleType = []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: unit, Unit: "nanoseconds"}}
	p.PeriodType = &profile.ValueType{Type: unit, Unit: "nanoseconds"}
	p.Period = period
	for _, s := range p.Sample {
		s.Value = []int64{s.Value[0], s.Value[0] * period}
	}
	return p
}
