//go:build linux && amd64

// Command ebpf measures, on a ping-pong target in one run, what an off-CPU
// capture costs with the eBPF collector (offcpu alone, with wakeup, and
// with user stacks taken at the syscall exit as on kernels without BPF
// task works) and with perf: the CPU of the capture (profcap's process
// plus the BPF programs' run time from bpf_stats; perf record plus perf
// script), the target's round-trip rate during the window against
// outside it, with the target's two threads pinned to one CPU and to two
// (unpinned, the scheduler moves them between those two modes, 2.5x
// apart in rate, whenever anything else runs), and the time from the
// window's end to the profile. Then the same on Debian's nginx under wrk,
// whose code has no frame pointers: eBPF walking its stacks by .eh_frame
// against perf with --call-graph dwarf (nginx.go). Needs root, gcc and
// perf (nginx and wrk for the second table). See docs/ebpf.md.
//
//	go run ./bench/ebpf -window 8s [-nginx]
//
// make bench reaches it through BenchmarkPingPong (bench_test.go).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
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
	window := flag.Duration("window", 8*time.Second, "capture window")
	onlyNginx := flag.Bool("nginx", false, "only the nginx table")
	flag.Parse()
	if !*onlyNginx {
		r, err := run(*window)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/ebpf:", err)
			os.Exit(1)
		}
		fmt.Print(r)
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		fmt.Fprintln(os.Stderr, "bench/ebpf: no wrk: the nginx table is left out")
		return
	}
	n, err := runNginx(*window)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/ebpf: nginx:", err)
		os.Exit(1)
	}
	fmt.Print(n)
}

// A config is one way of capturing, on one placement of the target's two
// threads: "one" (both on CPU 0: every switch is on the round trip's
// critical path, nothing hides in idle time), "two" (on CPUs 0 and 1:
// each wakeup crosses CPUs) or "" (where the scheduler puts them, which
// it changes when anything else runs, so the rate moves by 2.5x).
type config struct {
	name  string
	place string
	kinds []bundle.Kind
	perf  bool
	noTW  bool // user stacks at the syscall exit, not by task work
}

// Row is one config's measurement.
type Row struct {
	Name     string
	Place    string
	Base     float64       // round trips a second outside the window
	Kept     float64       // the rate in the window, as a share of Base
	CPU      time.Duration // the capture's CPU (profcap + bpf programs; perf record + script)
	ToResult time.Duration // window end to profile
}

// Result is one run: every config on its own fresh target.
type Result struct {
	Window time.Duration
	Rows   []Row
}

func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ping-pong, %s offcpu windows; rate kept = round trips a second in the window / outside it, same placement\n", r.Window)
	fmt.Fprintf(&b, "%-37s %-6s %12s %8s %14s %12s\n", "capture", "place", "rt/s outside", "kept", "CPU/window-s", "end→profile")
	for _, x := range r.Rows {
		fmt.Fprintf(&b, "%-37s %-6s %12.0f %7.1f%% %11.1f ms %12s\n", x.Name, x.Place, x.Base, 100*x.Kept,
			float64(x.CPU.Microseconds())/1000/r.Window.Seconds(), x.ToResult.Round(time.Millisecond))
	}
	return b.String()
}

type sample struct {
	n  uint64
	at time.Time
}

type target struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	s   []sample
}

func startTarget(bin, place string) (*target, error) {
	t := &target{cmd: exec.Command(bin, "pingpong", "120", place)}
	out, err := t.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 3 && f[0] == "rt" {
				n, _ := strconv.ParseUint(f[1], 10, 64)
				t.mu.Lock()
				t.s = append(t.s, sample{n, time.Now()})
				t.mu.Unlock()
			}
		}
	}()
	return t, nil
}

func (t *target) rate(from, to time.Time) float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var a, b *sample
	for i := range t.s {
		if s := &t.s[i]; !s.at.Before(from) && !s.at.After(to) {
			if a == nil {
				a = s
			}
			b = s
		}
	}
	if a == nil || a == b {
		return 0
	}
	return float64(b.n-a.n) / b.at.Sub(a.at).Seconds()
}

