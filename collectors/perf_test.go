package collectors

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/formats/perfscript"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/internal/testsvc"
	"github.com/profcap/profcap/targets"
)

// buildPerfDemo compiles testsvc's native demo program (optionally stripped).
func buildPerfDemo(t *testing.T, strip bool) string { return testsvc.BuildNative(t, strip) }

// startDemo runs the demo and kills it when the test ends.
func startPerfDemo(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := startProcess(t, bin, args...)
	// Let both threads start and name themselves.
	for i := 0; i < 100 && len(threads(cmd.Process.Pid)) < 3; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	return cmd
}

// needPerf requires perf and the right to record sched_switch (skipped
// where missing, a failure under CI).
func needPerf(t *testing.T) {
	t.Helper()
	testreq.Command(t, "perf")
	if os.Geteuid() != 0 && perfParanoid() > -1 {
		testreq.Missing(t, "root or kernel.perf_event_paranoid=-1 (perf records sched:sched_switch)")
	}
}

// collect runs Collect and returns the results by kind, checking that
// there is exactly one per requested kind.
func perfCollect(t *testing.T, c *Perf, w *Window, tg *targets.Target, kinds ...bundle.Kind) map[bundle.Kind]Result {
	t.Helper()
	var mu sync.Mutex
	got := map[bundle.Kind]Result{}
	n := 0
	c.Collect(context.Background(), w, tg, kinds, func(r Result) {
		mu.Lock()
		defer mu.Unlock()
		got[r.Kind] = r
		n++
	})
	if n != len(kinds) || len(got) != len(kinds) {
		t.Fatalf("%d results for kinds %v: %v", n, kinds, got)
	}
	return got
}

// hasFunc reports whether a sample's stack holds the function.
func perfHasFunc(s *profile.Sample, name string) bool {
	for _, l := range s.Location {
		for _, ln := range l.Line {
			if ln.Function.Name == name {
				return true
			}
		}
	}
	return false
}

// TestPerfCPUAndOffCPU records the demo with real perf over one window and
// checks both profiles: the burner on top of the CPU profile, the sleeper
// holding about the whole window of off-CPU time.
func TestPerfCPUAndOffCPU(t *testing.T) {
	needPerf(t)
	bin := buildPerfDemo(t, false)
	cmd := startPerfDemo(t, bin)
	pidFile := filepath.Join(t.TempDir(), "demo.pid")
	os.WriteFile(pidFile, []byte(fmt.Sprintf("%d\n", cmd.Process.Pid)), 0o644)
	tg := &targets.Target{Name: "demo", PIDFile: pidFile}

	c := NewPerf(PerfOptions{})
	if k := c.Kinds(tg); len(k) != 2 || k[0] != bundle.CPU || k[1] != bundle.OffCPU {
		t.Fatalf("Kinds = %v", k)
	}
	av := c.Probe(context.Background(), tg)
	if len(av) != 2 {
		t.Fatalf("probe: %+v, want cpu and offcpu", av)
	}
	for _, a := range av {
		if !a.Available {
			t.Fatalf("probe %s: %s", a.Kind, a.Reason)
		}
	}
	w := NewWindow(4*time.Second, 0)
	res := perfCollect(t, c, w, tg, bundle.CPU, bundle.OffCPU)

	cpu := res[bundle.CPU]
	if cpu.Status != bundle.StatusOK || cpu.Profile == nil {
		t.Fatalf("cpu: %s: %v", cpu.Status, cpu.Err)
	}
	if err := cpu.Profile.CheckValid(); err != nil {
		t.Fatal(err)
	}
	top, n := perfTopSelf(cpu.Profile, 1, nil)
	if top != "burn_cpu" {
		t.Errorf("cpu: top function %q (%d ns), want burn_cpu", top, n)
	}
	threadsSeen := map[string]bool{}
	for _, s := range cpu.Profile.Sample {
		threadsSeen[s.Label["thread"][0]] = true
		if len(s.NumLabel["tid"]) != 1 || s.NumLabel["pid"][0] != int64(cmd.Process.Pid) {
			t.Fatalf("cpu sample labels %v %v", s.Label, s.NumLabel)
		}
		if perfHasFunc(s, "burn_cpu") && s.Label["thread"][0] != "burner" {
			t.Errorf("burn_cpu sampled on thread %q", s.Label["thread"][0])
		}
	}
	if !threadsSeen["burner"] {
		t.Errorf("cpu: threads %v, want burner", threadsSeen)
	}

	off := res[bundle.OffCPU]
	if off.Status != bundle.StatusOK || off.Profile == nil {
		t.Fatalf("offcpu: %s: %v", off.Status, off.Err)
	}
	if err := off.Profile.CheckValid(); err != nil {
		t.Fatal(err)
	}
	var sleeperNS int64
	for _, s := range off.Profile.Sample {
		if s.Label["thread"][0] == "sleeper" && perfHasFunc(s, "sleep_forever") {
			sleeperNS += s.Value[0]
		}
	}
	var allSleeper, sleeperR int64
	for _, s := range off.Profile.Sample {
		if s.Label["thread"][0] == "sleeper" {
			allSleeper += s.Value[0]
			if s.Label["state"][0] == "R" {
				sleeperR += s.Value[0]
			}
		}
	}
	t.Logf("sleeper: all stacks %v, preempted %v", time.Duration(allSleeper), time.Duration(sleeperR))
	window := off.End.Sub(off.Start)
	ratio := float64(sleeperNS) / float64(window)
	t.Logf("sleeper off CPU %v in a window of %v (%.1f%%)", time.Duration(sleeperNS), window, 100*ratio)
	if math.Abs(ratio-1) > 0.10 {
		t.Errorf("sleeper off CPU %v, want the window %v within 10%%", time.Duration(sleeperNS), window)
	}
	voluntary := func(s *profile.Sample) bool { return s.Label["state"][0] != "R" }
	if top, _ := perfTopInclusiveUser(off.Profile, voluntary); top != "sleep_forever" && top != "sleeper" {
		t.Errorf("offcpu: top blocking function %q, want the sleeper's", top)
	}
}

