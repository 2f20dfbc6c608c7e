package pyroscopetest

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
)

// KindsTargets are the targets WriteKindsBundle writes, with their kinds.
var KindsTargets = map[string][]string{
	"orchestration-1": {"cpu", "wall", "heap", "allocs", "goroutine", "mutex", "block"},
	"worker-rust-1":   {"cpu", "offcpu", "wakeup", "async"},
}

// WriteKindsBundle writes a bundle whose window starts at start (give a
// recent time: a real server refuses profiles older than its ingestion
// window) into a new directory under t.TempDir() and returns it: every
// kind profcap pushes, shaped as its collectors write them. The Go kinds
// (orchestration-1, labels role and k8s.pod) have the Go runtime's sample
// and period types, a goroutine profile with two stackless goroutines and
// pprof.Do labels on cpu samples; worker-rust-1 has perf's cpu and offcpu
// (period types as perfscript writes them), eBPF's wakeup and tokio-console's async
// profile: no period type, and sample labels named as the console names
// task fields (task.id, tracing.target), which Pyroscope v1.6 refuses.
// The bundle id is derived from start, so two bundles at different
// starts never share series.
func WriteKindsBundle(t testing.TB, start time.Time) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "capture")
	end := start.Add(10 * time.Second)
	id := start.UTC().Format("20060102T150405Z") + "-kinds-" + fmt.Sprintf("%06x", start.UnixNano()&0xffffff)
	m := &bundle.Manifest{
		ID:      id,
		Created: start.Format(time.RFC3339),
		Status:  "ok",
		Window:  bundle.Window{Start: start.Format(bundle.TimeFormat), End: end.Format(bundle.TimeFormat), RequestedSeconds: 10},
	}
	w, err := bundle.Create(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]map[string]string{
		"orchestration-1": {"role": "orchestration", "k8s.pod": "orchestration-1-7f9c"},
		"worker-rust-1":   {"service": "workers", "language": "rust"},
	}
	for _, name := range []string{"orchestration-1", "worker-rust-1"} {
		bt := &bundle.Target{Name: name, Labels: labels[name], Status: "ok"}
		for _, kind := range KindsTargets[name] {
			p := KindProfile(kind, name)
			rel := fmt.Sprintf("targets/%s/%s.pb.gz", name, kind)
			n, err := w.WriteProfile(rel, p)
			if err != nil {
				t.Fatal(err)
			}
			ps, pe := start.Add(20*time.Millisecond), end.Add(-50*time.Millisecond)
			if !bundle.Kind(kind).IsDelta() {
				ps, pe = end.Add(-200*time.Millisecond), end.Add(-150*time.Millisecond)
			}
			bt.Profiles = append(bt.Profiles, &bundle.Profile{
				Kind: bundle.Kind(kind), Collector: "test", Status: "ok", Path: rel, Bytes: n, Samples: len(p.Sample),
				Start: ps.Format(bundle.TimeFormat), End: pe.Format(bundle.TimeFormat),
			})
		}
		if err := w.Update(func(m *bundle.Manifest) { m.Targets = append(m.Targets, bt) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// KindProfile returns a profile of kind as profcap's collector of it
// writes one (see WriteKindsBundle), with stacks under main.TARGET.
func KindProfile(kind, target string) *profile.Profile {
	vt := func(t, u string) *profile.ValueType { return &profile.ValueType{Type: t, Unit: u} }
	var p *profile.Profile
	switch kind {
	case "cpu":
		p = &profile.Profile{SampleType: []*profile.ValueType{vt("samples", "count"), vt("cpu", "nanoseconds")}, PeriodType: vt("cpu", "nanoseconds"), Period: 10_000_000}
	case "wall":
		p = &profile.Profile{SampleType: []*profile.ValueType{vt("samples", "count"), vt("time", "nanoseconds")}, PeriodType: vt("wallclock", "nanoseconds"), Period: 10_101_010}
	case "offcpu":
		p = &profile.Profile{SampleType: []*profile.ValueType{vt("offcpu", "nanoseconds")}, PeriodType: vt("offcpu", "nanoseconds"), Period: 1}
	case "wakeup":
		p = &profile.Profile{SampleType: []*profile.ValueType{vt("wakeup", "nanoseconds")}, PeriodType: vt("wakeup", "nanoseconds"), Period: 1}
	case "async":
		// tokio-console's: no period type at all.
		p = &profile.Profile{SampleType: []*profile.ValueType{vt("busy", "nanoseconds"), vt("scheduled", "nanoseconds"), vt("idle", "nanoseconds"), vt("polls", "count")}, DefaultSampleType: "busy"}
	case "heap", "allocs":
		p = &profile.Profile{SampleType: []*profile.ValueType{vt("alloc_objects", "count"), vt("alloc_space", "bytes"), vt("inuse_objects", "count"), vt("inuse_space", "bytes")}, PeriodType: vt("space", "bytes"), Period: 524288}
		if kind == "allocs" {
			p.DefaultSampleType = "alloc_space"
		}
	case "goroutine":
		p = &profile.Profile{SampleType: []*profile.ValueType{vt("goroutine", "count")}, PeriodType: vt("goroutine", "count"), Period: 1}
	case "mutex", "block":
		p = &profile.Profile{SampleType: []*profile.ValueType{vt("contentions", "count"), vt("delay", "nanoseconds")}, PeriodType: vt("contentions", "count"), Period: 1}
	default:
		panic("KindProfile: unknown kind " + kind)
	}
	m := &profile.Mapping{ID: 1, Start: 0x400000, Limit: 0x800000, File: "/srv/" + target, HasFunctions: true}
	p.Mapping = []*profile.Mapping{m}
	loc := func(name string) *profile.Location {
		for _, l := range p.Location {
			if l.Line[0].Function.Name == name {
				return l
			}
		}
		f := &profile.Function{ID: uint64(len(p.Function) + 1), Name: name, SystemName: name, Filename: "src/" + target + ".go"}
		p.Function = append(p.Function, f)
		l := &profile.Location{ID: uint64(len(p.Location) + 1), Mapping: m, Address: 0x400000 + uint64(len(p.Location))*0x40, Line: []profile.Line{{Function: f, Line: int64(10 * (len(p.Location) + 1))}}}
		p.Location = append(p.Location, l)
		return l
	}
	// stack lists frames root first, as people read them.
	stack := func(frames ...string) []*profile.Location {
		out := make([]*profile.Location, len(frames))
		for i, f := range frames {
			out[len(frames)-1-i] = loc(f)
		}
		return out
	}
	vals := func(base int64) []int64 {
		v := make([]int64, len(p.SampleType))
		for i := range v {
			v[i] = base * int64(i+1) * 1_000_003 // distinct per type, not round
		}
		if len(v) > 0 && p.SampleType[0].Unit == "count" {
			v[0] = base
		}
		return v
	}
	root := "main." + target
	add := func(s *profile.Sample) { p.Sample = append(p.Sample, s) }
	switch kind {
	case "async":
		add(&profile.Sample{Location: stack(target, "task", "src/server.rs:41", "handle_request"), Value: vals(7),
			Label: map[string][]string{"task.id": {"12"}, "tracing.target": {"refsvc::server"}}, NumLabel: map[string][]int64{"tasks": {1}}})
		add(&profile.Sample{Location: stack(target, "task", "src/cache.rs:88", "cache-janitor"), Value: vals(3),
			Label: map[string][]string{"task.id": {"13"}, "tracing.target": {"refsvc::cache"}, "kind": {"task"}}, NumLabel: map[string][]int64{"tasks": {1}}})
		add(&profile.Sample{Location: stack(target, "task", "src/main.rs:12", "accept-loop"), Value: vals(2), NumLabel: map[string][]int64{"tasks": {4}}})
	case "goroutine":
		add(&profile.Sample{Location: stack("runtime.main", root, "main.serve", "runtime.gopark"), Value: vals(9)})
		add(&profile.Sample{Location: stack("runtime.goexit", "main.worker", "sync.(*Cond).Wait"), Value: vals(4)})
		// Goroutines the runtime could not unwind: no stack at all.
		add(&profile.Sample{Value: vals(2)})
	default:
		labels := map[string][]string(nil)
		if kind == "cpu" && target == "orchestration-1" {
			labels = map[string][]string{"component": {"scheduler"}}
		}
		add(&profile.Sample{Location: stack(root, "main.serve", "main.handle", "main.encode"), Value: vals(11), Label: labels})
		add(&profile.Sample{Location: stack(root, "main.serve", "main.query"), Value: vals(5)})
		add(&profile.Sample{Location: stack(root, "main.idle"), Value: vals(1)})
	}
	return p
}
