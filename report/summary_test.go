package report

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/flame"
)

const demo = "github.com/profcap/profcap/internal/demo."

// stackProfile builds a profile of one sample type from folded-style
// stacks (root first, ";"-separated) and their values.
func stackProfile(typ, unit string, stacks map[string]int64) *profile.Profile {
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: typ, Unit: unit}}, PeriodType: &profile.ValueType{Type: typ, Unit: unit}, Period: 1}
	locs := map[string]*profile.Location{}
	loc := func(name string) *profile.Location {
		if l, ok := locs[name]; ok {
			return l
		}
		f := &profile.Function{ID: uint64(len(p.Function) + 1), Name: name}
		l := &profile.Location{ID: uint64(len(p.Location) + 1), Line: []profile.Line{{Function: f}}}
		p.Function, p.Location = append(p.Function, f), append(p.Location, l)
		locs[name] = l
		return l
	}
	for st, v := range stacks {
		names := strings.Split(st, ";")
		s := &profile.Sample{Value: []int64{v}}
		for i := len(names) - 1; i >= 0; i-- {
			s.Location = append(s.Location, loc(names[i]))
		}
		p.Sample = append(p.Sample, s)
	}
	return p
}

// writeKinds writes a bundle of one target per profile of each kind, and
// their merges.
func writeKinds(t *testing.T, byKind map[bundle.Kind]map[string]*profile.Profile, labels map[string]map[string]string) (string, *bundle.Manifest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "b")
	m := &bundle.Manifest{ID: "test", Status: "ok", Merged: []bundle.Merged{},
		Window: bundle.Window{Start: "2026-12-01T10:00:00Z", End: "2026-12-01T10:00:10Z", RequestedSeconds: 10}}
	w, err := bundle.Create(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]*bundle.Target{}
	for _, k := range bundle.AllKinds {
		profs, ok := byKind[k]
		if !ok {
			continue
		}
		var all []*profile.Profile
		var names []string
		for name, p := range profs {
			rel := "targets/" + name + "/" + string(k) + ".pb.gz"
			if _, err := w.WriteProfile(rel, p); err != nil {
				t.Fatal(err)
			}
			tg := targets[name]
			if tg == nil {
				tg = &bundle.Target{Name: name, Labels: labels[name], Status: "ok"}
				targets[name] = tg
				m.Targets = append(m.Targets, tg)
			}
			tg.Profiles = append(tg.Profiles, &bundle.Profile{Kind: k, Collector: "pprof", Status: "ok", Path: rel, Samples: len(p.Sample)})
			c := p.Copy()
			for _, s := range c.Sample {
				s.Label = map[string][]string{"target": {name}}
			}
			all = append(all, c)
			names = append(names, name)
		}
		merged, err := profile.Merge(all)
		if err != nil {
			t.Fatal(err)
		}
		merged.DurationNanos = 10e9
		rel := "merged/" + string(k) + ".pb.gz"
		if _, err := w.WriteProfile(rel, merged); err != nil {
			t.Fatal(err)
		}
		m.Merged = append(m.Merged, bundle.Merged{Kind: k, Path: rel, Targets: names})
	}
	return dir, m
}