// topSelf returns the function with most self value among samples that
// pass keep (nil keeps all).
func perfTopSelf(p *profile.Profile, vi int, keep func(*profile.Sample) bool) (string, int64) {
	self := map[string]int64{}
	for _, s := range p.Sample {
		if keep != nil && !keep(s) || len(s.Location) == 0 {
			continue
		}
		self[s.Location[0].Line[0].Function.Name] += s.Value[vi]
	}
	best, bv := "", int64(-1)
	for f, v := range self {
		if v > bv {
			best, bv = f, v
		}
	}
	return best, bv
}

// topInclusiveUser returns the function of the demo binary with the most
// inclusive value.
func perfTopInclusiveUser(p *profile.Profile, keep func(*profile.Sample) bool) (string, int64) {
	incl := map[string]int64{}
	for _, s := range p.Sample {
		if !keep(s) {
			continue
		}
		seen := map[string]bool{}
		for _, l := range s.Location {
			if l.Mapping == nil || !strings.HasSuffix(l.Mapping.File, "/perfdemo") {
				continue
			}
			for _, ln := range l.Line {
				if !seen[ln.Function.Name] {
					seen[ln.Function.Name] = true
					incl[ln.Function.Name] += s.Value[0]
				}
			}
		}
	}
	best, bv := "", int64(-1)
	for f, v := range incl {
		if v > bv || v == bv && f > best {
			best, bv = f, v
		}
	}
	return best, bv
}

// TestPerfTargetExitsStripped: a stripped target that exits mid-window
// keeps what was recorded, says it exited, says it is stripped, and keeps
// its frames as module+offset.
func TestPerfTargetExitsStripped(t *testing.T) {
	needPerf(t)
	bin := buildPerfDemo(t, true)
	// It exits after 3 s: perf takes up to seconds to attach on a busy
	// machine (seen: more than 1.5 s at a load average of 25 on 2 cores).
	cmd := startPerfDemo(t, bin, "3")
	tg := &targets.Target{Name: "demo", PID: cmd.Process.Pid}
	c := NewPerf(PerfOptions{Frequency: 199})
	av := c.Probe(context.Background(), tg)
	if len(av) != 2 {
		t.Fatalf("probe: %+v, want cpu and offcpu", av)
	}
	for _, a := range av {
		if !a.Available || !strings.Contains(a.Reason, "stripped") {
			t.Errorf("probe %s: available=%v reason %q: want available and the stripped binary reported", a.Kind, a.Available, a.Reason)
		}
	}
	w := NewWindow(8*time.Second, 0)
	r := perfCollect(t, c, w, tg, bundle.CPU)[bundle.CPU]
	if r.Status != bundle.StatusPartial || r.Err == nil || !strings.Contains(r.Err.Error(), "exited") {
		t.Fatalf("status %s, err %v: want partial, target exited", r.Status, r.Err)
	}
	if !strings.Contains(r.Note, "stripped") || !strings.Contains(r.Note, "symbols") {
		t.Errorf("note %q: want the stripped-binary advice", r.Note)
	}
	if r.Profile == nil || len(r.Profile.Sample) == 0 {
		t.Fatal("no samples kept")
	}
	base := filepath.Base(bin)
	found := false
	for _, f := range r.Profile.Function {
		if strings.HasPrefix(f.Name, base+"+0x") {
			found = true
		}
	}
	if !found {
		t.Errorf("no %s+0x... frames: frames of the stripped binary were dropped", base)
	}
	if top, _ := perfTopSelf(r.Profile, 1, nil); !strings.HasPrefix(top, base+"+0x") {
		t.Errorf("top frame %q, want the burner's loop as %s+0x...", top, base)
	}
}

