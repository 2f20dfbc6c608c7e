package capture

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/internal/pprofutil"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/targets"
)

// cannedCollector emits canned results: for each kind, what behave says.
// It starts no process and touches no network, so these tests check Run's
// own logic: planning, recording, statuses, interrupts, merging.
type cannedCollector struct {
	kinds  []bundle.Kind
	behave func(ctx context.Context, w *collectors.Window, t *targets.Target, k bundle.Kind, emit collectors.Emit)
	calls  atomic.Int32
}

func (f *cannedCollector) Name() string                        { return "fake" }
func (f *cannedCollector) Kinds(*targets.Target) []bundle.Kind { return f.kinds }
func (f *cannedCollector) Probe(context.Context, *targets.Target) []collectors.Availability {
	return nil
}
func (f *cannedCollector) Collect(ctx context.Context, w *collectors.Window, t *targets.Target, kinds []bundle.Kind, emit collectors.Emit) {
	f.calls.Add(1)
	var wg sync.WaitGroup
	for _, k := range kinds { // kinds run side by side, as in real collectors
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.behave(ctx, w, t, k, emit)
		}()
	}
	wg.Wait()
}

var _ collectors.Collector = (*cannedCollector)(nil)

// cannedProfile is a one-function profile with n samples of value v.
func cannedProfile(fn string, n int, v int64) *profile.Profile {
	f := &profile.Function{ID: 1, Name: fn}
	l := &profile.Location{ID: 1, Line: []profile.Line{{Function: f}}}
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:     10_000_000,
		Function:   []*profile.Function{f},
		Location:   []*profile.Location{l},
	}
	for range n {
		p.Sample = append(p.Sample, &profile.Sample{Location: []*profile.Location{l}, Value: []int64{v}})
	}
	return p
}

// ok is a result that sampled the whole window w (as far as it went).
func ok(w *collectors.Window, k bundle.Kind, fn string) collectors.Result {
	// Sampled until the window really ended, however late a loaded
	// machine ends it (the bundle clamps coverage to the window).
	end := w.Deadline.Add(time.Minute)
	return collectors.Result{Kind: k, Collector: "fake", Status: bundle.StatusOK, Profile: cannedProfile(fn, 3, 1), Start: w.Start, End: end}
}

func runFake(t *testing.T, ctx context.Context, opt Options) (*Outcome, *bundle.Manifest) {
	t.Helper()
	if opt.Out == "" {
		opt.Out = filepath.Join(t.TempDir(), "bundle")
	}
	if opt.Duration == 0 {
		opt.Duration = 200 * time.Millisecond
	}
	out, err := Run(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.Read(opt.Out)
	if err != nil {
		t.Fatal(err)
	}
	for _, bt := range m.Targets {
		for _, p := range bt.Profiles {
			if !p.Status.Final() {
				t.Errorf("%s %s: status %q left in the final manifest", bt.Name, p.Kind, p.Status)
			}
		}
		if !bt.Status.Final() {
			t.Errorf("%s: status %q left in the final manifest", bt.Name, bt.Status)
		}
	}
	return out, m
}

func TestRunFakeSuccess(t *testing.T) {
	fc := &cannedCollector{kinds: []bundle.Kind{bundle.CPU, bundle.Heap}, behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
		if k == bundle.CPU {
			<-w.Done() // a window kind delivers at the window's end
		}
		emit(ok(w, k, tg.Name+"-work"))
		emit(ok(w, bundle.Goroutine, "not asked for")) // dropped by the capture
	}}
	rendered := 0
	out, m := runFake(t, context.Background(), Options{
		Targets:    []targets.Target{{Name: "a", Labels: map[string]string{"role": "w"}}, {Name: "b"}},
		Collectors: []collectors.Collector{fc},
		Kinds:      []bundle.Kind{bundle.CPU, bundle.Heap},
		Render: func(dir string, m *bundle.Manifest) error {
			rendered++
			return os.WriteFile(filepath.Join(dir, "report.html"), []byte("<html>"), 0o640)
		},
	})
	if out.ExitCode() != 0 || m.Status != bundle.StatusOK || out.Captured != 4 || out.Failed != 0 {
		t.Fatalf("exit %d status %s counts %+v", out.ExitCode(), m.Status, out.Counts)
	}
	if fc.calls.Load() != 2 || rendered != 1 || m.Report != "report.html" {
		t.Errorf("collector calls %d, renders %d, report %q", fc.calls.Load(), rendered, m.Report)
	}
	for _, name := range []string{"a", "b"} {
		bt := m.Target(name)
		if bt == nil || bt.Status != bundle.StatusOK || len(bt.Profiles) != 2 {
			t.Fatalf("%s: %+v", name, bt)
		}
		if bt.Profile(bundle.Goroutine) != nil {
			t.Errorf("%s: a kind the capture did not ask for was recorded", name)
		}
		p := bt.Profile(bundle.CPU)
		if p.Path != bundle.ProfilePath(name, bundle.CPU) || p.Samples != 3 || p.Period != "10 ms (100 Hz)" || p.Collector != "fake" {
			t.Errorf("%s cpu entry %+v", name, p)
		}
		if _, err := bundle.LoadProfile(out.Dir, p.Path); err != nil {
			t.Error(err)
		}
	}
	if m.Window.Start == "" || m.Window.End == "" || m.Window.EndedEarly != "" {
		t.Errorf("window %+v", m.Window)
	}
	// The merge holds both targets, labelled.
	rel, found := m.MergedPath(bundle.CPU)
	if !found {
		t.Fatal("no merged cpu")
	}
	mp, err := bundle.LoadProfile(out.Dir, rel)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int64{}
	for _, s := range mp.Sample {
		seen[s.Label["target"][0]] += s.Value[0]
	}
	if seen["a"] != 3 || seen["b"] != 3 {
		t.Errorf("merged cpu by target %v, want 3 each", seen)
	}
	if got := time.Duration(mp.DurationNanos); got < 150*time.Millisecond || got > 5*time.Second {
		t.Errorf("merged duration %v, want about the window", got)
	}
}