// A wall-clock profile of a Go service is mostly idle goroutines; the
// summary names the idle share and, of the rest, the code that waits.
func TestSummaryIdleAndWaits(t *testing.T) {
	wall := stackProfile("time", "nanoseconds", map[string]int64{
		"runtime.goexit;net/http.(*Server).Serve.gowrap3;net/http.(*conn).serve;bufio.(*Reader).Peek;net/http.(*connReader).Read;net.(*conn).Read;internal/poll.runtime_pollWait;runtime.netpollblock;runtime.gopark": 600e9,
		"runtime.goexit;" + demo + "RunService.func15;" + demo + "janitor;runtime.selectgo;runtime.gopark":                                                                                                            100e9,
		"runtime.goexit;" + demo + "fgprofHandler;runtime.selectgo;runtime.gopark":                                                                                                                                    100e9,
		"runtime.goexit;net/http.(*conn).serve;net/http.HandlerFunc.ServeHTTP;" + demo + "(*worker).runStep;" + demo + "(*fakeDB).query;" + demo + "(*fakeDB).waitForReply;runtime.selectgo;runtime.gopark":           60e9,
		"runtime.goexit;net/http.(*conn).serve;net/http.HandlerFunc.ServeHTTP;" + demo + "(*worker).runStep;" + demo + "(*fakeDB).query;" + demo + "(*fakeDB).acquireConn;runtime.selectgo;runtime.gopark":            30e9,
		"runtime.goexit;net/http.(*conn).serve;net/http.HandlerFunc.ServeHTTP;" + demo + "(*worker).runStep;" + demo + "(*worker).computeChecksum;crypto/internal/fips140/sha256.blockSHANI.abi0":                     10e9,
	})
	offcpu := stackProfile("offcpu", "nanoseconds", map[string]int64{
		"runtime.mcall;runtime.stopm;runtime.notesleep;runtime.futex.abi0;__schedule":                90e9,
		"runtime.goexit;net/http.(*conn).serve;net.(*conn).Write;syscall.write;__schedule":           6e9,
		"[preempted: runnable, waiting for a CPU];runtime.goexit;" + demo + "(*worker).encodeReport": 4e9,
	})
	dir, m := writeKinds(t, map[bundle.Kind]map[string]*profile.Profile{bundle.Wall: {"worker-1": wall}, bundle.OffCPU: {"worker-1": offcpu}}, nil)
	s, err := Summarize(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Kinds) != 2 || s.Kinds[0].Kind != bundle.Wall {
		t.Fatalf("kinds %+v", s.Kinds)
	}
	w := s.Kinds[0]
	if w.IdleShare < 0.88 || w.IdleShare > 0.89 { // 800 of 900 s
		t.Errorf("wall idle share %.3f, want 0.889", w.IdleShare)
	}
	if len(w.Top) == 0 || w.Top[0].Short != "demo.(*fakeDB).waitForReply" || w.Top[0].Via != "select" || w.Top[0].Share < 0.59 || w.Top[0].Share > 0.61 {
		t.Errorf("wall top %+v, want demo.(*fakeDB).waitForReply at 60%% of the rest, via select", w.Top)
	}
	if len(s.Waits) != 2 || s.Waits[0].Top[0].Short != "demo.(*fakeDB).waitForReply" {
		t.Fatalf("waits %+v", s.Waits)
	}
	// Running code is not waiting: computeChecksum is in the kind's top
	// list but not in what the cluster waits on.
	for _, x := range s.Waits[0].Top {
		if strings.Contains(x.Name, "computeChecksum") {
			t.Errorf("a running stack counted as a wait: %+v", x)
		}
	}
	o := s.Kinds[1]
	if o.IdleShare < 0.89 || o.IdleShare > 0.91 {
		t.Errorf("offcpu idle share %.3f, want 0.9 (the scheduler thread)", o.IdleShare)
	}
	for _, x := range o.Top {
		if strings.Contains(x.Name, "futex") || x.Name == "__schedule" {
			t.Errorf("offcpu top names the kernel or the runtime: %+v", o.Top)
		}
	}
	lines := strings.Join(SummaryLines(s), "\n")
	for _, want := range []string{"wall", "89% idle", "demo.(*fakeDB).waitForReply 60% (select)", "waiting on:"} {
		if !strings.Contains(lines, want) {
			t.Errorf("summary lines lack %q:\n%s", want, lines)
		}
	}
	var page bytes.Buffer
	if err := Render(&page, dir, m); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "Show idle") && !strings.Contains(page.String(), `"idle":`) {
		t.Error("the page's wall graph has no idle frame")
	}
}

