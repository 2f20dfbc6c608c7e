//go:build linux && amd64

package ebpf

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	cebpf "github.com/cilium/ebpf"
	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
)

// TestProgramsLoad loads each BPF program, alone with its maps, into the
// running kernel (the verifier's verdict on this kernel).
func TestProgramsLoad(t *testing.T) {
	needEBPF(t)
	spec, err := loadProfcap()
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Programs) != 8 {
		t.Errorf("%d programs, want 8", len(spec.Programs))
	}
	for name := range spec.Programs {
		t.Run(name, func(t *testing.T) {
			one := spec.Copy()
			for other := range one.Programs {
				if other != name {
					delete(one.Programs, other)
				}
			}
			coll, err := cebpf.NewCollection(one)
			if err != nil {
				t.Fatalf("loading %s: %v", name, err)
			}
			coll.Close()
		})
	}
	// The task iterator of blocked.bpf.c, with maps of its own.
	t.Run("blocked_stacks", func(t *testing.T) {
		bspec, err := loadBlocked()
		if err != nil {
			t.Fatal(err)
		}
		coll, err := cebpf.NewCollection(bspec)
		if err != nil {
			t.Fatalf("loading blocked_stacks: %v", err)
		}
		coll.Close()
	})
	// The task-work sched_switch of switchtw.bpf.c, sharing main's maps:
	// this kernel (6.18) has bpf_task_work_schedule_resume.
	t.Run("on_switch_tw", func(t *testing.T) {
		objs, err := load(1000000, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer objs.Close()
		tw, err := loadSwitchTW(objs, 1000000)
		if err != nil {
			t.Fatalf("loading on_switch_tw: %v", err)
		}
		tw.close()
	})
}

// TestWindowUnderLoad: with two busy loops taking both cores, the cpu and
// offcpu profiles of a native target cover at least 95% of an 8 s window.
func TestWindowUnderLoad(t *testing.T) {
	needEBPF(t)
	burners(t, 2)
	cmd := start(t, "spinsleep")
	res, w := record(t, New(Options{}), cmd.Process.Pid, 8*time.Second, bundle.CPU, bundle.OffCPU)
	for _, k := range []bundle.Kind{bundle.CPU, bundle.OffCPU} {
		cov := coverage(res[k], w)
		t.Logf("%s: coverage %.4f, %d samples", k, cov, len(res[k].Profile.Sample))
		if cov < 0.95 {
			t.Errorf("%s covers %.1f%% of the window, want >= 95%%", k, cov*100)
		}
		if len(res[k].Profile.Sample) == 0 {
			t.Errorf("%s: no samples", k)
		}
	}
}

func pidIs(pid int) func(*profile.Sample) bool {
	return func(s *profile.Sample) bool { return len(s.NumLabel["pid"]) == 1 && s.NumLabel["pid"][0] == int64(pid) }
}