func TestRunFakeFailureAndPartial(t *testing.T) {
	fc := &cannedCollector{kinds: []bundle.Kind{bundle.CPU, bundle.Heap, bundle.Allocs, bundle.Mutex}, behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
		switch k {
		case bundle.CPU:
			r := ok(w, k, "spin")
			r.Status, r.Err = bundle.StatusPartial, errors.New("target exited mid-window")
			emit(r)
		case bundle.Heap:
			emit(collectors.Result{Kind: k, Collector: "fake", Status: bundle.StatusFailed, Err: errors.New("connection refused")})
		case bundle.Allocs:
			// delivers nothing
		case bundle.Mutex:
			r := ok(w, k, "lock")
			r.Profile.Sample[0].Value = nil // invalid: fewer values than sample types
			emit(r)
		}
	}}
	out, m := runFake(t, context.Background(), Options{
		Targets: []targets.Target{{Name: "svc"}}, Collectors: []collectors.Collector{fc},
	})
	bt := m.Target("svc")
	want := map[bundle.Kind]struct {
		st  bundle.Status
		err string
	}{
		bundle.CPU:    {bundle.StatusPartial, "target exited mid-window"},
		bundle.Heap:   {bundle.StatusFailed, "connection refused"},
		bundle.Allocs: {bundle.StatusFailed, "the collector delivered no result"},
		bundle.Mutex:  {bundle.StatusFailed, "invalid profile"},
	}
	for k, w := range want {
		p := bt.Profile(k)
		if p == nil || p.Status != w.st || !strings.Contains(p.Error, w.err) {
			t.Errorf("%s: %+v, want %s with %q", k, p, w.st, w.err)
		}
	}
	if p := bt.Profile(bundle.CPU); p.Path == "" {
		t.Error("a partial profile's data must be kept")
	}
	if bt.Status != bundle.StatusPartial || m.Status != bundle.StatusPartial || out.ExitCode() != 3 {
		t.Errorf("target %s bundle %s exit %d", bt.Status, m.Status, out.ExitCode())
	}
	if out.Captured != 1 || out.Failed != 4 {
		t.Errorf("counts %+v", out.Counts)
	}
}

func TestRunFakeNothingCaptured(t *testing.T) {
	fc := &cannedCollector{kinds: []bundle.Kind{bundle.CPU}, behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
		emit(collectors.Result{Kind: k, Collector: "fake", Status: bundle.StatusFailed, Err: errors.New("down")})
	}}
	out, m := runFake(t, context.Background(), Options{Targets: []targets.Target{{Name: "x"}}, Collectors: []collectors.Collector{fc}})
	if out.ExitCode() != 1 || m.Status != bundle.StatusFailed || len(m.Merged) != 0 {
		t.Errorf("exit %d status %s merged %v", out.ExitCode(), m.Status, m.Merged)
	}
}