func TestUnitsAndPeriods(t *testing.T) {
	pt := func(typ, unit string, period int64) *profile.Profile {
		return &profile.Profile{PeriodType: &profile.ValueType{Type: typ, Unit: unit}, Period: period}
	}
	for _, tc := range []struct {
		k    bundle.Kind
		p    *profile.Profile
		want string
	}{
		{bundle.OffCPU, pt("offcpu", "nanoseconds", 1), "every context switch"},
		{bundle.CPU, pt("cpu", "nanoseconds", 10e6), "10 ms (100 Hz)"},
		{bundle.Block, pt("contentions", "count", 1), "1 contention"},
		{bundle.Mutex, pt("contentions", "count", 5), "5 contentions"},
		{bundle.Goroutine, pt("goroutine", "count", 1), "1 goroutine"},
		{bundle.Heap, pt("space", "bytes", 512<<10), "one sample per 512 KiB allocated"},
		{bundle.Async, &profile.Profile{}, ""},
		{bundle.CPU, pt("cpu", "nanoseconds", 0), ""},
	} {
		if got := describePeriod(tc.k, tc.p); got != tc.want {
			t.Errorf("describePeriod(%s, %+v) = %q, want %q", tc.k, tc.p.PeriodType, got, tc.want)
		}
	}
	for in, want := range map[string]string{"0s (1000000000 Hz)": "every context switch", "1 contentions/count": "1 contention", "1 goroutine/count": "1 goroutine", "10.101ms (99 Hz)": "10.101ms (99 Hz)"} {
		k := bundle.Block
		if strings.HasPrefix(in, "0s") {
			k = bundle.OffCPU
		}
		if got := periodText(k, in); got != want {
			t.Errorf("periodText(%q) = %q, want %q", in, got, want)
		}
	}
	for _, tc := range []struct {
		v         int64
		typ, unit string
		want      string
	}{{142, "goroutine", "count", "142 goroutines"}, {1, "contentions", "count", "1 contention"}, {1024, "samples", "count", "1,024 samples"}, {1500000, "delay", "nanoseconds", "1.50 ms"}} {
		if got := formatValue(tc.v, tc.typ, tc.unit); got != tc.want {
			t.Errorf("formatValue(%d, %s) = %q, want %q", tc.v, tc.typ, got, tc.want)
		}
	}
}

// observationsOf draws n sampling ticks from a distribution over functions.
func ticks(rng *rand.Rand, n int, dist map[string]float64) map[string]int64 {
	keys := make([]string, 0, len(dist))
	for k := range dist {
		keys = append(keys, k)
	}
	// Sorted so the draw is reproducible.
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] < keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	out := map[string]int64{}
	for range n {
		u := rng.Float64()
		for _, k := range keys {
			u -= dist[k]
			if u <= 0 {
				out[k]++
				break
			}
		}
	}
	return out
}

