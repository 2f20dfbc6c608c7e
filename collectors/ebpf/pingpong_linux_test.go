//go:build linux && amd64

package ebpf

import (
	"fmt"
	"github.com/google/pprof/profile"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
)

// pingpong is a running ping-pong target and the round trips it reports.
type pingpong struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	samples []rtSample
}

// startPingPong starts the target; place is "one" (both threads on CPU
// 0), "two" (on CPUs 0 and 1) or "" (where the scheduler puts them).
func startPingPong(t testing.TB, secs int, place string) *pingpong {
	t.Helper()
	pp := &pingpong{cmd: execTarget(t, "pingpong", strconv.Itoa(secs), place)}
	out, err := pp.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pp.cmd.Process.Kill(); _ = pp.cmd.Wait() })
	ch := make(chan rtSample, 1024)
	go readRoundTrips(out, ch)
	go func() {
		for s := range ch {
			pp.mu.Lock()
			pp.samples = append(pp.samples, s)
			pp.mu.Unlock()
		}
	}()
	return pp
}

// rate is the round trips per second the target reported between from
// and to.
func (pp *pingpong) rate(from, to time.Time) float64 {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	var first, last *rtSample
	for i := range pp.samples {
		s := &pp.samples[i]
		if s.at.Before(from) || s.at.After(to) {
			continue
		}
		if first == nil {
			first = s
		}
		last = s
	}
	if first == nil || last == first {
		return 0
	}
	return float64(last.n-first.n) / last.at.Sub(first.at).Seconds()
}

// threadCPU is a thread's time on CPU so far (its schedstat, ns).
func threadCPU(pid, tid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, tid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(n)
}

var keptRE = regexp.MustCompile(`\((\d+) kept`)

// TestPingPongSampling: on a target whose two threads ping-pong through
// pipes (hundreds of thousands of blocks a second, each a few
// microseconds), the off-CPU profile's total for the two threads is the
// time the kernel says they were not on a CPU, though only the blocks
// that hold a sample point (at most one per millisecond per thread) are
// kept; the stacks are the target's loops. Both ways of taking the user
// stack. What the capture costs the target is measured by make bench
// (bench/ebpf), not here.
func TestPingPongSampling(t *testing.T) {
	needEBPF(t)
	for _, tc := range stackPaths {
		t.Run(tc.name, func(t *testing.T) {
			pp := startPingPong(t, 30, "")
			time.Sleep(300 * time.Millisecond)
			pid := pp.cmd.Process.Pid
			tids := taskIDs(pid)
			if len(tids) != 2 {
				t.Fatalf("the target has threads %v, want 2", tids)
			}
			var cpu0 time.Duration
			res, w := recordThen(t, New(tc.opt), pid, 3*time.Second, func() {
				for _, tid := range tids {
					cpu0 += threadCPU(pid, tid)
				}
			}, bundle.OffCPU, bundle.Wakeup)
			var cpu1 time.Duration
			for _, tid := range tids {
				cpu1 += threadCPU(pid, tid)
			}
			win := w.Ended().Sub(w.Start)
			// Read after the window: the threads ran on meanwhile.
			want := 2*win - (cpu1 - cpu0)
			p := res[bundle.OffCPU].Profile
			got := time.Duration(sum(p, 0, func(*profile.Sample) bool { return true }))
			loops := time.Duration(sum(p, 0, func(s *profile.Sample) bool { return hasFunc(s, "ping_loop") || hasFunc(s, "echo_loop") }))
			kept := 0
			for _, c := range p.Comments {
				if m := keptRE.FindStringSubmatch(c); m != nil {
					kept, _ = strconv.Atoi(m[1])
					t.Log(c)
				}
			}
			t.Logf("offcpu %v for the two threads, the kernel says %v off CPU (%.1f%%); %.1f%% under ping_loop or echo_loop; %d blocks kept in %v; round trips %.0f/s",
				got, want, 100*got.Seconds()/want.Seconds(), 100*loops.Seconds()/got.Seconds(), kept, win, pp.rate(w.Start, w.Ended()))
			if r := got.Seconds() / want.Seconds(); r < 0.9 || r > 1.1 {
				t.Errorf("offcpu %v, the kernel says the threads were off CPU %v (%.1f%%), want 90-110%%", got, want, 100*r)
			}
			if r := loops.Seconds() / got.Seconds(); r < 0.8 {
				t.Errorf("%.1f%% of offcpu under the target's loops, want >= 80%%", 100*r)
			}
			// A Poisson process of one point per millisecond: its count in
			// 2 x 3 s is within a few percent of 6,000.
			if limit := int(1.2 * 2 * win.Seconds() * 1000); kept == 0 || kept > limit {
				t.Errorf("%d blocks kept, want 1..%d (one sample point per millisecond per thread)", kept, limit)
			}
		})
	}
}
