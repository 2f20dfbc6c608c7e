//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

type options struct {
	bin, variant string
	rounds       int
	round        time.Duration
	rates        []float64 // dumps per second; 0 = none
	loadEvery    time.Duration
	backlog      int // refsvc --spawn-backlog (0: no backlog rounds)
}

// sample is what one round measured.
type sample struct {
	health     []time.Duration // GET /health latencies
	during     []time.Duration // of them, those whose request overlapped a dump
	healthErrs int
	dumps      []time.Duration // dump latencies
	dumpErrs   int
	dumpBytes  int64
	dumpTasks  int
	steps      float64 // steps completed
	stepLat    float64 // summed step latency, seconds
	cpu        float64 // process CPU seconds
	wall       time.Duration
}

type report struct {
	opt       options
	bin       string
	firstDump time.Duration
	byRate    map[float64][]sample
	host      string
}

func refsvcPath(o options) (string, error) {
	if o.bin != "" {
		return o.bin, nil
	}
	cache := os.Getenv("PROFCAP_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "profcap")
	}
	p := filepath.Join(cache, "rust", "bin", "refsvc-"+o.variant)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no refsvc at %s (bash scripts/rust-build.sh builds it): %w", p, err)
	}
	return p, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// service is a running refsvc.
type service struct {
	cmd  *exec.Cmd
	base string
	cl   *http.Client
}

func (s *service) stop() { s.cmd.Process.Kill(); s.cmd.Wait() }

// start runs refsvc with --taskdump and waits for /health.
func start(o options) (*service, error) {
	bin, err := refsvcPath(o)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--name", "bench", "--role", "orchestration", "--port", strconv.Itoa(port), "--taskdump", "--no-console",
		"--spawn-backlog", strconv.Itoa(o.backlog))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &service{cmd: cmd, base: fmt.Sprintf("http://127.0.0.1:%d", port),
		cl: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := s.cl.Get(s.base + "/health")
		if err == nil {
			resp.Body.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("refsvc did not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run starts refsvc, warms it up and measures every rate in alternating
// rounds.
func run(o options, log io.Writer) (*report, error) {
	if o.rounds <= 0 || o.round <= 0 || len(o.rates) == 0 {
		return nil, errors.New("nothing to measure")
	}
	if o.loadEvery <= 0 {
		o.loadEvery = 10 * time.Millisecond
	}
	svc, err := start(o)
	if err != nil {
		return nil, err
	}
	defer svc.stop()
	base, cl, bin := svc.base, svc.cl, svc.cmd.Path
	rep := &report{opt: o, bin: bin, byRate: map[float64][]sample{}, host: hostInfo()}
	// The first dump loads the symbol tables (DWARF in the profiling
	// build): measured alone, not part of the rounds.
	time.Sleep(3 * time.Second)
	t0 := time.Now()
	if _, _, err := dumpOnce(cl, base); err != nil {
		return nil, fmt.Errorf("first dump: %w", err)
	}
	rep.firstDump = time.Since(t0)
	fmt.Fprintf(log, "first dump %v\n", rep.firstDump.Round(time.Millisecond))
	for r := range o.rounds {
		// Alternate the order so that drift over time (other load on the
		// machine) falls on every rate alike.
		rates := slices.Clone(o.rates)
		if r%2 == 1 {
			slices.Reverse(rates)
		}
		for _, rate := range rates {
			s, err := round(cl, base, o, rate)
			if err != nil {
				return nil, err
			}
			rep.byRate[rate] = append(rep.byRate[rate], s)
			fmt.Fprintf(log, "round %d rate %g/s: health p50 %v p99 %v, %d dumps p50 %v\n", r+1, rate,
				pct(s.health, 50).Round(time.Microsecond), pct(s.health, 99).Round(time.Microsecond), len(s.dumps), pct(s.dumps, 50).Round(time.Microsecond))
		}
	}
	return rep, nil
}

func dumpOnce(cl *http.Client, base string) (int64, int, error) {
	resp, err := cl.Get(base + "/debug/tokio/dump?timeout_ms=2000")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var n int64
	tasks := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		n += int64(len(sc.Bytes())) + 1
		if strings.HasPrefix(sc.Text(), "task id=") {
			tasks++
		}
	}
	return n, tasks, sc.Err()
}

type counters struct{ steps, stepLat, cpu float64 }

func metrics(cl *http.Client, base string) (counters, error) {
	var c counters
	resp, err := cl.Get(base + "/metrics")
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		_, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch name {
		case "refsvc_steps_total":
			c.steps += v
		case "refsvc_step_latency_seconds_total":
			c.stepLat += v
		case "refsvc_process_cpu_seconds_total":
			c.cpu = v
		}
	}
	return c, sc.Err()
}

// round measures one round: the open-loop /health load for o.round, and
// dumps at rate (one at a time, each started 1/rate after the last).
func round(cl *http.Client, base string, o options, rate float64) (sample, error) {
	var s sample
	m0, err := metrics(cl, base)
	if err != nil {
		return s, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.round)
	defer cancel()
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	type span struct{ a, b time.Time }
	var dumpSpans, healthSpans []span
	if rate > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			every := time.Duration(float64(time.Second) / rate)
			next := time.Now()
			for ctx.Err() == nil {
				t0 := time.Now()
				n, tasks, err := dumpOnce(cl, base)
				d := time.Since(t0)
				mu.Lock()
				dumpSpans = append(dumpSpans, span{t0, t0.Add(d)})
				if err != nil {
					s.dumpErrs++
				} else {
					s.dumps = append(s.dumps, d)
					s.dumpBytes += n
					s.dumpTasks += tasks
				}
				mu.Unlock()
				next = next.Add(every)
				if w := time.Until(next); w > 0 {
					select {
					case <-time.After(w):
					case <-ctx.Done():
					}
				} else {
					next = time.Now()
				}
			}
		}()
	}
	tick := time.NewTicker(o.loadEvery)
	defer tick.Stop()
	sem := make(chan struct{}, 64) // bounded in flight: a stalled service is not buried
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			mu.Lock()
			s.healthErrs++
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			resp, err := cl.Get(base + "/health")
			d := time.Since(t0)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			mu.Lock()
			if err != nil {
				s.healthErrs++
			} else {
				s.health = append(s.health, d)
				healthSpans = append(healthSpans, span{t0, t0.Add(d)})
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	s.wall = time.Since(start)
	// Requests that overlapped a dump: the dump's direct cost, compared
	// with the others of the same round (the same load on the machine).
	for _, h := range healthSpans {
		for _, d := range dumpSpans {
			if h.a.Before(d.b) && d.a.Before(h.b) {
				s.during = append(s.during, h.b.Sub(h.a))
				break
			}
		}
	}
	m1, err := metrics(cl, base)
	if err != nil {
		return s, err
	}
	s.steps, s.stepLat, s.cpu = m1.steps-m0.steps, m1.stepLat-m0.stepLat, m1.cpu-m0.cpu
	return s, nil
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func hostInfo() string {
	cpu := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				_, cpu, _ = strings.Cut(l, ": ")
				break
			}
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("%d CPUs (%s), load average %s at the end", runtime.NumCPU(), cpu, load)
}