func TestPerfMissing(t *testing.T) {
	c := NewPerf(PerfOptions{PerfPath: "/nonexistent/perf-not-here"})
	tg := &targets.Target{Name: "self", PID: os.Getpid()}
	for k, r := range perfCollect(t, c, NewWindow(time.Second, 0), tg, bundle.CPU, bundle.OffCPU) {
		if r.Status != bundle.StatusUnsupported || !errors.Is(r.Err, ErrPerfMissing) || !strings.Contains(r.Err.Error(), "install linux-perf") {
			t.Errorf("%s: %s %v: want unsupported with the install advice", k, r.Status, r.Err)
		}
	}
	av := c.Probe(context.Background(), tg)
	if len(av) != 2 {
		t.Errorf("probe: %+v, want cpu and offcpu", av)
	}
	for _, a := range av {
		if a.Available || !strings.Contains(a.Reason, "linux-perf") {
			t.Errorf("probe %s: %+v", a.Kind, a)
		}
	}
	if err := c.Preflight(tg, bundle.CPU); !errors.Is(err, ErrPerfMissing) {
		t.Errorf("preflight: %v, want the probe's reason", err)
	}
}

func TestPerfNoProcess(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	c := NewPerf(PerfOptions{PerfPath: "/bin/true"}) // never started: fails before
	tg := &targets.Target{Name: "gone", PID: cmd.Process.Pid}
	for k, r := range perfCollect(t, c, NewWindow(time.Second, 0), tg, bundle.CPU, bundle.OffCPU, bundle.Heap) {
		switch k {
		case bundle.Heap:
			if r.Status != bundle.StatusUnsupported {
				t.Errorf("heap: %s", r.Status)
			}
		default:
			if r.Status != bundle.StatusFailed || !strings.Contains(r.Err.Error(), "no process with pid") {
				t.Errorf("%s: %s %v", k, r.Status, r.Err)
			}
		}
	}
	if k := c.Kinds(&targets.Target{Name: "web", Pprof: "http://x"}); len(k) != 0 {
		t.Errorf("Kinds without a pid = %v", k)
	}
}

func TestPerfCancelled(t *testing.T) {
	needPerf(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := NewPerf(PerfOptions{})
	tg := &targets.Target{Name: "self", PID: os.Getpid()}
	var mu sync.Mutex // Emit is called from several goroutines
	n := 0
	c.Collect(ctx, NewWindow(time.Second, 0), tg, []bundle.Kind{bundle.CPU, bundle.OffCPU}, func(r Result) {
		mu.Lock()
		defer mu.Unlock()
		n++
		if r.Status != bundle.StatusFailed {
			t.Errorf("%s: %s after cancellation", r.Kind, r.Status)
		}
	})
	if n != 2 {
		t.Errorf("%d results, want 2", n)
	}
}

func TestFollowLauncher(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 30; true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var kids []int
	for i := 0; i < 200 && len(kids) == 0; i++ {
		time.Sleep(10 * time.Millisecond)
		kids = children(cmd.Process.Pid)
	}
	if len(kids) != 1 {
		t.Fatalf("sh has children %v", kids)
	}
	defer perfKill(kids[0])
	pid, note := followLauncher(cmd.Process.Pid)
	if pid != kids[0] || !strings.Contains(note, "launcher sh") || !strings.Contains(note, "sleep") {
		t.Errorf("followLauncher = %d, %q; want child %d named", pid, note, kids[0])
	}
	if pid, note := followLauncher(os.Getpid()); pid != os.Getpid() || note != "" {
		t.Errorf("followLauncher(self) = %d, %q", pid, note)
	}
}

func perfKill(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		p.Kill()
	}
}

func TestPerfErrorMessages(t *testing.T) {
	for _, tc := range []struct{ stderr, want string }{
		{"Error:\nAccess to performance monitoring and observability operations is limited.\nConsider adjusting /proc/sys/kernel/perf_event_paranoid setting", "sysctl -w kernel.perf_event_paranoid"},
		{"Error:\nThe sys_perf_event_open() syscall returned with 3 (No such process) for event (cpu-clock).", "exited before perf could attach"},
		{"event syntax error: 'sched:sched_switch'\n  \\___ unknown tracepoint", "tracefs"},
		{"something else broke", "something else broke"},
	} {
		c := NewPerf(PerfOptions{})
		err := c.tool.classify([]string{"record"}, 42, bundle.CPU, tc.stderr, errors.New("exit status 255"))
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("classify(%q) = %v, want it to mention %q", tc.stderr, err, tc.want)
		}
	}
}

// TestOffCPUArgs checks how the off-CPU recording is asked of perf.
func TestOffCPUArgs(t *testing.T) {
	c := NewPerf(PerfOptions{CallGraph: "dwarf"})
	args := strings.Join(c.recordArgs(bundle.OffCPU, os.Getpid(), "x.data", "dwarf"), " ")
	for _, want := range []string{"sched:sched_switch", "--switch-events", "--call-graph dwarf", fmt.Sprintf("-p %d", os.Getpid()), "CLOCK_MONOTONIC"} {
		if !strings.Contains(args, want) {
			t.Errorf("offcpu args %q lack %q", args, want)
		}
	}
	args = strings.Join(c.recordArgs(bundle.CPU, 7, "x.data", "fp"), " ")
	if !strings.Contains(args, "-F 99") || !strings.Contains(args, "-p 7") {
		t.Errorf("cpu args %q", args)
	}
}

var _ = perfscript.PreemptedFrame
