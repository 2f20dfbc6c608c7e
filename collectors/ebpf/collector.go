// Package ebpf is profcap's native collector on eBPF: on-CPU samples,
// off-CPU time with the blocking stack, and wakeups (the stack of the
// thread that ended a block), of a process and all its descendants,
// counted in the kernel over exactly the window; and the allocations and
// heap growth of native processes, sampled by bytes at the allocator's
// entry points. See docs/ebpf.md, docs/design/ebpf-offcpu.md and
// docs/design/ebpf-heap.md.
//
// The BPF programs are C under bpf/, compiled by clang through bpf2go
// (gen.go): the Go bindings are committed, the objects are built by make
// (make bpf: go generate, with clang). They load CO-RE against the running
// kernel's BTF.
package ebpf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/targets"
)

// Name is the collector's name (manifest, --collector).
const Name = "ebpf"

// Options configure the collector. The zero value is usable.
type Options struct {
	// Frequency is the CPU sampling frequency in Hz; 0 means 99 (a prime:
	// no lockstep with periodic work). profcap record's --perf-frequency.
	Frequency int
	// OffCPUThreshold: blocks at least this long are recorded exactly,
	// shorter ones by a weighted sample (probability t/threshold, weight
	// threshold). 0 means 1ms; see docs/design/ebpf-offcpu.md.
	OffCPUThreshold time.Duration
	// ExcludeRunnable leaves preempted time (state R) out of off-CPU and
	// wakeup profiles.
	ExcludeRunnable bool
	// NoFollow profiles the PID as given even when it is a launcher.
	NoFollow bool
	// BPFStats turns on the kernel's BPF run-time statistics for the
	// capture (kernel.bpf_stats_enabled; they cost two clock reads per
	// program run) and reports the programs' CPU time in each profile's
	// comments ("ebpf: bpf programs ran ..."): bench/ebpf uses it.
	BPFStats bool
	// MaxProcs bounds the process tree tracked (0: 4096, the map's size).
	MaxProcs int

	// AllocSampleBytes is the allocs and heap kinds' sampling period: one
	// allocation sampled per this many bytes allocated, on average; 0
	// means 512 KiB (see docs/design/ebpf-heap.md).
	AllocSampleBytes int
	// AllocMaxSamples caps the allocation samples (stack walks) a second;
	// over it allocations are counted without a stack and not tracked for
	// heap, and the profile says so. 0 means 10,000; negative: no cap.
	AllocMaxSamples int
	// AllocMaxOverhead bounds what the allocator probes may cost the
	// process tree, as a share of its CPU time: every probed call traps
	// into the kernel (about 0.19 µs here), sampled or not, so a program
	// that calls malloc millions of times a second would lose most of its
	// speed. Over the bound the probes are detached and the allocs and
	// heap profiles cover the window up to then (partial). 0 means 0.1
	// (the target keeps 90% of its rate); negative: no bound.
	AllocMaxOverhead float64

	// NoTaskWork takes kept blocks' user stacks at the thread's syscall
	// exit (a raw_tp/sys_exit program), as on kernels without BPF task
	// works, instead of by a task work: for comparison (bench/ebpf) and
	// tests.
	NoTaskWork bool

	// noBlockedIter does without the task iterator that takes the stacks
	// of threads still blocked at the window's end, as on a kernel that
	// refuses it (tests of the fallback).
	noBlockedIter bool
}

// Collector captures cpu, offcpu and wakeup profiles with eBPF.
type Collector struct {
	opt Options
}

// New returns the eBPF collector.
func New(opt Options) *Collector {
	if opt.Frequency <= 0 {
		opt.Frequency = 99
	}
	if opt.OffCPUThreshold <= 0 {
		opt.OffCPUThreshold = time.Millisecond
	}
	if opt.MaxProcs <= 0 || opt.MaxProcs > 4096 {
		opt.MaxProcs = 4096
	}
	if opt.AllocSampleBytes <= 0 {
		opt.AllocSampleBytes = 512 << 10
	}
	if opt.AllocMaxSamples == 0 {
		opt.AllocMaxSamples = 10000
	}
	if opt.AllocMaxOverhead == 0 {
		opt.AllocMaxOverhead = 0.1
	}
	return &Collector{opt: opt}
}

var _ interface {
	collectors.Collector
	collectors.Preflighter
	collectors.Preparer
} = (*Collector)(nil)

// Kinds is what the collector offers a target with a PID.
var Kinds = []bundle.Kind{bundle.CPU, bundle.OffCPU, bundle.Wakeup}

// AllocKinds are offered too for a native target: one with a PID and no
// pprof endpoint (a Go program allocates through its runtime, which
// pprof profiles whole; a service that serves its own heap profile knows
// more than a window's samples).
var AllocKinds = []bundle.Kind{bundle.Allocs, bundle.Heap}

func (c *Collector) Name() string { return Name }

func (c *Collector) Kinds(t *targets.Target) []bundle.Kind {
	if !t.HasPID() {
		return nil
	}
	ks := slices.Clone(Kinds)
	if t.Pprof == "" {
		ks = append(ks, AllocKinds...)
	}
	return ks
}

