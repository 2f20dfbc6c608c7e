//go:build linux && amd64

// Command ebpf-heap measures what the eBPF collector's allocs and heap
// capture costs a malloc-heavy target, on one machine in one run: two
// copies of collectors/ebpf/testdata/alloc.c's "bench" target run side by
// side (serve_request: four malloc'd buffers of 32-512 bytes, written,
// mixed WORK rounds each, freed), one captured and one not, and each
// reports its requests and its own CPU time. The rate kept is the
// captured copy's requests per CPU-second over its twin's in the same
// window: the probes' traps are charged to the target's own CPU time, so
// the figure does not depend on what else the machine runs. Then, at the
// heaviest level, the sampling period is swept (the cost of a sample: the
// return probe, the stack walk, the map updates) with bpf_stats on. Needs
// root and gcc. See docs/ebpf.md and docs/design/ebpf-heap.md.
//
//	go run ./bench/ebpf-heap -window 4s
//
// make bench reaches it through BenchmarkMallocHeavy (bench_test.go).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/collectors/ebpf"
	"github.com/profcap/profcap/targets"
)

func main() {
	window := flag.Duration("window", 4*time.Second, "capture window of each measurement")
	flag.Parse()
	r, err := run(*window, Levels, Periods)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/ebpf-heap:", err)
		os.Exit(1)
	}
	fmt.Print(r)
}

// Levels are the WORK arguments measured: mixing rounds per allocated
// buffer, from none (nothing but malloc, memset and free: the most
// malloc-heavy a program can be) to a few microseconds of work per
// allocation.
var Levels = []int{0, 25, 100, 400, 1600}

// Periods are the sampling periods swept at SweepWork, without the cap
// (the last row: the smallest period with the default cap).
var Periods = []int{4 << 10, 16 << 10, 64 << 10, 512 << 10, 4 << 20}

// SweepWork is the level of the sweep: the heaviest, where the samples
// are most frequent.
const SweepWork = 0

// Level is one measurement of the target at one WORK level.
type Level struct {
	Work         int
	Period       int
	FreeRate     float64 // the uncaptured twin's allocations per CPU-second
	CapturedRate float64 // the captured copy's
	Kept         float64 // CapturedRate / FreeRate
	PerCall      time.Duration
	Calls        float64 // probed calls per second of window
	Samples      uint64
	BPFPerRun    time.Duration // bpf_stats: the program's mean run time (sweep only)
	BPFTotal     time.Duration // and its total over the window
	BPFRuns      float64
	AllocCalls   float64       // allocation calls probed in the window
	Capped       bool          // the default cap was on (sweep)
	Status       string        // of the allocs profile
	Stopped      time.Duration // when the bound detached the probes, into the window
	CaptureCPU   time.Duration // profcap's own CPU for the capture (collector, not the programs)
	Comments     []string
}

// Result is the whole run.
type Result struct {
	Window   time.Duration
	Levels   []Level // the bound off
	Defaults []Level // default options (the bound on), over twice the window
	Sweep    []Level
}

func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "window %s, default sampling period (512 KiB)\n", r.Window)
	fmt.Fprintf(&b, "%6s %16s %16s %8s %12s %12s %8s %12s\n", "work", "allocs/CPU-s", "captured", "kept", "ns/call", "calls/s", "samples", "profcap CPU")
	for _, l := range r.Levels {
		fmt.Fprintf(&b, "%6d %16.0f %16.0f %7.1f%% %12.0f %12.0f %8d %12s\n", l.Work, l.FreeRate, l.CapturedRate, 100*l.Kept, float64(l.PerCall.Nanoseconds()), l.Calls, l.Samples, l.CaptureCPU.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "default options (probes detached over 10%% of the target's CPU), %s windows\n", 2*r.Window)
	fmt.Fprintf(&b, "%6s %16s %16s %8s %10s %14s\n", "work", "allocs/CPU-s", "captured", "kept", "status", "detached at")
	for _, l := range r.Defaults {
		at := "-"
		if l.Stopped > 0 {
			at = l.Stopped.Round(10 * time.Millisecond).String()
		}
		fmt.Fprintf(&b, "%6d %16.0f %16.0f %7.1f%% %10s %14s\n", l.Work, l.FreeRate, l.CapturedRate, 100*l.Kept, l.Status, at)
	}
	fmt.Fprintf(&b, "sampling period sweep at work %d (bpf_stats on, the bound off)\n", SweepWork)
	fmt.Fprintf(&b, "%10s %16s %8s %10s %14s %14s %8s\n", "period", "captured", "kept", "samples", "per 1k allocs", "bpf ns/run", "cap")
	for _, l := range r.Sweep {
		fmt.Fprintf(&b, "%10d %16.0f %7.1f%% %10d %14.2f %14.0f %8v\n", l.Period, l.CapturedRate, 100*l.Kept, l.Samples,
			1000*float64(l.Samples)/max(l.AllocCalls, 1), float64(l.BPFPerRun.Nanoseconds()), l.Capped)
	}
	if ps, all := r.PerSample(); ps > 0 {
		fmt.Fprintf(&b, "a sample costs the program %s more than a probed call not sampled (stack walk, maps); with its return probe it costs the target %s\n",
			ps.Round(10*time.Nanosecond), all.Round(10*time.Nanosecond))
	}
	return b.String()
}