// TestProcessTree: --pid of a parent that forked two CPU-burning children
// before the window and a third 2.5 s into a 6 s window profiles all of
// them.
func TestProcessTree(t *testing.T) {
	needEBPF(t)
	cmd := startWithStdin(t, "fork", "2500")
	parent := cmd.Process.Pid
	var initial []int
	for i := 0; i < 100 && len(initial) < 2; i++ {
		time.Sleep(20 * time.Millisecond)
		initial = childrenOf(parent)
	}
	if len(initial) != 2 {
		t.Fatalf("children before the window: %v", initial)
	}
	c := New(Options{})
	before := map[int]time.Duration{}
	for _, pid := range initial {
		before[pid] = onCPU(pid)
	}
	res, w := recordThen(t, c, parent, 6*time.Second, func() { fmt.Fprintln(cmd.stdin, "go") }, bundle.CPU)
	truth := map[int]time.Duration{}
	for _, pid := range childrenOf(parent) {
		truth[pid] = onCPU(pid) - before[pid] // the late child: all its life
	}
	p := res[bundle.CPU].Profile
	secs := w.Ended().Sub(w.Start).Seconds()
	var late []int
	for pid := range truth {
		if pid != initial[0] && pid != initial[1] {
			late = append(late, pid)
		}
	}
	if len(late) != 1 {
		t.Fatalf("children at the end %v, initial %v", truth, initial)
	}
	var early, earlyTruth float64
	for _, pid := range initial {
		early += float64(sum(p, 1, pidIs(pid))) / 1e9
		earlyTruth += truth[pid].Seconds()
	}
	lateCPU := float64(sum(p, 1, pidIs(late[0]))) / 1e9
	t.Logf("window %.2fs: first two children %.2f core-s (%.2f/s; the kernel's schedstat says %.2f), late child %.2f core-s (schedstat %.2f); %s",
		secs, early, early/secs, earlyTruth, lateCPU, truth[late[0]].Seconds(), res[bundle.CPU].Note)
	// What the profile says matches what the scheduler says the
	// children ran, within 15% (sampling at 99 Hz on 2 CPUs).
	for name, pair := range map[string][2]float64{"first two": {early, earlyTruth}, "late": {lateCPU, truth[late[0]].Seconds()}} {
		if got, want := pair[0], pair[1]; got < 0.85*want-0.1 || got > 1.15*want+0.1 {
			t.Errorf("%s children: profile %.2f core-s, schedstat %.2f", name, got, want)
		}
	}
	// The absolute figures need the CPUs to be ours: on a machine other
	// work saturates, the children get less, and the profile says so.
	if earlyTruth/secs > 1.05 {
		if early/secs <= 1 {
			t.Errorf("the first two children got %.2f core-seconds per second, want > 1", early/secs)
		}
	} else {
		t.Logf("the machine is loaded by other work (%s): the children ran %.2f core-s/s", loadavg(), earlyTruth/secs)
	}
	if truth[late[0]].Seconds() > 1.1 && lateCPU < 1 {
		t.Errorf("the late child got %.2f core-seconds, want >= 1", lateCPU)
	}
	if !strings.Contains(res[bundle.CPU].Note, "profiled 4 processes") || !strings.Contains(res[bundle.CPU].Note, "forked") {
		t.Errorf("note %q does not list the 4 processes", res[bundle.CPU].Note)
	}
	// Each sample says the second of the window it fell in: the late
	// child has none before it was forked (2.5 s in), the first two burn
	// in every whole second.
	bySec := func(pids ...int) []int64 {
		var out []int64
		for _, s := range p.Sample {
			match := false
			for _, pid := range pids {
				match = match || pidIs(pid)(s)
			}
			if !match {
				continue
			}
			v, ms := s.NumLabel[bundle.SecondLabel], s.NumLabel[bundle.SlotLabel]
			if len(v) != 1 || len(s.NumUnit[bundle.SecondLabel]) != 1 || v[0] < 0 || v[0] > int64(secs)+1 {
				t.Fatalf("sample %v: second %v (unit %v), window %.2fs", s.NumLabel, v, s.NumUnit, secs)
			}
			// The quarter second it fell in, in that second.
			if len(ms) != 1 || len(s.NumUnit[bundle.SlotLabel]) != 1 || ms[0]%250 != 0 || ms[0]/1000 != v[0] {
				t.Fatalf("sample %v: slot %v ms (unit %v), second %d", s.NumLabel, ms, s.NumUnit, v[0])
			}
			for int64(len(out)) <= v[0] {
				out = append(out, 0)
			}
			out[v[0]] += s.Value[0]
		}
		return out
	}
	earlyBy, lateBy := bySec(initial...), bySec(late[0])
	t.Logf("samples by second: first two children %v, late child %v", earlyBy, lateBy)
	for i := 0; i < len(lateBy) && i < 2; i++ {
		if lateBy[i] != 0 {
			t.Errorf("late child: %d samples in second %d, before it was forked (2.5 s in)", lateBy[i], i)
		}
	}
	if len(lateBy) < 5 || lateBy[3] == 0 || lateBy[4] == 0 {
		t.Errorf("late child: samples by second %v, want some in seconds 3 and 4", lateBy)
	}
	if len(earlyBy) < 6 {
		t.Fatalf("first two children: samples by second %v, want 6 seconds", earlyBy)
	}
	var whole int64
	for _, n := range earlyBy[:5] {
		whole += n
	}
	for i, n := range earlyBy[:5] {
		if n*2 < whole/5 {
			t.Errorf("first two children: %d samples in second %d, the whole seconds' mean %d", n, i, whole/5)
		}
	}
}