// Outliers: identical instances are alike at any sample count (two
// orchestrators of 26 samples spread over 20 functions scored 69.5 under
// the old L1 score); a sick instance among healthy ones differs and ranks
// first; a healthy one is not flagged because its peers include the sick.
func TestOutliersAlikeAndSick(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	spread := map[string]float64{}
	for i := range 20 {
		spread[fmt.Sprintf("main.f%02d", i)] = 1.0 / 20
	}
	healthy := map[string]float64{"main.handle": 0.5, "main.encode": 0.3, "main.hash": 0.2}
	sick := map[string]float64{"main.handle": 0.2, "main.encode": 0.2, "main.hash": 0.6}
	cpu := func(counts map[string]int64) *profile.Profile {
		p := cpuProfile(counts)
		return p
	}
	profs := map[string]*profile.Profile{
		"orch-1": cpu(ticks(rng, 26, spread)), "orch-2": cpu(ticks(rng, 26, spread)),
		"w-1": cpu(ticks(rng, 300, healthy)), "w-2": cpu(ticks(rng, 300, sick)), "w-3": cpu(ticks(rng, 300, healthy)), "w-4": cpu(ticks(rng, 300, healthy)),
	}
	labels := map[string]map[string]string{"orch-1": {"role": "orch"}, "orch-2": {"role": "orch"}, "w-1": {"role": "w"}, "w-2": {"role": "w"}, "w-3": {"role": "w"}, "w-4": {"role": "w"}}
	dir, m := writeKinds(t, map[bundle.Kind]map[string]*profile.Profile{bundle.CPU: profs}, labels)
	groups := outliers(dir, m, false)
	byRole := map[string]outlierGroup{}
	for _, g := range groups {
		byRole[g.Role] = g
	}
	for _, r := range byRole["orch"].Rows {
		if r.Differs || r.Score > 5 {
			t.Errorf("identical orchestrator %s: score %.1f, p %.3g, differs %v", r.Target, r.Score, r.P, r.Differs)
		}
	}
	w := byRole["w"]
	if len(w.Rows) != 4 || w.Rows[0].Target != "w-2" || !w.Rows[0].Differs || w.Rows[0].Function != "main.hash" {
		t.Fatalf("workers: %+v", w.Rows)
	}
	for _, r := range w.Rows[1:] {
		if r.Differs {
			t.Errorf("healthy %s differs: %+v", r.Target, r)
		}
	}
	// Reproducible: the same bundle gives the same p-values.
	again := outliers(dir, m, false)
	if fmt.Sprint(again) != fmt.Sprint(groups) {
		t.Error("outliers differ between two runs on one bundle")
	}
}

// Two instances that differ: the distance is the same from either side,
// so neither is an outlier; the group and the terminal say the pair
// differs, and a third instance names the odd one.
func TestOutliersPairDiffers(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	a := map[string]float64{"main.handle": 0.5, "main.encode": 0.3, "main.hash": 0.2}
	b := map[string]float64{"main.handle": 0.2, "main.encode": 0.2, "main.hash": 0.6}
	labels := map[string]map[string]string{"o-1": {"role": "o"}, "o-2": {"role": "o"}, "o-3": {"role": "o"}}
	pair := map[string]*profile.Profile{"o-1": cpuProfile(ticks(rng, 300, a)), "o-2": cpuProfile(ticks(rng, 300, b))}
	dir, m := writeKinds(t, map[bundle.Kind]map[string]*profile.Profile{bundle.CPU: pair}, labels)
	gs := outliers(dir, m, false)
	if len(gs) != 1 || len(gs[0].Rows) != 2 {
		t.Fatalf("groups %+v", gs)
	}
	for _, r := range gs[0].Rows {
		if r.Differs || !r.PairDiffers || r.Score < 20 {
			t.Errorf("pair row %s: differs %v, pair differs %v, score %.1f", r.Target, r.Differs, r.PairDiffers, r.Score)
		}
	}
	s := &bundle.Summary{Outliers: outlierSummaries(gs)}
	text := strings.Join(SummaryLines(s), "\n")
	if strings.Contains(text, "instances that differ") || strings.Count(text, "o (cpu)") != 1 {
		t.Errorf("summary of a pair that differs:\n%s", text)
	}
	pair["o-3"] = cpuProfile(ticks(rng, 300, a))
	dir, m = writeKinds(t, map[bundle.Kind]map[string]*profile.Profile{bundle.CPU: pair}, labels)
	gs = outliers(dir, m, false)
	if len(gs) != 1 || gs[0].Rows[0].Target != "o-2" || !gs[0].Rows[0].Differs || gs[0].Rows[1].Differs || gs[0].Rows[0].PairDiffers {
		t.Errorf("with a third: %+v", gs)
	}
}