func TestRunFakeExplicitKindNobodyOffers(t *testing.T) {
	fc := &cannedCollector{kinds: []bundle.Kind{bundle.CPU}, behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
		emit(ok(w, k, "f"))
	}}
	out, m := runFake(t, context.Background(), Options{
		Targets: []targets.Target{{Name: "x"}}, Collectors: []collectors.Collector{fc},
		Kinds: []bundle.Kind{bundle.CPU, bundle.Async}, Explicit: true,
	})
	p := m.Target("x").Profile(bundle.Async)
	if p == nil || p.Status != bundle.StatusUnsupported || !strings.Contains(p.Error, "no collector can capture async") {
		t.Fatalf("async: %+v", p)
	}
	if out.ExitCode() != 3 || out.Failed != 1 || out.Unsupported != 1 {
		t.Errorf("exit %d counts %+v: a kind asked for by name and not got is a failure", out.ExitCode(), out.Counts)
	}
}

func TestRunFakeInterrupt(t *testing.T) {
	fc := &cannedCollector{kinds: []bundle.Kind{bundle.CPU, bundle.Heap}, behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
		if k == bundle.CPU {
			<-w.Done()
			r := ok(w, k, "busy")
			if w.Interrupted() {
				r.Status = bundle.StatusPartial
			}
			emit(r)
			return
		}
		emit(ok(w, k, "heap")) // an end-of-window snapshot, still taken
	}}
	stop := make(chan struct{})
	time.AfterFunc(150*time.Millisecond, func() { close(stop) })
	start := time.Now()
	out, m := runFake(t, context.Background(), Options{
		Targets: []targets.Target{{Name: "x"}}, Collectors: []collectors.Collector{fc},
		Duration: time.Minute, Stop: stop,
	})
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("an interrupted 1-minute capture took %v", took)
	}
	if m.Reason != collectors.ReasonInterrupted || m.Window.EndedEarly != collectors.ReasonInterrupted {
		t.Errorf("reason %q ended early %q", m.Reason, m.Window.EndedEarly)
	}
	if p := m.Target("x").Profile(bundle.CPU); p.Status != bundle.StatusPartial || p.Path == "" {
		t.Errorf("cpu after an interrupt: %+v, want partial with its data", p)
	}
	if m.Status != bundle.StatusPartial || out.ExitCode() != 3 {
		t.Errorf("status %s exit %d", m.Status, out.ExitCode())
	}
	if len(m.Merged) == 0 {
		t.Error("a first interrupt keeps the merges")
	}
}

func TestRunFakeSecondInterrupt(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	fc := &cannedCollector{kinds: []bundle.Kind{bundle.CPU, bundle.Heap}, behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
		if k == bundle.Heap {
			emit(ok(w, k, "heap"))
			return
		}
		select { // a collector that ignores the window and the context
		case <-release:
		case <-time.After(time.Minute):
		}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	stop := make(chan struct{})
	time.AfterFunc(100*time.Millisecond, func() { close(stop) })
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	out, m := runFake(t, ctx, Options{
		Targets: []targets.Target{{Name: "x"}}, Collectors: []collectors.Collector{fc},
		Kinds: []bundle.Kind{bundle.CPU, bundle.Heap}, Duration: time.Minute, Stop: stop,
	})
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a second interrupt took %v to stop", took)
	}
	if m.Reason != "interrupted twice" || m.Status != bundle.StatusPartial || out.ExitCode() != 3 {
		t.Errorf("reason %q status %s exit %d", m.Reason, m.Status, out.ExitCode())
	}
	p := m.Target("x").Profile(bundle.CPU)
	if p.Status != bundle.StatusFailed || !strings.Contains(p.Error, "the capture was stopped") {
		t.Errorf("cpu of a hung collector: %+v", p)
	}
	if h := m.Target("x").Profile(bundle.Heap); h.Status != bundle.StatusOK || h.Path == "" {
		t.Errorf("a profile captured before the interrupts must be kept: %+v", h)
	}
	if len(m.Merged) != 0 || m.Report != "" {
		t.Errorf("a second interrupt skips merges and the report: %v %q", m.Merged, m.Report)
	}
}

