//go:build linux

// Command overhead measures what profiling costs a saturated Go HTTP
// service on this machine: throughput and p99 latency of a CPU-bound
// service under a closed-loop load from this process, in alternating rounds
// with no profiling, each profiler alone (fetched by a plain HTTP client or
// run by hand, to isolate profcap's own cost) and profcap driving them.
//
//	go run ./bench/overhead -profcap bin/profcap -rounds 5 -round 5s -o docs/overhead.md
//
// Everything runs on loopback and stops by itself: every round is bounded
// in time and in requests.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/felixge/fgprof"
	"golang.org/x/sys/unix"
)

func main() {
	serve := flag.Bool("serve", false, "run the CPU-bound service (used by the benchmark itself)")
	profcap := flag.String("profcap", "bin/profcap", "profcap binary")
	rounds := flag.Int("rounds", 5, "alternating rounds per condition")
	round := flag.Duration("round", 5*time.Second, "measured load per round")
	conns := flag.Int("conns", 8, "concurrent closed-loop clients")
	only := flag.String("only", "", "comma-separated condition names to run (default all)")
	out := flag.String("o", "", "also write the result table (Markdown) to this file")
	flag.BoolVar(&pinCPUs, "pin", true, "run the service alone on CPU 0 (GOMAXPROCS=1) and the load and profilers on CPU 1")
	flag.Parse()
	if *serve {
		serveMain()
		return
	}
	if err := run(*profcap, *rounds, *round, *conns, *only, *out); err != nil {
		fmt.Fprintln(os.Stderr, "overhead:", err)
		os.Exit(1)
	}
}

// work is one request's CPU: hashing 128 KiB and a little JSON (about
// 100 µs here), like a service that computes and encodes; enough that the
// service, not the load generator, is the bottleneck.
func work(w http.ResponseWriter, r *http.Request) {
	buf := make([]byte, 16<<10)
	var sum [32]byte
	for i := 0; i < 8; i++ {
		copy(buf, sum[:])
		sum = sha256.Sum256(buf)
	}
	json.NewEncoder(w).Encode(map[string]any{"sum": fmt.Sprintf("%x", sum), "n": len(buf)})
}

func serveMain() {
	mux := http.NewServeMux()
	mux.HandleFunc("/work", work)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.Handle("/debug/fgprof", fgprof.Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	_ = http.Serve(ln, mux)
}

type service struct {
	cmd  *exec.Cmd
	addr string
}

func startService() (*service, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// The service runs on CPU 0 with GOMAXPROCS=1 and this process (the
	// load, and every profiler it starts) on CPU 1: the service is
	// saturated on its core, and what a profiler costs it shows in its
	// throughput rather than in a fight over the other core.
	cmd := exec.Command(exe, "-serve")
	if pinCPUs {
		cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	}
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if err := pin(cmd.Process.Pid, 0); err != nil {
		fmt.Fprintf(os.Stderr, "overhead: not pinning (%v); results will be noisier\n", err)
	}
	line := make([]byte, 64)
	n, err := stdout.Read(line)
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	return &service{cmd: cmd, addr: strings.TrimSpace(string(line[:n]))}, nil
}

func (s *service) pid() int         { return s.cmd.Process.Pid }
func (s *service) pprofURL() string { return "http://" + s.addr + "/debug/pprof" }

// result of one round.
type result struct {
	rps float64
	p99 time.Duration
}

// load runs conns closed-loop clients against /work for d (at most 2M
// requests) and returns throughput and p99 latency.
func load(ctx context.Context, addr string, conns int, d time.Duration) result {
	tr := &http.Transport{MaxIdleConnsPerHost: conns}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var total atomic.Int64
	lat := make([][]time.Duration, conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for ctx.Err() == nil && total.Load() < 2_000_000 {
				t0 := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/work", nil)
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if ctx.Err() == nil {
					lat[i] = append(lat[i], time.Since(t0))
					total.Add(1)
				}
			}
		}(i)
	}
	wg.Wait()
	el := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := result{rps: float64(len(all)) / el.Seconds()}
	if len(all) > 0 {
		r.p99 = all[len(all)*99/100]
	}
	return r
}

// condition starts profiling for a round and returns a function that waits
// for it to finish (or stops it).
type condition struct {
	name, what string
	start      func(ctx context.Context, s *service, d time.Duration, tmp string) (wait func() error, err error)
}