func TestSummaryCountsAddUp(t *testing.T) {
	m := &bundle.Manifest{Targets: []*bundle.Target{
		{Name: "a", Profiles: []*bundle.Profile{{Kind: "cpu", Status: "ok"}, {Kind: "heap", Status: "partial"}, {Kind: "async", Status: "unsupported"}}},
		{Name: "b", Profiles: []*bundle.Profile{{Kind: "cpu", Status: "failed"}, {Kind: "heap", Status: "ok", Coverage: 0.5}}},
	}}
	c := countProfiles(m)
	if c.Requested != 5 || c.OK != 2 || c.Partial != 1 || c.Failed != 1 || c.Unsupported != 1 {
		t.Errorf("counts %+v", c)
	}
	inc := incomplete(m)
	if len(inc) != 3 { // a heap partial, b cpu failed, b heap at 50%
		t.Errorf("incomplete %+v", inc)
	}
}

func TestTimelineFromSecondLabels(t *testing.T) {
	p := cpuProfile(map[string]int64{"main.work": 1})
	p.Sample[0].NumLabel = map[string][]int64{bundle.SecondLabel: {3}, bundle.SecondsLabel: {2}}
	p.Sample[0].NumUnit = map[string][]string{bundle.SecondLabel: {bundle.SecondUnit}, bundle.SecondsLabel: {bundle.SecondUnit}}
	dir, m := writeKinds(t, map[bundle.Kind]map[string]*profile.Profile{bundle.CPU: {"a-1": p}}, nil)
	tl := buildTimeline(dir, m)
	if len(tl.Kinds) != 1 || tl.Seconds != 10 {
		t.Fatalf("timeline %+v", tl)
	}
	v := tl.Kinds[0].Rows[0].Values
	if v[3] != 5e6 || v[4] != 5e6 || v[2] != 0 || v[5] != 0 {
		t.Errorf("per-second values %v, want 5 ms in seconds 3 and 4", v)
	}
	if !strings.Contains(string(tl.Data), `"main.work"`) {
		t.Errorf("span data lacks the stacks: %s", tl.Data)
	}
}

// A Rust thread that sleeps in std's sleep, off-CPU as eBPF walks it on
// refsvc (make demo-rust): its root is libc's unexported start_thread
// (libc.so.6+0x891f4, Debian's libc has no .symtab) under std's thread
// entry frames. The wait is the sleep, not the unnamed root.
func TestWaiterRustThreadEntry(t *testing.T) {
	names := []string{"hrtimer_nanosleep", "do_syscall_64", "entry_SYSCALL_64_after_hwframe", "clock_nanosleep",
		"std::thread::functions::sleep", "std::sys::backtrace::_rust_begin_short_backtrace",
		"core::ops::function::FnOnce::call_once{{vtable.shim}}", "std::sys::pal::unix::thread::Thread::new::thread_start", "libc.so.6+0x891f4"}
	var fs []flame.Frame
	for i, n := range names {
		f := flame.Frame{Name: n, Lang: flame.LangRust}
		switch {
		case i < 3:
			f.Lang = flame.LangKernel
		case i == 3 || i == len(names)-1:
			f.Lang = flame.LangOther
		}
		fs = append(fs, f)
	}
	if key, _ := waiter(fs); key != "std::thread::functions::sleep" {
		t.Errorf("waiter = %q, want std::thread::functions::sleep", key)
	}
	// With the service's own frame above std's, that frame.
	fs = append(fs[:5], append([]flame.Frame{{Name: "refsvc::work::compact_loop", Lang: flame.LangRust}}, fs[5:]...)...)
	if key, via := waiter(fs); key != "refsvc::work::compact_loop" {
		t.Errorf("waiter = %q via %q, want refsvc::work::compact_loop", key, via)
	}
}