// Prepares: loading and attaching takes a fraction of a second (more on a
// loaded machine); the window waits for it.
func (c *Collector) Prepares() bool { return true }

// errLack marks the machine's lack (privileges, BTF, a kernel that refuses
// the programs): the kind is then unsupported here and a capture prefers
// perf.
type errLack struct{ error }

func (e errLack) Unwrap() error { return e.error }

func isLack(err error) bool {
	var l errLack
	return errors.As(err, &l)
}

// check is the one test behind Probe, Preflight and Collect: the machine
// can load and attach the programs (privileges, BTF, the kernel's
// verifier: tried once per process), and the target's process is alive.
func (c *Collector) check(t *targets.Target) (pid int, notes []string, err error) {
	if err := machineCheck(); err != nil {
		return 0, nil, errLack{err}
	}
	pid, err = t.ResolvePID()
	if err != nil {
		return 0, nil, err
	}
	if pid <= 0 {
		return 0, nil, errors.New("target has no pid")
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", pid)); err != nil {
		return 0, nil, fmt.Errorf("no process with pid %d (the target is not running, or its pid file is stale)", pid)
	}
	if !c.opt.NoFollow {
		var note string
		if pid, note = collectors.FollowLauncher(pid); note != "" {
			notes = append(notes, note)
		}
	}
	return pid, notes, nil
}

// Probe implements collectors.Collector by the check.
func (c *Collector) Probe(ctx context.Context, t *targets.Target) []collectors.Availability {
	if !t.HasPID() {
		return nil
	}
	pid, notes, err := c.check(t)
	var out []collectors.Availability
	for _, k := range Kinds {
		a := collectors.Availability{Kind: k, Collector: Name}
		if err != nil {
			a.Reason = err.Error()
		} else {
			a.Available = true
			a.Reason = strings.Join(append([]string{fmt.Sprintf("pid %d and its descendants", pid), unwindNote(pid)}, notes...), "; ")
		}
		out = append(out, a)
	}
	if t.Pprof == "" {
		out = append(out, c.probeAlloc(pid, notes, err)...)
	}
	return out
}

// unwindNote says how the collector will walk pid's user stacks.
func unwindNote(pid int) string {
	fp := collectors.FramePointersOf(fmt.Sprintf("/proc/%d/exe", pid))
	if !fp.Known || fp.Present {
		return "stacks by frame pointers"
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return fmt.Sprintf("stacks by .eh_frame CFI: %s has %s", exe, fp)
}

// probeAlloc is Probe's answer for the allocs and heap kinds: the
// allocators the process maps.
func (c *Collector) probeAlloc(pid int, notes []string, err error) []collectors.Availability {
	var found string
	if err == nil {
		found, err = allocCheck(pid)
	}
	var out []collectors.Availability
	for _, k := range AllocKinds {
		a := collectors.Availability{Kind: k, Collector: Name}
		if err != nil {
			a.Reason = err.Error()
		} else {
			a.Available = true
			a.Reason = strings.Join(append([]string{fmt.Sprintf("pid %d and its descendants: %s", pid, found)}, notes...), "; ")
		}
		out = append(out, a)
	}
	return out
}

// Preflight implements collectors.Preflighter by the check Probe makes.
func (c *Collector) Preflight(t *targets.Target, k bundle.Kind) error {
	if !slices.Contains(c.Kinds(t), k) {
		return fmt.Errorf("%s does not capture %s profiles", Name, k)
	}
	pid, _, err := c.check(t)
	if err == nil && slices.Contains(AllocKinds, k) {
		_, err = allocCheck(pid)
	}
	return err
}

// Collect implements collectors.Collector.
func (c *Collector) Collect(ctx context.Context, w *collectors.Window, t *targets.Target, kinds []bundle.Kind, emit collectors.Emit) {
	defer collectors.Ready(ctx)
	kinds = collectors.Unsupported(Name, kinds, emit, c.Kinds(t)...)
	if len(kinds) == 0 {
		return
	}
	pid, notes, err := c.check(t)
	if err != nil {
		st := bundle.StatusFailed
		if isLack(err) {
			st = bundle.StatusUnsupported
		}
		for _, k := range kinds {
			emit(collectors.Result{Kind: k, Collector: Name, Status: st, Err: err})
		}
		return
	}
	if kinds = allocSupported(kinds, pid, emit); len(kinds) == 0 {
		return
	}
	pprof.Do(ctx, pprof.Labels("component", "collector/"+Name), func(ctx context.Context) {
		c.collect(ctx, w, pid, notes, kinds, emit)
	})
}

// allocSupported emits unsupported results for the allocs and heap kinds
// where the kernel cannot run the allocation tracer or the target is a Go
// program, and returns the kinds left.
func allocSupported(kinds []bundle.Kind, pid int, emit collectors.Emit) []bundle.Kind {
	var out []bundle.Kind
	for _, k := range kinds {
		if slices.Contains(AllocKinds, k) {
			err := allocMachineCheck()
			if err == nil {
				err = notGo(pid)
			}
			if err != nil {
				emit(collectors.Result{Kind: k, Collector: Name, Status: bundle.StatusUnsupported, Err: err})
				continue
			}
		}
		out = append(out, k)
	}
	return out
}