func httpGet(ctx context.Context, u string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
	}
	return err
}

func background(fn func() error) func() error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return func() error { return <-ch }
}

// command runs name args until d has passed, then SIGINT (perf flushes on it).
func command(ctx context.Context, d time.Duration, name string, args ...string) (func() error, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return background(func() error {
		t := time.AfterFunc(d, func() { cmd.Process.Signal(syscall.SIGINT) })
		defer t.Stop()
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil // stopped by the signal
		}
		return err
	}), nil
}

func conditions(profcap string) []condition {
	secs := func(d time.Duration) int { return int(d.Round(time.Second) / time.Second) }
	profcapRun := func(extra ...string) func(ctx context.Context, s *service, d time.Duration, tmp string) (func() error, error) {
		return func(ctx context.Context, s *service, d time.Duration, tmp string) (func() error, error) {
			cfg := filepath.Join(tmp, "profcap.yaml")
			os.WriteFile(cfg, []byte(fmt.Sprintf("targets:\n  - name: svc\n    pprof: %s\n    pid: %d\n", s.pprofURL(), s.pid())), 0o644)
			args := append([]string{"record", "--config", cfg, "--all", "--duration", d.String(), "--baseline", "0", "--quiet", "--out", filepath.Join(tmp, fmt.Sprintf("b%d", time.Now().UnixNano()))}, extra...)
			cmd := exec.CommandContext(ctx, profcap, args...)
			cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			return background(func() error {
				err := cmd.Wait()
				var ee *exec.ExitError
				if errors.As(err, &ee) && ee.ExitCode() == 3 {
					return nil // partial (e.g. a kind this machine cannot take) is fine here
				}
				return err
			}), nil
		}
	}
	return []condition{
		{"none", "no profiling", func(ctx context.Context, s *service, d time.Duration, tmp string) (func() error, error) {
			return func() error { return nil }, nil
		}},
		{"http-cpu", "Go CPU profile, plain HTTP client", func(ctx context.Context, s *service, d time.Duration, tmp string) (func() error, error) {
			return background(func() error { return httpGet(ctx, fmt.Sprintf("%s/profile?seconds=%d", s.pprofURL(), secs(d))) }), nil
		}},
		{"http-heap", "heap + allocs snapshots at both ends, plain HTTP client", func(ctx context.Context, s *service, d time.Duration, tmp string) (func() error, error) {
			for _, k := range []string{"heap", "allocs"} {
				if err := httpGet(ctx, s.pprofURL()+"/"+k); err != nil {
					return nil, err
				}
			}
			return background(func() error {
				time.Sleep(d)
				for _, k := range []string{"heap", "allocs"} {
					if err := httpGet(ctx, s.pprofURL()+"/"+k); err != nil {
						return err
					}
				}
				return nil
			}), nil
		}},
		{"http-fgprof", "fgprof wall clock, plain HTTP client", func(ctx context.Context, s *service, d time.Duration, tmp string) (func() error, error) {
			return background(func() error {
				return httpGet(ctx, fmt.Sprintf("http://%s/debug/fgprof?seconds=%d&format=pprof", s.addr, secs(d)))
			}), nil
		}},
		{"perf-cpu", "perf record -F 99 -g -p PID, by hand", func(ctx context.Context, s *service, d time.Duration, tmp string) (func() error, error) {
			return command(ctx, d, "perf", "record", "-F", "99", "-g", "-p", fmt.Sprint(s.pid()), "-o", filepath.Join(tmp, "cpu.data"))
		}},
		{"perf-offcpu", "perf record -e sched:sched_switch --switch-events --call-graph fp -p PID, by hand", func(ctx context.Context, s *service, d time.Duration, tmp string) (func() error, error) {
			return command(ctx, d, "perf", "record", "-e", "sched:sched_switch", "--switch-events", "-k", "CLOCK_MONOTONIC", "--call-graph", "fp", "-p", fmt.Sprint(s.pid()), "-o", filepath.Join(tmp, "off.data"))
		}},
		{"profcap-cpu-pprof", "profcap record --profiles cpu (target with a pprof URL only)", func(ctx context.Context, s *service, d time.Duration, tmp string) (func() error, error) {
			args := []string{"record", "--url", s.pprofURL(), "--profiles", "cpu", "--duration", d.String(), "--quiet", "--out", filepath.Join(tmp, fmt.Sprintf("c%d", time.Now().UnixNano()))}
			cmd := exec.CommandContext(ctx, profcap, args...)
			cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			return background(cmd.Wait), nil
		}},
		{"profcap-default", "profcap record (default kinds; target with pprof URL and pid)", profcapRun()},
		{"profcap-low", "profcap record --overhead low", profcapRun("--overhead", "low")},
		{"profcap-full", "profcap record --overhead full", profcapRun("--overhead", "full")},
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

var pinCPUs = true

// pin binds every thread of pid to one CPU.
func pin(pid, cpu int) error {
	if !pinCPUs {
		return nil
	}
	if runtime.NumCPU() < 2 {
		return errors.New("fewer than 2 CPUs")
	}
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return unix.SchedSetaffinity(pid, &set)
	}
	for _, t := range tasks {
		var tid int
		fmt.Sscan(t.Name(), &tid)
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return err
		}
	}
	return nil
}