// Unnamed tasks are named by where they were spawned; tokio's own worker
// threads (blocking tasks busy their whole life, 91% of make demo-rust's
// async busy time as "unnamed") by what they are.
func TestTaskName(t *testing.T) {
	fr := func(names ...string) []flame.Frame {
		var fs []flame.Frame
		for _, n := range names {
			fs = append(fs, flame.Frame{Name: n})
		}
		return fs
	}
	for _, tc := range []struct {
		fs   []flame.Frame
		want string
	}{
		{fr("truth-spinner", "refsvc/src/truth.rs:277:52", "task"), "truth-spinner"},
		{fr("unnamed", "/root/.cargo/registry/src/index.example/tokio-1.54.1/src/runtime/scheduler/multi_thread/worker.rs:515:13", "blocking"), "[tokio runtime worker thread]"},
		{fr("unnamed", "/root/.cargo/registry/src/index.example/axum-0.8.9/src/serve/mod.rs:389:5", "task"), "unnamed task at axum-0.8.9/src/serve/mod.rs:389:5"},
		{fr("unnamed", "refsvc/src/main.rs:75:24", "block_on"), "unnamed task at refsvc/src/main.rs:75:24"},
		{fr("unnamed"), "unnamed"},
	} {
		if got := taskName(tc.fs); got != tc.want {
			t.Errorf("taskName(%v) = %q, want %q", tc.fs, got, tc.want)
		}
	}
}

// On-CPU outliers leave out the capture's own cost and the Go runtime's
// threads: stacks of fgprof and of the scheduler alone are no instance's
// work.
func TestOutlierCPUIgnoresProfilerAndRuntime(t *testing.T) {
	fr := func(names ...string) []flame.Frame {
		var fs []flame.Frame
		for _, n := range names {
			l := flame.LangGo
			if strings.HasPrefix(n, "k:") {
				n, l = n[2:], flame.LangKernel
			}
			fs = append(fs, flame.Frame{Name: n, Lang: l})
		}
		return fs
	}
	if !goRuntimeOnly(fr("k:__schedule", "runtime.futex.abi0", "runtime.schedule", "runtime.mstart.abi0")) {
		t.Error("a scheduler stack is not the runtime's alone")
	}
	if goRuntimeOnly(fr("runtime.mallocgc", "main.build", "runtime.main")) || goRuntimeOnly(fr("k:do_syscall_64")) {
		t.Error("a stack with user code (or none of Go) is the runtime's alone")
	}
	if !flame.ProfilerStack(fr("runtime.gentraceback", "github.com/felixge/fgprof.(*profiler).GoroutineProfile", "runtime.goexit")) {
		t.Error("fgprof's stack is not a profiler's")
	}
	if !flame.ProfilerStack(fr("k:bpf_prog_8dcfeb91607f15df_take_user_stack", "k:bpf_trace_run2", "k:__schedule", "main.wait")) {
		t.Error("a BPF program's stack walk at a switch is not the capture's cost")
	}
	// Two identical instances, one of which also ran the profiler and the
	// GC a lot more: alike.
	rng := rand.New(rand.NewPCG(5, 6))
	work := map[string]float64{"main.handle": 0.6, "main.encode": 0.4}
	a, b := cpuProfile(ticks(rng, 300, work)), cpuProfile(ticks(rng, 300, work))
	noisy := cpuProfile(map[string]int64{"github.com/felixge/fgprof.(*profiler).GoroutineProfile": 150, "runtime.gcBgMarkWorker": 150})
	for _, s := range noisy.Sample {
		s.Location = s.Location[:1] // a GC worker runs under no main.main
	}
	b.Sample = append(b.Sample, noisy.Sample...)
	b.Location = append(b.Location, noisy.Location...)
	b.Function = append(b.Function, noisy.Function...)
	for i, l := range b.Location {
		l.ID = uint64(i + 1)
	}
	for i, f := range b.Function {
		f.ID = uint64(i + 1)
	}
	labels := map[string]map[string]string{"w-1": {"role": "w"}, "w-2": {"role": "w"}, "w-3": {"role": "w"}}
	dir, m := writeKinds(t, map[bundle.Kind]map[string]*profile.Profile{bundle.CPU: {"w-1": a, "w-2": b, "w-3": cpuProfile(ticks(rng, 300, work))}}, labels)
	for _, g := range outliers(dir, m, false) {
		for _, r := range g.Rows {
			if r.Differs || r.PairDiffers {
				t.Errorf("%s differs (%s %.0f%% vs %.0f%%, score %.1f)", r.Target, r.Function, 100*r.Share, 100*r.Base, r.Score)
			}
		}
	}
}

