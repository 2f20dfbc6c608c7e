package perfscript

import (
	"math"
	"os"
	"testing"
)

// TestOffCPUFixture checks the switch-out → switch-in pairing against the
// values computed for this recording (shared notes, formats.md section 5).
func TestOffCPUFixture(t *testing.T) {
	f, err := os.Open("testdata/fixtures/perf-script-sched-switch-systemwide-filtered.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := ParseOffCPU(f, OffCPUOptions{DropOpen: true})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]map[string]float64{}
	for _, s := range p.Sample {
		tid := s.NumLabel["tid"][0]
		if got[tid] == nil {
			got[tid] = map[string]float64{}
		}
		got[tid][s.Label["state"][0]] += float64(s.Value[0]) / 1e6
	}
	want := map[int64]map[string]float64{
		13610: {"R": 170.064, "S": 48.047},
		13612: {"R": 125.894, "S": 50.288},
	}
	for tid, states := range want {
		for st, ms := range states {
			if g := got[tid][st]; math.Abs(g-ms) > 0.0015 {
				t.Errorf("tid %d state %s: %.3f ms off CPU, want %.3f", tid, st, g, ms)
			}
		}
	}
	// Preempted time sits under its own root frame, blocked time does not.
	for _, s := range p.Sample {
		root := s.Location[len(s.Location)-1].Line[0].Function.Name
		if (s.Label["state"][0] == "R") != (root == PreemptedFrame) {
			t.Errorf("state %s sample has root %q", s.Label["state"][0], root)
		}
	}
	// Excluding runnable time leaves only the voluntary part.
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	p2, err := ParseOffCPU(f, OffCPUOptions{DropOpen: true, ExcludeRunnable: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(p2.Sample) == 0 {
		t.Fatal("ExcludeRunnable left no samples; the S-state time should stay")
	}
	for _, s := range p2.Sample {
		if s.Label["state"][0] == "R" {
			t.Fatalf("ExcludeRunnable kept a state R sample")
		}
	}
}

func TestParseSchedSwitchCommWithSpaces(t *testing.T) {
	sw, err := ParseSchedSwitch(1, []byte("prev_comm=V8 Worker prev_pid=12 prev_prio=120 prev_state=D ==> next_comm=a b next_pid=34 next_prio=120"))
	if err != nil {
		t.Fatal(err)
	}
	if sw.PrevComm != "V8 Worker" || sw.PrevPID != 12 || sw.PrevState != "D" || sw.NextComm != "a b" || sw.NextPID != 34 {
		t.Errorf("got %+v", sw)
	}
}

// Time past EndTime is not the window's: an interval that runs past it is
// cut there, one that starts after it is left out, and one still open at
// the end of the input is closed at EndTime, not at the last event.
func TestOffCPUEndTimeCuts(t *testing.T) {
	o := NewOffCPUBuilder(OffCPUOptions{EndTime: 350})
	out := func(tid int, at int64) {
		t.Helper()
		o.Time(at)
		h := Header{PID: 1, TID: tid, CPU: 0, Time: at, Event: "sched:sched_switch"}
		sw := SchedSwitch{PrevComm: "w", PrevPID: tid, PrevState: "S", NextComm: "swapper", NextPID: 0}
		if err := o.SchedSwitch(h, sw, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	out(5, 100)
	out(6, 200)
	o.Time(300)
	o.SwitchIn(5, 300) // 200 ns, all in the window
	out(5, 340)
	o.Time(420)
	o.SwitchIn(5, 420) // 340..420: 10 ns in the window
	out(5, 450)        // after the end: nothing
	o.Time(500)
	p, err := o.Profile()
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]int64{}
	for _, s := range p.Sample {
		got[s.NumLabel["tid"][0]] += s.Value[0]
	}
	if got[5] != 210 || got[6] != 150 || len(got) != 2 {
		t.Errorf("off-CPU ns by tid: %v, want 5: 210 (200 + 10 cut at the end), 6: 150 (open, closed at the end)", got)
	}
}