func TestRunFakeWorkloadEndsWindow(t *testing.T) {
	fc := &cannedCollector{kinds: []bundle.Kind{bundle.CPU}, behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
		<-w.Done()
		emit(ok(w, k, "f"))
	}}
	out, m := runFake(t, context.Background(), Options{
		Targets: []targets.Target{{Name: "x"}}, Collectors: []collectors.Collector{fc},
		Duration: time.Minute, Workload: []string{"sh", "-c", "exit 7"},
	})
	if m.Workload == nil || m.Workload.ExitCode != 7 || m.Window.EndedEarly != "workload exited" {
		t.Fatalf("workload %+v window %+v", m.Workload, m.Window)
	}
	if out.ExitCode() != 0 || !slices.Equal(m.Workload.Command, []string{"sh", "-c", "exit 7"}) {
		t.Errorf("exit %d command %v", out.ExitCode(), m.Workload.Command)
	}
}

func okCollector(kinds ...bundle.Kind) *cannedCollector {
	return &cannedCollector{kinds: kinds, behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
		emit(ok(w, k, tg.Name+"-"+string(k)))
	}}
}

// Captures started together with the same default --out never share a
// bundle: each claims its own directory.
func TestRunUniqueDefaultOut(t *testing.T) {
	base := filepath.Join(t.TempDir(), "profcap-same-second")
	type res struct {
		out *Outcome
		err error
	}
	results := make(chan res, 4)
	for range 4 {
		go func() {
			out, err := Run(context.Background(), Options{
				Targets: []targets.Target{{Name: "x"}}, Collectors: []collectors.Collector{okCollector(bundle.CPU)},
				Duration: 50 * time.Millisecond, Out: base, OutUnique: true,
			})
			results <- res{out, err}
		}()
	}
	dirs := map[string]bool{}
	for range 4 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.out.ExitCode() != 0 {
			t.Errorf("%s: exit %d", r.out.Dir, r.out.ExitCode())
		}
		dirs[r.out.Dir] = true
		m, err := bundle.Read(r.out.Dir)
		if err != nil || m.Status != bundle.StatusOK || len(m.Targets) != 1 {
			t.Errorf("%s: %v %+v", r.out.Dir, err, m)
		}
	}
	if len(dirs) != 4 {
		t.Errorf("four captures wrote %d bundles: %v", len(dirs), dirs)
	}
	// An explicit --out that is taken is refused, never shared.
	_, err := Run(context.Background(), Options{Targets: []targets.Target{{Name: "x"}}, Collectors: []collectors.Collector{okCollector(bundle.CPU)},
		Duration: 10 * time.Millisecond, Out: base})
	if err == nil || !strings.Contains(err.Error(), "exists and is not empty") {
		t.Errorf("explicit taken --out: %v", err)
	}
}

func TestRunRefusesNamesSharingADirectory(t *testing.T) {
	_, err := Run(context.Background(), Options{
		Targets:    []targets.Target{{Name: "a"}, {Name: "a."}},
		Collectors: []collectors.Collector{okCollector(bundle.CPU)}, Duration: 10 * time.Millisecond,
		Out: filepath.Join(t.TempDir(), "b"),
	})
	if err == nil || !strings.Contains(err.Error(), `"a" and "a."`) {
		t.Errorf("targets a and a.: %v", err)
	}
}

// A Ctrl-C after the window, during the merges or the report, stops the
// work left; the manifest says so and the capture is partial.
func TestRunInterruptAfterWindow(t *testing.T) {
	stop := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, m := runFake(t, ctx, Options{
		Targets: []targets.Target{{Name: "x"}}, Collectors: []collectors.Collector{okCollector(bundle.CPU, bundle.Heap)},
		Duration: 50 * time.Millisecond, Stop: stop,
		Render: func(dir string, m *bundle.Manifest) error {
			close(stop) // first Ctrl-C while the report is written
			cancel()    // and the second
			time.Sleep(time.Second)
			return nil
		},
	})
	if m.Status != bundle.StatusPartial || !strings.Contains(m.Reason, "interrupted after the window") || m.Report != "" {
		t.Errorf("status %s reason %q report %q", m.Status, m.Reason, m.Report)
	}
	if out.ExitCode() != 3 {
		t.Errorf("exit %d, want 3", out.ExitCode())
	}
	if p := m.Target("x").Profile(bundle.CPU); p.Status != bundle.StatusOK || p.Path == "" {
		t.Errorf("profiles captured in the window stay: %+v", p)
	}
}

