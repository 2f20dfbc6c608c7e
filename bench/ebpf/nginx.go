//go:build linux && amd64

package main

// The same question on a real program without frame pointers: Debian's
// nginx (two workers) saturated by wrk, its cpu and offcpu captured by the
// eBPF collector, which walks its stacks by .eh_frame CFI in BPF, and by
// the perf collector, which records them with --call-graph dwarf (8 KiB
// of stack copied per sample, unwound by perf script after the window).
// Cost: profcap's CPU plus the BPF programs' run time, or plus perf
// record's and perf script's (this process's children); the rate is wrk's
// requests a second during the window against before and after it.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/collectors/ebpf"
	"github.com/profcap/profcap/internal/testsvc"
	"github.com/profcap/profcap/targets"
)

// NginxRow is one collector's capture of nginx under wrk.
type NginxRow struct {
	Name     string
	Base     float64 // requests a second outside the window
	Kept     float64 // the window's rate, as a share of Base
	CPU      time.Duration
	ToResult time.Duration
	Samples  int64 // cpu samples
	Whole    float64
}

// NginxResult is the nginx table.
type NginxResult struct {
	Window time.Duration
	Rows   []NginxRow
}

func (r NginxResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nginx (2 workers, no frame pointers) under wrk -t1 -c8, %s cpu+offcpu windows; rate kept = requests a second in the window / outside it\n", r.Window)
	fmt.Fprintf(&b, "%-34s %11s %8s %14s %12s %8s %12s\n", "capture", "req/s out", "kept", "CPU/window-s", "end→profile", "samples", "reach main")
	for _, x := range r.Rows {
		fmt.Fprintf(&b, "%-34s %11.0f %7.1f%% %11.1f ms %12s %8d %11.1f%%\n", x.Name, x.Base, 100*x.Kept,
			float64(x.CPU.Microseconds())/1000/r.Window.Seconds(), x.ToResult.Round(time.Millisecond), x.Samples, 100*x.Whole)
	}
	return b.String()
}

func childCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type nginx struct {
	cmd  *exec.Cmd
	port int
}

func startNginx(dir string) (*nginx, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/nginx"); err2 != nil {
			return nil, err
		}
		bin = "/usr/sbin/nginx"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("hello from nginx\n"), 0o644); err != nil {
		return nil, err
	}
	conf := testsvc.NginxConf(dir, port)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	_ = os.Chmod(dir, 0o755) // the workers run as nobody
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "nginx.conf"), "-p", dir, "-e", filepath.Join(dir, "error.log"))
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			time.Sleep(300 * time.Millisecond) // the workers
			return &nginx{cmd: cmd, port: port}, nil
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return nil, fmt.Errorf("nginx did not listen on %d", port)
}

func (n *nginx) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGTERM) // the master stops its workers
	done := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-done
	}
}

var reqRate = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)

// wrk runs wrk for d and returns its requests a second and its own CPU
// (a child of this process like perf: not the capture's cost).
func (n *nginx) wrk(d time.Duration) (float64, time.Duration, error) {
	cmd := exec.Command("wrk", "-t1", "-c8", "-d"+strconv.Itoa(int(d.Seconds()))+"s", fmt.Sprintf("http://127.0.0.1:%d/", n.port))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("wrk: %v: %s", err, out)
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	m := reqRate.FindSubmatch(out)
	if m == nil {
		return 0, cpu, fmt.Errorf("wrk: no rate in %q", out)
	}
	r, err := strconv.ParseFloat(string(m[1]), 64)
	return r, cpu, err
}

func runNginx(window time.Duration) (NginxResult, error) {
	res := NginxResult{Window: window}
	dir, err := os.MkdirTemp("", "profcap-bench-nginx-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	ng, err := startNginx(dir)
	if err != nil {
		return res, err
	}
	defer ng.stop()
	kinds := []bundle.Kind{bundle.CPU, bundle.OffCPU}
	for _, c := range []struct {
		name string
		new  func(stats bool) collectors.Collector
	}{
		{"ebpf cpu+offcpu (CFI in BPF)", func(stats bool) collectors.Collector { return ebpf.New(ebpf.Options{BPFStats: stats}) }},
		{"perf cpu+offcpu (--call-graph dwarf)", func(bool) collectors.Collector {
			return collectors.NewPerf(collectors.PerfOptions{TempDir: dir})
		}},
	} {
		row := NginxRow{Name: c.name}
		before, _, err := ng.wrk(3 * time.Second)
		if err != nil {
			return res, err
		}
		// One capture under load for the rate and the stacks, a second
		// for the CPU (with bpf_stats, whose clock reads would count
		// against the rate).
		var wrkCPU time.Duration
		capture := func(stats bool) (map[bundle.Kind]collectors.Result, *collectors.Window, float64, error) {
			w := collectors.NewPendingWindow(window, window)
			var rate float64
			var werr error
			var wg sync.WaitGroup
			ctx := collectors.WithReady(context.Background(), func() {
				w.Open()
				wg.Add(1)
				go func() { defer wg.Done(); rate, wrkCPU, werr = ng.wrk(window) }()
			})
			got := map[bundle.Kind]collectors.Result{}
			var mu sync.Mutex
			c.new(stats).Collect(ctx, w, &targets.Target{Name: "nginx", PID: ng.cmd.Process.Pid}, kinds, func(r collectors.Result) {
				mu.Lock()
				got[r.Kind] = r
				mu.Unlock()
			})
			wg.Wait()
			for _, k := range kinds {
				if r := got[k]; r.Status != bundle.StatusOK {
					return nil, nil, 0, fmt.Errorf("%s %s: %s: %v", c.name, k, r.Status, r.Err)
				}
			}
			return got, w, rate, werr
		}
		got, w, rate, err := capture(false)
		if err != nil {
			return res, err
		}
		row.ToResult = time.Since(w.Ended())
		after, _, err := ng.wrk(3 * time.Second)
		if err != nil {
			return res, err
		}
		row.Base = (before + after) / 2
		row.Kept = rate / row.Base
		var whole int64
		for _, s := range got[bundle.CPU].Profile.Sample {
			row.Samples += s.Value[0]
			if reachesMain(s) {
				whole += s.Value[0]
			}
		}
		if row.Samples > 0 {
			row.Whole = float64(whole) / float64(row.Samples)
		}
		c0, k0 := selfCPU(), childCPU()
		got, _, _, err = capture(true)
		if err != nil {
			return res, err
		}
		var bpf time.Duration
		for _, r := range got {
			for _, cm := range r.Profile.Comments {
				if v, ok := strings.CutPrefix(cm, "ebpf: bpf programs ran "); ok {
					n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
					bpf = max(bpf, time.Duration(n)) // both kinds report the same programs
				}
			}
		}
		row.CPU = selfCPU() - c0 + childCPU() - k0 - wrkCPU + bpf
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

// reachesMain says whether a stack was walked down to main.
func reachesMain(s *profile.Sample) bool {
	for _, l := range s.Location {
		for _, ln := range l.Line {
			if ln.Function.Name == "main" {
				return true
			}
		}
	}
	return false
}