// A wakeup sample (offwaketime's layout, leaf first: the waker's name, its
// stack from root to leaf, "--", the blocked stack) is the code that
// waited, woken by the waker's innermost code; blocks without a waker say
// why.
func TestWakeupAttribution(t *testing.T) {
	fr := func(names ...string) []flame.Frame {
		var fs []flame.Frame
		for _, n := range names {
			f := flame.Frame{Name: n, Lang: flame.LangOther}
			if strings.HasPrefix(n, "do_") || strings.HasPrefix(n, "futex") || strings.HasPrefix(n, "entry_") || n == "try_to_wake_up" {
				f.Lang = flame.LangKernel
			}
			fs = append(fs, f)
		}
		return fs
	}
	blocked := []string{"futex_wait", "do_syscall_64", "entry_SYSCALL_64_after_hwframe", "__GI___futex_abstimed_wait", "pool_get", "handle_step", "main"}
	for _, tc := range []struct {
		waker    []string
		key, via string
	}{
		{[]string{"reaper", "main", "reap_idle", "pool_put", "__GI___futex_wake", "entry_SYSCALL_64_after_hwframe", "do_syscall_64", "try_to_wake_up"}, "pool_get", "woken by pool_put"},
		{[]string{"[not woken: still blocked at the window's end]"}, "pool_get", "not woken in the window"},
		{[]string{"[interrupt]", "[in interrupt]", "try_to_wake_up"}, "pool_get", "woken by an interrupt"},
	} {
		a := newAttributor(bundle.Wakeup)
		fs := fr(append(append(tc.waker, flame.WakeupSeparator), blocked...)...)
		var s profile.Sample
		kernel := &profile.Mapping{ID: 1, File: "[kernel.kallsyms]"}
		for i := range fs {
			l := &profile.Location{ID: uint64(i + 1), Line: []profile.Line{{Function: &profile.Function{Name: fs[i].Name}}}}
			if fs[i].Lang == flame.LangKernel {
				l.Mapping = kernel
			}
			s.Location = append(s.Location, l)
		}
		at := a.compute(&s)
		if at.Key != tc.key || at.Via != tc.via {
			t.Errorf("waker %v: %q via %q, want %q via %q", tc.waker, at.Key, at.Via, tc.key, tc.via)
		}
	}
}

// burstySteps simulates one instance of a worker over a window of secs
// seconds: each second a few steps (1 to 3, as a demo worker runs), each a
// burst of on-CPU ticks in the step's functions, the kind of step drawn at
// random; sick adds 8 ticks of main.computeChecksum to every step. It returns the ticks by
// function and second.
func burstySteps(rng *rand.Rand, secs int, sick bool) map[[2]string]int64 {
	kinds := []map[string]int64{
		{"main.fetch": 3, "main.generateRows": 1},
		{"main.generateRows": 8, "main.sortRows": 4, "main.computeChecksum": 3},
		{"main.generateRows": 2, "main.compressReport": 8},
	}
	out := map[[2]string]int64{}
	for sec := range secs {
		for range 1 + rng.IntN(3) {
			for fn, n := range kinds[rng.IntN(len(kinds))] {
				out[[2]string{fn, fmt.Sprint(sec)}] += n
			}
			if sick {
				out[[2]string{"main.computeChecksum", fmt.Sprint(sec)}] += 8
			}
		}
	}
	return out
}