// merged is every round of one rate together.
func (r *report) merged(rate float64) sample {
	var m sample
	for _, s := range r.byRate[rate] {
		m.health = append(m.health, s.health...)
		m.during = append(m.during, s.during...)
		m.healthErrs += s.healthErrs
		m.dumps = append(m.dumps, s.dumps...)
		m.dumpErrs += s.dumpErrs
		m.dumpBytes += s.dumpBytes
		m.dumpTasks += s.dumpTasks
		m.steps += s.steps
		m.stepLat += s.stepLat
		m.cpu += s.cpu
		m.wall += s.wall
	}
	return m
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/1e6) }

func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "refsvc (%s build, orchestration role, 40 steps/s, 2 workers, --spawn-backlog %d) on %s; %d rounds of %s per rate, alternating; GET /health every %s (open loop). First dump (loads the symbol tables) %s.\n\n",
		r.opt.variant, r.opt.backlog, r.host, r.opt.rounds, r.opt.round, r.opt.loadEvery, r.firstDump.Round(time.Millisecond))
	b.WriteString("| dumps/s | dumps | dump p50 / p90 / max (ms) | dump size | /health p50 / p99 (ms) | /health overlapping a dump: share, p50 / p99 (ms) | step latency (ms, mean) | service CPU | CPU per dump (ms) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	base := r.merged(0)
	baseCPU := 0.0
	if base.wall > 0 {
		baseCPU = base.cpu / base.wall.Seconds()
	}
	for _, rate := range r.opt.rates {
		m := r.merged(rate)
		dumps, size, dl, during, perDump := "–", "–", "–", "–", "–"
		if rate > 0 {
			dumps = fmt.Sprintf("%d (%d failed)", len(m.dumps), m.dumpErrs)
		}
		if len(m.dumps) > 0 {
			size = fmt.Sprintf("%.0f KiB, %d tasks", float64(m.dumpBytes)/float64(len(m.dumps))/1024, m.dumpTasks/len(m.dumps))
			dl = fmt.Sprintf("%s / %s / %s", ms(pct(m.dumps, 50)), ms(pct(m.dumps, 90)), ms(pct(m.dumps, 100)))
			perDump = fmt.Sprintf("%.1f", 1000*(m.cpu-baseCPU*m.wall.Seconds())/float64(len(m.dumps)))
		}
		if len(m.during) > 0 {
			during = fmt.Sprintf("%.1f%%, %s / %s", 100*float64(len(m.during))/float64(len(m.health)), ms(pct(m.during, 50)), ms(pct(m.during, 99)))
		}
		step := 0.0
		if m.steps > 0 {
			step = 1000 * m.stepLat / m.steps
		}
		cpu := 0.0
		if m.wall > 0 {
			cpu = m.cpu / m.wall.Seconds()
		}
		fmt.Fprintf(&b, "| %g | %s | %s | %s | %s / %s | %s | %.2f | %.1f%% | %s |\n", rate, dumps, dl, size,
			ms(pct(m.health, 50)), ms(pct(m.health, 99)), during, step, 100*cpu, perDump)
	}
	return b.String()
}