// PerSample is what a sample costs, from the uncapped sweep's first and
// last rows: in the program's run time (bpf_stats, normalised to the same
// runs), and to the target (the difference of its CPU time per
// allocation, over the difference of samples per allocation).
func (r Result) PerSample() (prog, target time.Duration) {
	var rows []Level
	for _, l := range r.Sweep {
		if !l.Capped {
			rows = append(rows, l)
		}
	}
	if len(rows) < 2 {
		return 0, 0
	}
	a, z := rows[0], rows[len(rows)-1]
	if a.Samples <= z.Samples || a.BPFRuns == 0 || z.BPFRuns == 0 || a.AllocCalls == 0 || z.AllocCalls == 0 {
		return 0, 0
	}
	za := float64(z.BPFTotal) / z.BPFRuns * a.BPFRuns
	prog = time.Duration((float64(a.BPFTotal) - za) / float64(a.Samples-z.Samples))
	ds := float64(a.Samples)/a.AllocCalls - float64(z.Samples)/z.AllocCalls
	target = time.Duration((1/a.CapturedRate - 1/z.CapturedRate) / ds * 1e9)
	return prog, target
}

type line struct {
	at       time.Time
	cpu      time.Duration
	requests float64
}

type target struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	l   []line
}

func startTarget(bin string, work int) (*target, error) {
	t := &target{cmd: exec.Command(bin, "bench", "3600", strconv.Itoa(work))}
	out, err := t.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	go t.read(out)
	return t, nil
}

func (t *target) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 5 || f[0] != "stat" {
			continue
		}
		ts, _ := strconv.ParseInt(f[1], 10, 64)
		cpu, _ := strconv.ParseInt(f[2], 10, 64)
		n, _ := strconv.ParseFloat(f[3], 64)
		t.mu.Lock()
		t.l = append(t.l, line{time.Unix(0, ts), time.Duration(cpu), n})
		t.mu.Unlock()
	}
}

// rate is the target's allocations (4 a request) per CPU-second between
// from and to.
func (t *target) rate(from, to time.Time) float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var a, b *line
	for i := range t.l {
		if l := &t.l[i]; !l.at.Before(from) && !l.at.After(to) {
			if a == nil {
				a = l
			}
			b = l
		}
	}
	if a == nil || a == b || b.cpu <= a.cpu {
		return 0
	}
	return 4 * (b.requests - a.requests) / (b.cpu - a.cpu).Seconds()
}

func (t *target) stop() { _ = t.cmd.Process.Kill(); _ = t.cmd.Wait() }

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// capture records allocs and heap of pid over a window.
func capture(pid int, window time.Duration, opt ebpf.Options) (*collectors.Window, []collectors.Result, error) {
	w := collectors.NewPendingWindow(window, window)
	ctx := collectors.WithReady(context.Background(), w.Open)
	var mu sync.Mutex
	var rs []collectors.Result
	ebpf.New(opt).Collect(ctx, w, &targets.Target{Name: "bench", PID: pid}, []bundle.Kind{bundle.Allocs, bundle.Heap}, func(r collectors.Result) {
		mu.Lock()
		rs = append(rs, r)
		mu.Unlock()
	})
	for _, r := range rs {
		if r.Status != bundle.StatusOK && r.Status != bundle.StatusPartial {
			return nil, nil, fmt.Errorf("ebpf %s: %s: %v", r.Kind, r.Status, r.Err)
		}
	}
	return w, rs, nil
}

