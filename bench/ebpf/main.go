//go:build linux && amd64

// Command ebpf measures, on one ping-pong target in one run, what an
// off-CPU capture costs with the eBPF collector and with perf: the CPU of
// the capture (profcap's process plus the BPF programs' run time from
// bpf_stats; perf record plus perf script), the target's round-trip rate
// during the window against outside it, and the time from the window's
// end to the profile. Needs root, gcc and perf. See docs/ebpf.md.
//
//	go run ./bench/ebpf -window 8s
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
	flag.Parse()
	r, err := run(*window)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/ebpf:", err)
		os.Exit(1)
	}
	fmt.Print(r)
}

// Result is one measurement.
type Result struct {
	Window                    time.Duration
	EBPFCPU, BPFCPU, PerfCPU  time.Duration
	EBPFRate, PerfRate        float64 // share of the rate outside the window
	EBPFToProfile, PerfToProf time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("window %s\nebpf: capture CPU %s (of which BPF programs %s) = %.1f ms per window-second; target kept %.1f%% of its rate; window end to profile %s\nperf: capture CPU %s = %.1f ms per window-second; target kept %.1f%%; window end to profile %s\nratio ebpf/perf CPU: %.3f\n",
		r.Window, r.EBPFCPU, r.BPFCPU, float64(r.EBPFCPU.Milliseconds())/r.Window.Seconds(), 100*r.EBPFRate, r.EBPFToProfile,
		r.PerfCPU, float64(r.PerfCPU.Milliseconds())/r.Window.Seconds(), 100*r.PerfRate, r.PerfToProf, r.EBPFCPU.Seconds()/r.PerfCPU.Seconds())
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

func startTarget(bin string) (*target, error) {
	t := &target{cmd: exec.Command(bin, "pingpong", "120")}
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
	const outside = 2 * time.Second

	// eBPF: one window for the rate, one with bpf_stats for the cost.
	tg, err := startTarget(bin)
	if err != nil {
		return res, err
	}
	defer tg.stop()
	time.Sleep(outside)
	t0 := time.Now()
	capture := func(stats bool) (*collectors.Window, []string, time.Duration, error) {
		w := collectors.NewPendingWindow(window, window)
		ctx := collectors.WithReady(context.Background(), w.Open)
		var r collectors.Result
		ebpf.New(ebpf.Options{BPFStats: stats}).Collect(ctx, w, &targets.Target{Name: "pp", PID: tg.cmd.Process.Pid}, []bundle.Kind{bundle.OffCPU}, func(x collectors.Result) { r = x })
		took := time.Since(w.Ended())
		if r.Status != bundle.StatusOK {
			return nil, nil, 0, fmt.Errorf("ebpf: %s: %v", r.Status, r.Err)
		}
		return w, r.Profile.Comments, took, nil
	}
	w, _, took, err := capture(false)
	if err != nil {
		return res, err
	}
	res.EBPFToProfile = took
	time.Sleep(outside)
	base := (tg.rate(t0.Add(-outside), w.Start) + tg.rate(w.Ended(), time.Now())) / 2
	res.EBPFRate = tg.rate(w.Start, w.Ended()) / base
	c0 := selfCPU()
	_, comments, _, err := capture(true)
	if err != nil {
		return res, err
	}
	for _, c := range comments {
		if v, ok := strings.CutPrefix(c, "ebpf: bpf programs ran "); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			res.BPFCPU = time.Duration(n)
		}
	}
	res.EBPFCPU = selfCPU() - c0 + res.BPFCPU
	tg.stop()

	// perf on a fresh target.
	tg2, err := startTarget(bin)
	if err != nil {
		return res, err
	}
	defer tg2.stop()
	time.Sleep(outside)
	data := filepath.Join(dir, "perf.data")
	rec := exec.Command("perf", "record", "-q", "-o", data, "-e", "sched:sched_switch", "--switch-events", "--call-graph", "fp",
		"-p", strconv.Itoa(tg2.cmd.Process.Pid), "--", "sleep", fmt.Sprint(window.Seconds()))
	ps := time.Now()
	if out, err := rec.CombinedOutput(); err != nil {
		return res, fmt.Errorf("perf record: %v: %s", err, out)
	}
	pe := time.Now()
	time.Sleep(outside)
	pbase := (tg2.rate(ps.Add(-outside), ps) + tg2.rate(pe, time.Now())) / 2
	res.PerfRate = tg2.rate(ps.Add(500*time.Millisecond), pe) / pbase
	tg2.stop()
	script := exec.Command("perf", "script", "-i", data, "--show-switch-events")
	s0 := time.Now()
	if err := script.Run(); err != nil {
		return res, fmt.Errorf("perf script: %v", err)
	}
	res.PerfToProf = time.Since(s0)
	res.PerfCPU = rec.ProcessState.UserTime() + rec.ProcessState.SystemTime() + script.ProcessState.UserTime() + script.ProcessState.SystemTime()
	return res, nil
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