// A full disk: the capture says so, the manifest on disk has final
// statuses only, and every profile it calls ok is there.
func TestRunDiskFull(t *testing.T) {
	testreq.Root(t, "mounts a 48 KiB tmpfs")
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", dir).CombinedOutput(); err != nil {
		testreq.Missing(t, "mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", dir).Run()
	// Each profile is about 12 KiB compressed (names that do not compress).
	big := func(name string) *profile.Profile {
		p := cannedProfile(name, 1, 1)
		rnd := make([]byte, 9000)
		_, _ = rand.Read(rnd)
		p.Function[0].Name = name + hex.EncodeToString(rnd)
		return p
	}
	kinds := []bundle.Kind{bundle.CPU, bundle.Wall, bundle.OffCPU, bundle.Heap, bundle.Allocs, bundle.Goroutine, bundle.Mutex, bundle.Block}
	fc := &cannedCollector{kinds: kinds, behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
		r := ok(w, k, "")
		r.Profile = big(tg.Name + string(k))
		emit(r)
	}}
	var notes []string
	var mu sync.Mutex
	out, err := Run(context.Background(), Options{
		Targets: []targets.Target{{Name: "a"}, {Name: "b"}}, Collectors: []collectors.Collector{fc},
		Duration: 50 * time.Millisecond, Out: filepath.Join(dir, "bundle"),
		Events: func(e Event) {
			if e.Type == EventNote {
				mu.Lock()
				notes = append(notes, e.Msg)
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(notes, func(s string) bool { return strings.Contains(s, "the disk is full") }) {
		t.Errorf("no disk-full note in %q", notes)
	}
	m, err := bundle.Read(out.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if out.ExitCode() != 3 || m.Status != bundle.StatusPartial {
		t.Errorf("exit %d status %s, want 3 and partial", out.ExitCode(), m.Status)
	}
	okCount := 0
	for _, bt := range m.Targets {
		for _, p := range bt.Profiles {
			if !p.Status.Final() {
				t.Errorf("%s %s: %s on disk after the capture", bt.Name, p.Kind, p.Status)
			}
			if p.Status == bundle.StatusOK {
				okCount++
				if _, err := bundle.LoadProfile(out.Dir, p.Path); err != nil {
					t.Errorf("%s %s is ok in the manifest but: %v", bt.Name, p.Kind, err)
				}
			} else if !strings.Contains(p.Error, "no space left") {
				t.Errorf("%s %s: %s %q", bt.Name, p.Kind, p.Status, p.Error)
			}
		}
	}
	if okCount == 0 || okCount == 16 {
		t.Errorf("%d of 16 profiles ok: the test should fill the disk part way", okCount)
	}
	if _, err := os.Stat(filepath.Join(out.Dir, bundle.ReserveFile)); err == nil {
		t.Error("the reserve file was left in the bundle")
	}
}

func TestRunBoundsProfiles(t *testing.T) {
	fc := &cannedCollector{kinds: []bundle.Kind{bundle.CPU}, behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
		r := ok(w, k, "")
		p := cannedProfile("leaf", 0, 0)
		for i := range 300 { // 300 distinct two-frame stacks
			f := &profile.Function{ID: uint64(i + 2), Name: fmt.Sprintf("caller%d", i)}
			l := &profile.Location{ID: uint64(i + 2), Line: []profile.Line{{Function: f}}}
			p.Function, p.Location = append(p.Function, f), append(p.Location, l)
			p.Sample = append(p.Sample, &profile.Sample{Location: []*profile.Location{p.Location[0], l}, Value: []int64{1}})
		}
		r.Profile = p
		emit(r)
	}}
	out, m := runFake(t, context.Background(), Options{
		Targets: []targets.Target{{Name: "x"}}, Collectors: []collectors.Collector{fc},
		Limits: pprofutil.Limits{MaxDepth: 64, MaxSamples: 100},
	})
	e := m.Target("x").Profile(bundle.CPU)
	if e.Status != bundle.StatusOK || e.Samples != 100 || !strings.Contains(e.Note, "201 lighter stacks") {
		t.Fatalf("entry %+v", e)
	}
	p, err := bundle.LoadProfile(out.Dir, e.Path)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, s := range p.Sample {
		sum += s.Value[0]
	}
	if sum != 300 {
		t.Errorf("total %d after the cut, want 300", sum)
	}
}

// preparingCollector needs set-up time before it can sample.
type preparingCollector struct {
	cannedCollector
	setup time.Duration
	never bool // never says it is ready
}

func (p *preparingCollector) Prepares() bool { return true }
func (p *preparingCollector) Name() string   { return "prep" }
func (p *preparingCollector) Collect(ctx context.Context, w *collectors.Window, t *targets.Target, kinds []bundle.Kind, emit collectors.Emit) {
	time.Sleep(p.setup)
	if !p.never {
		collectors.Ready(ctx)
	}
	if !w.WaitOpen(ctx) {
		return
	}
	p.cannedCollector.Collect(ctx, w, t, kinds, emit)
}

// The window opens when every collector that needs set-up is ready, so
// profiles cover it; one that starts late is partial with its coverage.
func TestRunWindowOpensWhenCollectorsAreReady(t *testing.T) {
	var readyAt time.Time
	prep := &preparingCollector{setup: 400 * time.Millisecond, cannedCollector: cannedCollector{kinds: []bundle.Kind{bundle.OffCPU},
		behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
			<-w.Done()
			emit(ok(w, k, "blocked"))
		}}}
	late := &cannedCollector{kinds: []bundle.Kind{bundle.CPU}, behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
		readyAt = time.Now()
		<-w.Done()
		r := ok(w, k, "spin")
		r.Start = w.Start.Add(w.Deadline.Sub(w.Start) * 6 / 10) // sampled the last 40% only
		emit(r)
	}}
	start := time.Now()
	out, m := runFake(t, context.Background(), Options{
		Targets: []targets.Target{{Name: "x"}}, Collectors: []collectors.Collector{prep, late},
		Duration: time.Second,
	})
	ws, _ := time.Parse(bundle.TimeFormat, m.Window.Start)
	if ws.Sub(start) < 350*time.Millisecond {
		t.Errorf("the window opened %v after the start, before the collector was ready (400ms)", ws.Sub(start))
	}
	if readyAt.Before(ws) {
		t.Errorf("a collector without set-up started %v before the window opened", ws.Sub(readyAt))
	}
	if p := m.Target("x").Profile(bundle.OffCPU); p.Status != bundle.StatusOK || (p.Coverage != 0 && p.Coverage < bundle.MinCoverage) {
		t.Errorf("offcpu: %+v", p)
	}
	p := m.Target("x").Profile(bundle.CPU)
	// It sampled from 60% of the planned window to the window's real end
	// (later than planned on a loaded machine): well under MinCoverage.
	if p.Status != bundle.StatusPartial || p.Coverage < 0.2 || p.Coverage >= 0.75 || !strings.Contains(p.Error, "of the window") {
		t.Errorf("late cpu: %+v", p)
	}
	if out.ExitCode() != 3 {
		t.Errorf("exit %d", out.ExitCode())
	}
	if we, _ := time.Parse(bundle.TimeFormat, m.Window.End); we.Sub(ws) > 1500*time.Millisecond {
		t.Errorf("window %v long for 1s", we.Sub(ws))
	}
}

func TestRunReadyTimeout(t *testing.T) {
	prep := &preparingCollector{never: true, cannedCollector: cannedCollector{kinds: []bundle.Kind{bundle.OffCPU},
		behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
			<-w.Done()
			emit(ok(w, k, "blocked"))
		}}}
	var notes []string
	var mu sync.Mutex
	start := time.Now()
	_, m := runFake(t, context.Background(), Options{
		Targets: []targets.Target{{Name: "x"}}, Collectors: []collectors.Collector{prep},
		Duration: 200 * time.Millisecond, ReadyTimeout: 300 * time.Millisecond,
		Events: func(e Event) {
			if e.Type == EventNote {
				mu.Lock()
				notes = append(notes, e.Msg)
				mu.Unlock()
			}
		},
	})
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	if !slices.ContainsFunc(notes, func(s string) bool {
		return strings.Contains(s, "not ready after 300ms") && strings.Contains(s, "prep for x")
	}) {
		t.Errorf("notes %q", notes)
	}
	if m.Window.Start == "" {
		t.Error("the window never opened")
	}
}

// Collectors' temporary files live inside the bundle and are gone at the end.
func TestRunTempFilesInsideTheBundle(t *testing.T) {
	var seen string
	fc := &cannedCollector{kinds: []bundle.Kind{bundle.CPU}, behave: func(ctx context.Context, w *collectors.Window, tg *targets.Target, k bundle.Kind, emit collectors.Emit) {
		seen = w.TempDir
		emit(ok(w, k, "f"))
	}}
	out, _ := runFake(t, context.Background(), Options{Targets: []targets.Target{{Name: "x"}}, Collectors: []collectors.Collector{fc}})
	if seen != filepath.Join(out.Dir, bundle.TempDir) {
		t.Errorf("collectors were given %q, want the bundle's %s", seen, bundle.TempDir)
	}
	if _, err := os.Stat(seen); !os.IsNotExist(err) {
		t.Errorf("%s left after the capture: %v", seen, err)
	}
}
