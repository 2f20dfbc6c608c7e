package capture

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/internal/testsvc"
	"github.com/profcap/profcap/targets"
)

func TestMain(m *testing.M) {
	testsvc.Main() // serve instead of testing when run as a test service
	os.Exit(m.Run())
}

func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/debug/pprof"
}

func profileOf(m *bundle.Manifest, target, kind string) *bundle.Profile {
	for _, t := range m.Targets {
		if t.Name == target {
			for _, p := range t.Profiles {
				if p.Kind == bundle.Kind(kind) {
					return p
				}
			}
		}
	}
	return nil
}

func targetOf(m *bundle.Manifest, name string) *bundle.Target {
	for _, t := range m.Targets {
		if t.Name == name {
			return t
		}
	}
	return nil
}

func TestCaptureTwoTargetsAndOneDown(t *testing.T) {
	a := testsvc.Start(t, testsvc.Normal, true)
	b := testsvc.Start(t, testsvc.Normal, false)
	dir := filepath.Join(t.TempDir(), "bundle")
	ts := []targets.Target{
		{Name: "svc-a", Pprof: a.URL(), Labels: map[string]string{"role": "worker"}},
		{Name: "svc-b", Pprof: b.URL()},
		{Name: "svc-down", Pprof: deadURL(t)},
	}
	var events []Event
	out, err := Run(context.Background(), Options{
		Targets: ts, Duration: 3 * time.Second, Slice: 2 * time.Second, Out: dir,
		Collectors: []collectors.Collector{collectors.NewPprof(collectors.PprofOptions{})},
		Events:     func(e Event) { events = append(events, e) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if code := out.ExitCode(); code != 3 {
		t.Errorf("exit code %d, want 3 (partial)", code)
	}
	// The manifest on disk is the final one and is valid.
	m, err := bundle.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != "partial" || m.Window.Start == "" || m.Window.End == "" {
		t.Errorf("manifest status %q window %+v", m.Status, m.Window)
	}
	for _, name := range []string{"svc-a", "svc-b"} {
		tg := targetOf(m, name)
		for _, kind := range []string{"cpu", "heap", "allocs", "goroutine", "mutex", "block"} {
			p := profileOf(m, name, kind)
			if p == nil || p.Status != "ok" || p.Path == "" {
				t.Fatalf("%s %s: %+v", name, kind, p)
			}
			if _, err := bundle.LoadProfile(dir, p.Path); err != nil {
				t.Errorf("%s %s: %v", name, kind, err)
			}
			st, err := os.Stat(filepath.Join(dir, p.Path))
			if err != nil || st.Mode().Perm() != bundle.FileMode {
				t.Errorf("%s: mode %v, err %v; want %v", p.Path, st.Mode().Perm(), err, os.FileMode(bundle.FileMode))
			}
		}
		if name == "svc-a" && tg.Status != "ok" {
			t.Errorf("svc-a status %s, want ok (fgprof mounted)", tg.Status)
		}
	}
	if p := profileOf(m, "svc-b", "wall"); p == nil || p.Status != "unsupported" {
		t.Errorf("svc-b wall: %+v, want unsupported (no fgprof)", p)
	}
	if st := targetOf(m, "svc-b").Status; st != "ok" {
		t.Errorf("svc-b status %s: an endpoint the service lacks is not a failure", st)
	}
	down := targetOf(m, "svc-down")
	if down.Status != "failed" {
		t.Errorf("svc-down status %s", down.Status)
	}
	for _, p := range down.Profiles {
		if !strings.Contains(p.Error, "connection refused") {
			t.Errorf("svc-down %s: error %q", p.Kind, p.Error)
		}
	}
	// Merged cpu has every captured target's samples, labelled.
	path, ok := m.MergedPath("cpu")
	if !ok {
		t.Fatalf("no merged cpu in %+v", m.Merged)
	}
	mp, err := bundle.LoadProfile(dir, path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range mp.Sample {
		if len(s.Label["target"]) != 1 {
			t.Fatalf("merged sample without one target label: %v", s.Label)
		}
		seen[s.Label["target"][0]] = true
	}
	if !seen["svc-a"] || !seen["svc-b"] || seen["svc-down"] {
		t.Errorf("merged cpu targets %v", seen)
	}
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != bundle.DirMode {
		t.Errorf("bundle dir mode %v", st.Mode().Perm())
	}
	if m.Skew > 1 {
		t.Errorf("start skew %.3fs across targets of one window", m.Skew)
	}
}

func TestCaptureInterruptKeepsWhatWasCaptured(t *testing.T) {
	a := testsvc.Start(t, testsvc.Normal, false)
	b := testsvc.Start(t, testsvc.Normal, false)
	dir := filepath.Join(t.TempDir(), "bundle")
	stop := make(chan struct{})
	time.AfterFunc(2500*time.Millisecond, func() { close(stop) })
	start := time.Now()
	out, err := Run(context.Background(), Options{
		Targets:  []targets.Target{{Name: "a", Pprof: a.URL()}, {Name: "b", Pprof: b.URL()}},
		Duration: 60 * time.Second, Slice: time.Second, Out: dir, Stop: stop,
		Collectors: []collectors.Collector{collectors.NewPprof(collectors.PprofOptions{})},
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("returned %v after start for an interrupt at 2.5s", d)
	}
	m := out.Manifest
	if m.Status != "partial" || m.Reason != "interrupted" || out.ExitCode() != 3 {
		t.Errorf("status %q reason %q exit %d; want partial, interrupted, 3", m.Status, m.Reason, out.ExitCode())
	}
	// The slice in flight at the interrupt is dropped (the user wants out
	// now): cpu keeps the 2 whole slices of a 2.5 s window, so it is kept
	// but partial, with its real coverage.
	for _, name := range []string{"a", "b"} {
		p := profileOf(m, name, "cpu")
		if p == nil || p.Status != "partial" || p.Samples == 0 || p.Path == "" || p.Coverage <= 0 || p.Coverage >= bundle.MinCoverage || !strings.Contains(p.Error, "of the window") {
			t.Errorf("%s cpu: %+v", name, p)
		}
	}
	if _, ok := m.MergedPath("cpu"); !ok {
		t.Errorf("no merged cpu after an interrupt")
	}
}

func TestCaptureWorkloadEndsTheWindow(t *testing.T) {
	a := testsvc.Start(t, testsvc.Normal, false)
	dir := filepath.Join(t.TempDir(), "bundle")
	start := time.Now()
	out, err := Run(context.Background(), Options{
		Targets:  []targets.Target{{Name: "a", Pprof: a.URL()}},
		Kinds:    []bundle.Kind{bundle.CPU, bundle.Heap},
		Duration: 30 * time.Second, Slice: 2 * time.Second, Out: dir,
		Workload:   []string{"sh", "-c", "sleep 1; exit 7"},
		Collectors: []collectors.Collector{collectors.NewPprof(collectors.PprofOptions{})},
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v; the workload exited after 1s", d)
	}
	m := out.Manifest
	if m.Workload == nil || m.Workload.ExitCode != 7 || m.Workload.Seconds < 0.9 || m.Workload.Command[0] != "sh" {
		t.Errorf("workload %+v", m.Workload)
	}
	if m.Window.EndedEarly != "workload exited" {
		t.Errorf("ended early %q", m.Window.EndedEarly)
	}
	// The cpu slice in flight when the workload exited was allowed to finish.
	if p := profileOf(m, "a", "cpu"); p == nil || p.Status != "ok" {
		t.Errorf("cpu %+v", p)
	}
	if out.ExitCode() != 0 {
		t.Errorf("exit code %d, want 0", out.ExitCode())
	}
}

func TestPlanPicksOneCollectorPerKind(t *testing.T) {
	ts := []targets.Target{{Name: "go", Pprof: "http://x/debug/pprof"}, {Name: "native", PID: 1}}
	jobs, missing := Plan(ts, []collectors.Collector{collectors.NewPprof(collectors.PprofOptions{})}, []bundle.Kind{bundle.CPU}, true, "")
	if len(jobs) != 1 || jobs[0].target.Name != "go" || len(jobs[0].kinds) != 1 {
		t.Errorf("jobs %+v", jobs)
	}
	if len(missing["native"]) != 1 || missing["native"][0] != bundle.CPU {
		t.Errorf("missing %v", missing)
	}
}

// A local target's CPU use is measured before and during the window, so a
// reader can tell whether the capture moved it.
func TestCaptureMeasuresLocalCPUUse(t *testing.T) {
	a := testsvc.Start(t, testsvc.Normal, false) // burns about half a core
	dir := filepath.Join(t.TempDir(), "bundle")
	out, err := Run(context.Background(), Options{
		Targets:  []targets.Target{{Name: "a", Pprof: a.URL(), PID: a.Cmd.Process.Pid}},
		Kinds:    []bundle.Kind{bundle.Heap},
		Duration: time.Second, Slice: time.Second, Out: dir, Baseline: 500 * time.Millisecond,
		Collectors: []collectors.Collector{collectors.NewPprof(collectors.PprofOptions{})},
	})
	if err != nil {
		t.Fatal(err)
	}
	u := targetOf(out.Manifest, "a").CPU
	if u == nil || u.Error != "" || u.BaselineSeconds < 0.4 || u.BaselineCores < 0.1 || u.WindowCores < 0.1 || u.BaselineCores > 2 || u.WindowCores > 2 {
		t.Errorf("cpu use %+v, want about half a core before and during", u)
	}
	if p := profileOf(out.Manifest, "a", "heap"); p == nil || !strings.Contains(p.Period, "512 KiB") {
		t.Errorf("heap period %+v", p)
	}
}

// fakeCollector offers kinds and fails its preflight when broken.
type fakeCollector struct {
	name   string
	kinds  []bundle.Kind
	broken bool
}

func (f *fakeCollector) Name() string                        { return f.name }
func (f *fakeCollector) Kinds(*targets.Target) []bundle.Kind { return f.kinds }
func (f *fakeCollector) Probe(context.Context, *targets.Target) []collectors.Availability {
	return nil
}
func (f *fakeCollector) Collect(context.Context, *collectors.Window, *targets.Target, []bundle.Kind, collectors.Emit) {
}
func (f *fakeCollector) Preflight(*targets.Target, bundle.Kind) error {
	if f.broken {
		return errors.New("not here")
	}
	return nil
}

func TestPlanPrefersUsableThenForced(t *testing.T) {
	ts := []targets.Target{{Name: "svc", PID: 1}}
	perf := &fakeCollector{name: "perf", kinds: []bundle.Kind{bundle.CPU, bundle.OffCPU}}
	samply := &fakeCollector{name: "samply", kinds: []bundle.Kind{bundle.CPU}}
	pick := func(prefer string) map[bundle.Kind]string {
		jobs, _ := Plan(ts, []collectors.Collector{perf, samply}, nil, false, prefer)
		got := map[bundle.Kind]string{}
		for _, j := range jobs {
			for _, k := range j.kinds {
				got[k] = j.collector.Name()
			}
		}
		return got
	}
	if got := pick(""); got[bundle.CPU] != "perf" || got[bundle.OffCPU] != "perf" {
		t.Errorf("usable perf: %v", got)
	}
	perf.broken = true
	if got := pick(""); got[bundle.CPU] != "samply" || got[bundle.OffCPU] != "perf" {
		t.Errorf("perf unusable: %v, want cpu from samply and offcpu still from perf (its error says why)", got)
	}
	perf.broken = false
	if got := pick("samply"); got[bundle.CPU] != "samply" || got[bundle.OffCPU] != "perf" {
		t.Errorf("--collector samply: %v", got)
	}
}