// TestOffCPUNamedFunction: a thread looping nanosleep inside sleep_loop
// (glibc's nanosleep and clock_nanosleep are frameless: the leaf fix-up
// restores sleep_loop) shows 90-110% of the window in sleep_loop.
func TestOffCPUNamedFunction(t *testing.T) {
	needEBPF(t)
	cmd := start(t, "sleep")
	res, w := record(t, New(Options{}), cmd.Process.Pid, 5*time.Second, bundle.OffCPU, bundle.Wakeup)
	p := res[bundle.OffCPU].Profile
	win := w.Ended().Sub(w.Start)
	got := time.Duration(sum(p, 0, func(s *profile.Sample) bool { return hasFunc(s, "sleep_loop") && s.Label["thread"][0] == "sleeper" }))
	t.Logf("sleep_loop: %s of %s (%.1f%%)", got, win, 100*got.Seconds()/win.Seconds())
	top(t, p, 0, 3)
	if r := got.Seconds() / win.Seconds(); r < 0.9 || r > 1.1 {
		t.Errorf("sleep_loop has %.1f%% of the window, want 90-110%%", r*100)
	}
	// The wakeup profile has the same blocked time, under "--".
	wp := res[bundle.Wakeup].Profile
	wgot := time.Duration(sum(wp, 0, func(s *profile.Sample) bool { return hasFunc(s, "sleep_loop") && hasFunc(s, "--") }))
	t.Logf("wakeup: sleep_loop %s", wgot)
	if r := wgot.Seconds() / win.Seconds(); r < 0.9 || r > 1.1 {
		t.Errorf("wakeup: sleep_loop has %.1f%% of the window, want 90-110%%", r*100)
	}
	top(t, wp, 0, 2)
}

// TestBlockedAllWindow: the main thread, joined on the sleeper and never
// woken, shows the whole window blocked.
func TestBlockedAllWindow(t *testing.T) {
	needEBPF(t)
	cmd := start(t, "sleep")
	res, w := record(t, New(Options{}), cmd.Process.Pid, 2*time.Second, bundle.OffCPU)
	p := res[bundle.OffCPU].Profile
	win := w.Ended().Sub(w.Start)
	got := time.Duration(sum(p, 0, func(s *profile.Sample) bool { return s.NumLabel["tid"][0] == int64(cmd.Process.Pid) }))
	if r := got.Seconds() / win.Seconds(); r < 0.95 || r > 1.05 {
		t.Errorf("the joined main thread has %s of %s", got, win)
	}
}

// onCPU is a process's time on CPU so far (/proc/PID/schedstat, ns).
func onCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
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

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return "load average " + strings.Join(strings.Fields(string(b))[:min(3, len(strings.Fields(string(b))))], " ")
}

type stdinCmd struct {
	*os.Process
	stdin io.Writer
}

func startWithStdin(t *testing.T, args ...string) *stdinCmd {
	t.Helper()
	cmd := execTarget(t, args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, k := range childrenOf(cmd.Process.Pid) {
			if p, err := os.FindProcess(k); err == nil {
				_ = p.Kill()
			}
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return &stdinCmd{Process: cmd.Process, stdin: in}
}

func childrenOf(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// rtReader follows the ping-pong target's "rt N T" lines.
type rtSample struct {
	n  uint64
	at time.Time
}

func readRoundTrips(r io.Reader, out chan<- rtSample) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "rt" {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			out <- rtSample{n: n, at: time.Now()}
		}
	}
	close(out)
}
