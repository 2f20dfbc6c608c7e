//go:build linux && amd64

package ebpf

import (
	"bufio"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
)

// stackPaths are the two ways of taking a kept block's user stack: a task
// work, and the syscall exit (kernels without task works).
var stackPaths = []struct {
	name string
	opt  Options
}{{"task work", Options{}}, {"syscall exit", Options{NoTaskWork: true}}}

// sleptLog is what the shortsleep target says it slept: cumulative
// nanoseconds in nanosleep by the time of each report.
type sleptLog struct {
	mu  sync.Mutex
	obs []rtSample // n: nanoseconds slept so far
}

// between is what it slept from a to b (interpolating between reports).
func (l *sleptLog) between(a, b time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	at := func(x time.Time) float64 {
		for i := 1; i < len(l.obs); i++ {
			p, q := l.obs[i-1], l.obs[i]
			if !q.at.Before(x) {
				f := float64(x.Sub(p.at)) / float64(q.at.Sub(p.at))
				return float64(p.n) + f*float64(q.n-p.n)
			}
		}
		return -1
	}
	va, vb := at(a), at(b)
	if va < 0 || vb < 0 {
		return 0
	}
	return time.Duration(vb - va)
}

// TestOffCPUShortBlocks: blocks far shorter than the 1 ms threshold
// (50 us nanosleeps, about 9,000 a second) are kept by the sample points
// and weighted so that their total is the time the target itself
// measured around its nanosleeps; the same through both ways of taking
// the user stack (a task work, or the syscall exit where the kernel has
// no task works).
func TestOffCPUShortBlocks(t *testing.T) {
	needEBPF(t)
	for _, tc := range stackPaths {
		t.Run(tc.name, func(t *testing.T) {
			cmd := execTarget(t, "shortsleep")
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			log := &sleptLog{}
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					f := strings.Fields(sc.Text())
					if len(f) == 3 && f[0] == "slept" {
						n, _ := strconv.ParseUint(f[1], 10, 64)
						log.mu.Lock()
						log.obs = append(log.obs, rtSample{n: n, at: time.Now()})
						log.mu.Unlock()
					}
				}
			}()
			time.Sleep(300 * time.Millisecond)
			res, w := record(t, New(tc.opt), cmd.Process.Pid, 4*time.Second, bundle.OffCPU, bundle.Wakeup)
			time.Sleep(250 * time.Millisecond)
			truth := log.between(w.Start, w.Ended())
			nap := func(s *profile.Sample) bool { return hasFunc(s, "short_nap") }
			p := res[bundle.OffCPU].Profile
			got := time.Duration(sum(p, 0, nap))
			wgot := time.Duration(sum(res[bundle.Wakeup].Profile, 0, nap))
			for _, c := range p.Comments {
				if strings.Contains(c, "sample points") || strings.Contains(c, "user stack") {
					t.Log(c)
				}
			}
			t.Logf("short_nap: offcpu %v, wakeup %v; the target slept %v in the window (%.1f%%, %.1f%%)",
				got, wgot, truth, 100*got.Seconds()/truth.Seconds(), 100*wgot.Seconds()/truth.Seconds())
			if truth < 3*time.Second {
				t.Fatalf("the target slept %v of a %v window", truth, w.Ended().Sub(w.Start))
			}
			if r := got.Seconds() / truth.Seconds(); r < 0.9 || r > 1.1 {
				t.Errorf("offcpu: short_nap has %v, the target slept %v (%.1f%%), want 90-110%%", got, truth, 100*r)
			}
			// The wakeup kind counts up to the wakeup, not the wait for
			// a CPU after it.
			if r := wgot.Seconds() / truth.Seconds(); r < 0.8 || r > 1.1 {
				t.Errorf("wakeup: short_nap has %v, the target slept %v (%.1f%%), want 80-110%%", wgot, truth, 100*r)
			}
		})
	}
}