func (t *target) stop() { _ = t.cmd.Process.Kill(); _ = t.cmd.Wait() }

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func run(window time.Duration) (Result, error) {
	res := Result{Window: window}
	dir, err := os.MkdirTemp("", "profcap-bench-ebpf-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	src, err := findSource()
	if err != nil {
		return res, err
	}
	bin := filepath.Join(dir, "target")
	if out, err := exec.Command("gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-pthread", src, "-o", bin).CombinedOutput(); err != nil {
		return res, fmt.Errorf("gcc: %v: %s", err, out)
	}
	off := []bundle.Kind{bundle.OffCPU}
	both := []bundle.Kind{bundle.OffCPU, bundle.Wakeup}
	configs := []config{
		{name: "ebpf offcpu", place: "one", kinds: off},
		{name: "ebpf offcpu+wakeup", place: "one", kinds: both},
		{name: "ebpf offcpu+wakeup, sys_exit stacks", place: "one", kinds: both, noTW: true},
		{name: "perf sched_switch fp + script", place: "one", perf: true},
		{name: "ebpf offcpu", place: "two", kinds: off},
		{name: "ebpf offcpu+wakeup", place: "two", kinds: both},
		{name: "ebpf offcpu+wakeup, sys_exit stacks", place: "two", kinds: both, noTW: true},
		{name: "perf sched_switch fp + script", place: "two", perf: true},
	}
	for _, c := range configs {
		var row Row
		var err error
		if c.perf {
			row, err = perfRow(bin, dir, c, window)
		} else {
			row, err = ebpfRow(bin, c, window)
		}
		if err != nil {
			return res, fmt.Errorf("%s (%s): %w", c.name, c.place, err)
		}
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

const outside = 2 * time.Second

// ebpfRow: one window for the rate, one with bpf_stats for the cost (the
// statistics' clock reads would count against the rate).
func ebpfRow(bin string, c config, window time.Duration) (Row, error) {
	row := Row{Name: c.name, Place: c.place}
	tg, err := startTarget(bin, c.place)
	if err != nil {
		return row, err
	}
	defer tg.stop()
	time.Sleep(500 * time.Millisecond)
	b0 := time.Now()
	time.Sleep(outside)
	b1 := time.Now() // the rate outside: before any set-up, and after the result
	capture := func(stats bool) (*collectors.Window, []string, time.Duration, error) {
		w := collectors.NewPendingWindow(window, window)
		ctx := collectors.WithReady(context.Background(), w.Open)
		var r collectors.Result
		ebpf.New(ebpf.Options{BPFStats: stats, NoTaskWork: c.noTW}).Collect(ctx, w, &targets.Target{Name: "pp", PID: tg.cmd.Process.Pid}, c.kinds, func(x collectors.Result) {
			if x.Kind == bundle.OffCPU {
				r = x
			}
		})
		took := time.Since(w.Ended())
		if r.Status != bundle.StatusOK {
			return nil, nil, 0, fmt.Errorf("ebpf: %s: %v", r.Status, r.Err)
		}
		return w, r.Profile.Comments, took, nil
	}
	w, _, took, err := capture(false)
	if err != nil {
		return row, err
	}
	row.ToResult = took
	a0 := time.Now()
	time.Sleep(outside)
	row.Base = (tg.rate(b0, b1) + tg.rate(a0, time.Now())) / 2
	row.Kept = tg.rate(w.Start, w.Ended()) / row.Base
	c0 := selfCPU()
	_, comments, _, err := capture(true)
	if err != nil {
		return row, err
	}
	var bpf time.Duration
	for _, c := range comments {
		if v, ok := strings.CutPrefix(c, "ebpf: bpf programs ran "); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			bpf = time.Duration(n)
		}
	}
	row.CPU = selfCPU() - c0 + bpf
	return row, nil
}

func perfRow(bin, dir string, c config, window time.Duration) (Row, error) {
	row := Row{Name: c.name, Place: c.place}
	tg, err := startTarget(bin, c.place)
	if err != nil {
		return row, err
	}
	defer tg.stop()
	time.Sleep(500 * time.Millisecond)
	b0 := time.Now()
	time.Sleep(outside)
	data := filepath.Join(dir, "perf.data")
	rec := exec.Command("perf", "record", "-q", "-o", data, "-e", "sched:sched_switch", "--switch-events", "--call-graph", "fp",
		"-p", strconv.Itoa(tg.cmd.Process.Pid), "--", "sleep", fmt.Sprint(window.Seconds()))
	ps := time.Now()
	if out, err := rec.CombinedOutput(); err != nil {
		return row, fmt.Errorf("perf record: %v: %s", err, out)
	}
	pe := time.Now()
	time.Sleep(outside)
	row.Base = (tg.rate(b0, ps) + tg.rate(pe, time.Now())) / 2
	row.Kept = tg.rate(ps.Add(500*time.Millisecond), pe) / row.Base
	tg.stop()
	script := exec.Command("perf", "script", "-i", data, "--show-switch-events")
	s0 := time.Now()
	if err := script.Run(); err != nil {
		return row, fmt.Errorf("perf script: %v", err)
	}
	row.ToResult = time.Since(s0)
	row.CPU = rec.ProcessState.UserTime() + rec.ProcessState.SystemTime() + script.ProcessState.UserTime() + script.ProcessState.SystemTime()
	_ = os.Remove(data)
	return row, nil
}

// findSource finds collectors/ebpf/testdata/target.c from the module root.
func findSource() (string, error) {
	d, _ := os.Getwd()
	for range 6 {
		p := filepath.Join(d, "collectors", "ebpf", "testdata", "target.c")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		d = filepath.Dir(d)
	}
	return "", fmt.Errorf("collectors/ebpf/testdata/target.c not found above the working directory")
}
