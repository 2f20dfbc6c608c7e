package collectors

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/pprof/profile"

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
	pidCollector
	opt SamplyOptions
}

// NewSamply returns a samply collector.
func NewSamply(opt SamplyOptions) *Samply {
	opt.Rate = orDefault(opt.Rate, 997)
	opt.StopTimeout = orDefault(opt.StopTimeout, 30*time.Second)
	s := &Samply{opt: opt}
	s.pidCollector = pidCollector{
		// samply records through perf_event_open, as perf does.
		tool:   Tool{Name: "samply", Path: opt.SamplyPath, Missing: ErrSamplyMissing, Access: PerfEvents},
		offers: []bundle.Kind{bundle.CPU}, check: s.check, collect: s.collect,
	}
	return s
}

func (s *Samply) Kinds(t *targets.Target) []bundle.Kind {
	if t.HasPID() {
		return []bundle.Kind{bundle.CPU}
	}
	return nil
}

// ErrSamplyMissing is returned when no samply binary is found.
var ErrSamplyMissing = errors.New("samply is not installed: install it with 'cargo install --locked samply', or put a release binary from github.com/mstange/samply/releases in PATH")

// check is the one test behind Probe, Preflight and Collect: samply is
// installed, the target's PID resolves to a live process (past a launcher
// unless NoFollow) and this user may profile it, as samply judges it.
func (s *Samply) check(t *targets.Target, k bundle.Kind) (pid int, notes []string, err error) {
	if pid, notes, err = s.tool.Process(t, s.opt.NoFollow); err != nil {
		return 0, nil, err
	}
	if err := s.tool.Permitted(pid, k); err != nil {
		return 0, nil, err
	}
	if why := samplyPMU(); why != "" {
		return 0, nil, lack{errors.New(why)}
	}
	return pid, notes, nil
}

// samplyPMU is the machine's answer to samplyPMUProblem (a variable, so
// the tests that drive a fake samply can run where the real one could not).
var samplyPMU = func() string { return samplyPMUProblem(perfParanoid(), hardwareCycles()) }

// samplyPMUProblem says why samply cannot record here although perf can,
// or "". samply 0.13.1 opens the hardware cycles event first and falls
// back to the cpu-clock software event when that fails, but it takes the
// failure's errno from the -1 that syscall(2) returns, so every failure
// reads as EPERM; with kernel.perf_event_paranoid above 1 it then prints
// its paranoid-level advice and exits 1 before trying the fallback, even as
// root (src/linux/perf_event.rs, Perf::open, and src/linux/profiler.rs,
// init_profiler). On a machine with a PMU the first open succeeds; on a VM
// without one (this one: perf falls back to cpu-clock by itself) samply
// needs the sysctl at 1 or lower.
func samplyPMUProblem(paranoid int, hwCycles bool) string {
	if hwCycles || paranoid <= 1 {
		return ""
	}
	return fmt.Sprintf("samply cannot record here: this machine has no hardware cycles event (a VM without a PMU) and kernel.perf_event_paranoid is %d, and samply 0.13 then exits with a permission message even as root instead of falling back to the cpu-clock event: lower the sysctl (sysctl -w kernel.perf_event_paranoid=1), or let perf take cpu (it falls back by itself)", paranoid)
}

// recordArgs are samply's arguments. -d is meant as a backstop (the
// window's length plus a margin), but samply 0.13.1 ignores it when it
// attaches to a PID (it records "until Ctrl+C"): profcap stops it with
// SIGINT at the window's end, and kills it StopTimeout later.
func (s *Samply) recordArgs(pid int, file string, secs int) []string {
	return []string{"record", "--save-only", "-o", file, "-r", strconv.Itoa(s.opt.Rate), "-d", strconv.Itoa(secs + 5), "-p", strconv.Itoa(pid)}
}

func (s *Samply) collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	pid, notes, err := s.check(t, bundle.CPU)
	if err != nil {
		emit(Result{Kind: bundle.CPU, Collector: s.Name(), Status: bundle.StatusFailed, Err: err})
		return
	}
	var sym *ELFSymbolizer
	var tick func(int)
	if !s.opt.NoSymbolize {
		sym = NewELFSymbolizer(pid) // the maps while the target surely runs
		tick = func(n int) {
			if n%20 == 0 {
				sym.AddMaps() // libraries loaded during the window, every 2 s
			}
		}
	}
	res, run := s.tool.Record(ctx, w, s.Name(), FileOptions{
		RunOptions: RunOptions{PID: pid, Kind: bundle.CPU, StopTimeout: s.opt.StopTimeout, Tick: tick},
		TempDir:    s.opt.TempDir,
		// A plain .json name: samply gzips only names ending in .gz, and
		// the file is read once, here.
		File:           "cpu.json",
		EmptyIsNothing: true,
		ArgsFor:        func(file string) []string { return s.recordArgs(pid, file, w.RemainingSeconds()) },
		Read: func(file string) (*profile.Profile, error) {
			opt := firefox.Options{}
			if sym != nil {
				sym.AddMaps()
				opt.Symbolize = sym.Symbolize
			}
			return firefox.ParseFile(file, opt)
		},
	})
	if res.Profile == nil {
		emit(res)
		return
	}
	if sym != nil {
		if n := sym.Notes(); n != "" {
			notes = append(notes, n)
		}
	} else {
		notes = append(notes, "symbolization off: native frames show as LIB+0xADDR")
	}
	if res.Status == bundle.StatusOK && run.Exited && run.End.Before(w.Deadline.Add(-time.Second)) && w.EndedEarly() == "" {
		res.Status, res.Err = bundle.StatusPartial, fmt.Errorf("samply stopped %s before the window ended: %s", w.Deadline.Sub(run.End).Round(time.Millisecond), lastLine(run.Output()))
	}
	if len(res.Profile.Sample) == 0 {
		notes = append(notes, "no samples: the target did not run on a CPU during the window")
	}
	res.Note = strings.Join(notes, "; ")
	emit(res)
}