// burstyObs turns burstySteps' ticks into observations, with their second
// or (timed false) without.
func burstyObs(ticks map[[2]string]int64, ks *keys, timed bool) []obs {
	var out []obs
	for k, n := range ticks {
		blk := -1
		if timed {
			fmt.Sscan(k[1], &blk)
		}
		for range n {
			out = append(out, obs{key: int32(ks.id(k[0])), blk: int32(blk), v: 1})
		}
	}
	// Map order is random: sort for a reproducible test.
	slices.SortFunc(out, func(a, b obs) int { return cmp.Or(cmp.Compare(a.blk, b.blk), cmp.Compare(a.key, b.key)) })
	return out
}

// TestOutliersBurstySeconds: identical workers whose CPU comes in bursts
// of a step's ticks differ tick by tick, but not second by second. In 40
// windows of three healthy instances, drawing ticks one by one flags a
// healthy instance in many; drawing whole seconds in at most one; a sick
// instance is flagged either way.
func TestOutliersBurstySeconds(t *testing.T) {
	const windows, secs = 40, 10
	flagged := func(insts [][]obs, nkeys int, seed uint64) (healthy int, sick bool, f fit) {
		peers := peerSets(insts, nkeys)
		for i, in := range insts {
			var ps [][]obs
			for _, j := range peers[i] {
				ps = append(ps, insts[j])
			}
			fi := compare(in, ps, nkeys, seed+uint64(i))
			differs := fi.P < differP && 100*(fi.Distance-fi.Noise) >= minScore
			if i == 0 {
				sick, f = differs, fi
			} else if differs {
				healthy++
			}
		}
		return healthy, sick, f
	}
	var byTick, bySecond, sickByTick, sickBySecond int
	var sickFit fit
	for w := range windows {
		rng := rand.New(rand.NewPCG(uint64(w), 7))
		var ticks []map[[2]string]int64
		for i := range 4 {
			// Instance 0 is sick in the second set of three.
			ticks = append(ticks, burstySteps(rng, secs, i == 0))
		}
		for _, timed := range []bool{false, true} {
			ks := &keys{ids: map[string]int{}}
			var healthy, withSick [][]obs
			for i, tk := range ticks {
				o := burstyObs(tk, ks, timed)
				if i > 0 {
					healthy = append(healthy, o)
				}
				if i != 3 {
					withSick = append(withSick, o)
				}
			}
			h, _, _ := flagged(healthy, len(ks.names), uint64(w))
			_, sick, f := flagged(withSick, len(ks.names), uint64(w)+100)
			if timed {
				if h > 0 {
					bySecond++
				}
				if sick {
					sickBySecond++
				}
				sickFit = f
				if f.Blocks != secs {
					t.Fatalf("window %d: the sick instance drawn in %d blocks, want %d seconds", w, f.Blocks, secs)
				}
			} else {
				if h > 0 {
					byTick++
				}
				if sick {
					sickByTick++
				}
				if f.Blocks != 0 {
					t.Fatalf("untimed observations drawn in %d blocks", f.Blocks)
				}
			}
		}
	}
	t.Logf("%d windows of 3 identical bursty workers: a healthy one flagged in %d drawing ticks, %d drawing seconds; the sick one flagged in %d and %d (last: distance %.1f, noise %.1f, p %.4f)",
		windows, byTick, bySecond, sickByTick, sickBySecond, 100*sickFit.Distance, 100*sickFit.Noise, sickFit.P)
	if byTick < 4 {
		t.Errorf("drawing ticks one by one flagged a healthy bursty worker in %d of %d windows: the simulated bursts are too weak to test the block permutation", byTick, windows)
	}
	if bySecond > 1 {
		t.Errorf("drawing whole seconds flagged a healthy worker in %d of %d windows", bySecond, windows)
	}
	if sickBySecond < windows-1 {
		t.Errorf("drawing whole seconds flagged the sick worker in %d of %d windows", sickBySecond, windows)
	}
}