func run(profcap string, rounds int, round time.Duration, conns int, only, out string) error {
	// This process and its children (profcap, perf) on CPU 1.
	if runtime.NumCPU() >= 2 {
		runtime.LockOSThread()
		if err := pin(os.Getpid(), 1); err != nil {
			fmt.Fprintf(os.Stderr, "overhead: not pinning the load (%v)\n", err)
		}
	}
	if _, err := os.Stat(profcap); err != nil {
		return fmt.Errorf("profcap binary: %v (run make build first)", err)
	}
	s, err := startService()
	if err != nil {
		return err
	}
	// Threads the service started after the first pin.
	time.Sleep(200 * time.Millisecond)
	_ = pin(s.pid(), 0)
	defer s.cmd.Process.Kill()
	tmp, err := os.MkdirTemp("", "profcap-overhead-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	ctx := context.Background()
	conds := conditions(profcap)
	if only != "" {
		keep := map[string]bool{}
		for _, n := range strings.Split(only, ",") {
			keep[n] = true
		}
		keep["none"] = true
		conds = slices.DeleteFunc(conds, func(c condition) bool { return !keep[c.name] })
	}
	// Warm up: the service's first seconds (page faults, GC sizing) would
	// otherwise count against the first condition.
	load(ctx, s.addr, conns, 2*time.Second)
	rps := map[string][]float64{}
	p99 := map[string][]float64{}
	// The profiler runs for the round plus a margin on both sides; the
	// load is measured inside, so start-up and flushing are covered.
	const lead = 700 * time.Millisecond
	for r := 0; r < rounds; r++ {
		for _, c := range conds {
			wait, err := c.start(ctx, s, round+2*lead, tmp)
			if err != nil {
				return fmt.Errorf("%s: %v", c.name, err)
			}
			time.Sleep(lead)
			res := load(ctx, s.addr, conns, round)
			if err := wait(); err != nil {
				return fmt.Errorf("%s: %v", c.name, err)
			}
			rps[c.name] = append(rps[c.name], res.rps)
			p99[c.name] = append(p99[c.name], float64(res.p99)/1e6)
			fmt.Fprintf(os.Stderr, "round %d %-18s %8.0f req/s  p99 %6.2f ms\n", r+1, c.name, res.rps, float64(res.p99)/1e6)
		}
	}
	base := median(rps["none"])
	baseP99 := median(p99["none"])
	var b strings.Builder
	fmt.Fprintf(&b, "| condition | what runs | throughput median (min–max), req/s | vs none | p99 median (min–max), ms | vs none |\n|---|---|---|---|---|---|\n")
	for _, c := range conds {
		rs, ps := rps[c.name], p99[c.name]
		fmt.Fprintf(&b, "| %s | %s | %.0f (%.0f–%.0f) | %+.1f%% | %.2f (%.2f–%.2f) | %+.1f%% |\n", c.name, c.what,
			median(rs), slices.Min(rs), slices.Max(rs), 100*(median(rs)/base-1),
			median(ps), slices.Min(ps), slices.Max(ps), 100*(median(ps)/baseP99-1))
	}
	fmt.Print(b.String())
	if out != "" {
		return os.WriteFile(out, []byte(b.String()), 0o644)
	}
	return nil
}