// measure runs the twins at one level and captures one of them with opt.
func measure(bin string, work int, window time.Duration, opt ebpf.Options) (Level, error) {
	if opt.AllocSampleBytes == 0 {
		opt.AllocSampleBytes = 512 << 10
	}
	stats := opt.BPFStats
	l := Level{Work: work, Period: opt.AllocSampleBytes, Capped: opt.AllocMaxSamples >= 0}
	a, err := startTarget(bin, work)
	if err != nil {
		return l, err
	}
	defer a.stop()
	b, err := startTarget(bin, work)
	if err != nil {
		return l, err
	}
	defer b.stop()
	time.Sleep(time.Second)
	c0 := selfCPU()
	w, rs, err := capture(a.cmd.Process.Pid, window, opt)
	if err != nil {
		return l, err
	}
	l.CaptureCPU = selfCPU() - c0
	time.Sleep(200 * time.Millisecond)
	from, to := w.Start.Add(100*time.Millisecond), w.Ended()
	l.CapturedRate, l.FreeRate = a.rate(from, to), b.rate(from, to)
	if l.FreeRate == 0 || l.CapturedRate == 0 {
		return l, fmt.Errorf("work %d: the targets reported no rate", work)
	}
	l.Kept = l.CapturedRate / l.FreeRate
	// Two probed calls an allocation (malloc, free): what each adds.
	l.PerCall = time.Duration((1/l.CapturedRate - 1/l.FreeRate) / 2 * 1e9)
	l.Comments = rs[0].Profile.Comments
	l.Status = string(rs[0].Status)
	if rs[0].Status == bundle.StatusPartial {
		l.Stopped = rs[0].End.Sub(w.Start)
	}
	cs := strings.Join(l.Comments, "\n")
	var calls, frees, runs, ns float64
	if _, err := fmt.Sscanf(after(cs, "so totals are unbiased estimates; sizes are those requested; "), "%f allocation calls and %f frees probed, %d allocations sampled", &calls, &frees, &l.Samples); err == nil {
		l.Calls = (calls + frees) / w.Ended().Sub(w.Start).Seconds()
		l.AllocCalls = calls
	}
	if stats {
		if _, err := fmt.Sscanf(after(cs, "on_alloc "), "%f ns in %f runs", &ns, &runs); err == nil && runs > 0 {
			l.BPFPerRun = time.Duration(ns / runs)
			l.BPFTotal, l.BPFRuns = time.Duration(ns), runs
		}
	}
	return l, nil
}

func after(s, prefix string) string {
	if _, v, ok := strings.Cut(s, prefix); ok {
		return v
	}
	return ""
}

func run(window time.Duration, levels, periods []int) (Result, error) {
	res := Result{Window: window}
	dir, err := os.MkdirTemp("", "profcap-bench-ebpf-heap-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	src, err := findSource()
	if err != nil {
		return res, err
	}
	bin := filepath.Join(dir, "alloc")
	if out, err := exec.Command("gcc", "-O1", "-g", "-fno-omit-frame-pointer", src, "-o", bin).CombinedOutput(); err != nil {
		return res, fmt.Errorf("gcc: %v: %s", err, out)
	}
	// The probes' cost by level: the bound off, so that they stay the
	// whole window.
	for _, work := range levels {
		l, err := measure(bin, work, window, ebpf.Options{AllocMaxOverhead: -1})
		if err != nil {
			return res, err
		}
		res.Levels = append(res.Levels, l)
	}
	// The default options at the heaviest and at the lightest level.
	for _, work := range []int{levels[0], levels[len(levels)-1]} {
		l, err := measure(bin, work, 2*window, ebpf.Options{})
		if err != nil {
			return res, err
		}
		res.Defaults = append(res.Defaults, l)
	}
	// The samples' cost: no cap, then the smallest period with the cap.
	for _, p := range periods {
		l, err := measure(bin, SweepWork, window, ebpf.Options{AllocSampleBytes: p, BPFStats: true, AllocMaxSamples: -1, AllocMaxOverhead: -1})
		if err != nil {
			return res, err
		}
		res.Sweep = append(res.Sweep, l)
	}
	if len(periods) > 0 {
		l, err := measure(bin, SweepWork, window, ebpf.Options{AllocSampleBytes: periods[0], BPFStats: true, AllocMaxOverhead: -1})
		if err != nil {
			return res, err
		}
		res.Sweep = append(res.Sweep, l)
	}
	return res, nil
}

// findSource finds collectors/ebpf/testdata/alloc.c from the module root.
func findSource() (string, error) {
	d, _ := os.Getwd()
	for range 6 {
		p := filepath.Join(d, "collectors", "ebpf", "testdata", "alloc.c")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		d = filepath.Dir(d)
	}
	return "", fmt.Errorf("collectors/ebpf/testdata/alloc.c not found above the working directory")
}
