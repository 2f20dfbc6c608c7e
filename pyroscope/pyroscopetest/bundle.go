package pyroscopetest

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
)

// BundleID is the id of the bundle WriteBundle writes.
const BundleID = "20261128T010554Z-orchestration-1-faab97"

// WindowStart is the start of that bundle's window.
var WindowStart = time.Date(2026, 11, 28, 1, 5, 54, 715225371, time.UTC)

// WriteBundle writes a small bundle into a new directory under t.TempDir()
// and returns the directory: two targets, orchestration-1 (labels role,
// language) with cpu, heap, allocs (partial), goroutine and a failed mutex
// profile, and worker-1 (label service=workers and a label name with a dot)
// with cpu and wall; and a merged cpu profile, which must not be pushed.
// Pushable: 6 profiles.
func WriteBundle(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "capture")
	start := WindowStart
	end := start.Add(10 * time.Second)
	m := &bundle.Manifest{
		ID:      BundleID,
		Created: start.Format(time.RFC3339),
		Status:  "partial",
		Window:  bundle.Window{Start: start.Format(bundle.TimeFormat), End: end.Format(bundle.TimeFormat), RequestedSeconds: 10},
	}
	w, err := bundle.Create(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	type prof struct {
		kind, status string
		start, end   time.Time
	}
	instant := end.Add(-200 * time.Millisecond)
	targets := []struct {
		name   string
		labels map[string]string
		profs  []prof
	}{
		{"orchestration-1", map[string]string{"role": "orchestration", "language": "go"}, []prof{
			{"cpu", "ok", start.Add(30 * time.Millisecond), end.Add(-100 * time.Millisecond)},
			{"heap", "ok", instant, instant.Add(25 * time.Millisecond)},
			{"allocs", "partial", start.Add(20 * time.Millisecond), end.Add(-150 * time.Millisecond)},
			{"goroutine", "ok", instant, instant.Add(40 * time.Millisecond)},
			{"mutex", "failed", time.Time{}, time.Time{}},
		}},
		{"worker-1", map[string]string{"service": "workers", "k8s.pod": "worker-1-abc"}, []prof{
			{"cpu", "ok", start.Add(40 * time.Millisecond), end.Add(-90 * time.Millisecond)},
			{"wall", "ok", start.Add(41 * time.Millisecond), end.Add(-91 * time.Millisecond)},
		}},
	}
	for _, tg := range targets {
		bt := &bundle.Target{Name: tg.name, Labels: tg.labels, Status: "ok"}
		for _, p := range tg.profs {
			bp := &bundle.Profile{Kind: bundle.Kind(p.kind), Collector: "pprof", Status: bundle.Status(p.status)}
			if p.status == "failed" {
				bp.Error = "endpoint returned 404"
				bt.Status = "partial"
			} else {
				rel := fmt.Sprintf("targets/%s/%s.pb.gz", tg.name, p.kind)
				n, err := w.WriteProfile(rel, Profile(p.kind, tg.name))
				if err != nil {
					t.Fatal(err)
				}
				bp.Path, bp.Bytes, bp.Samples = rel, n, 2
				bp.Start, bp.End = p.start.Format(bundle.TimeFormat), p.end.Format(bundle.TimeFormat)
			}
			bt.Profiles = append(bt.Profiles, bp)
		}
		if err := w.Update(func(m *bundle.Manifest) { m.Targets = append(m.Targets, bt) }); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.WriteProfile("merged/cpu.pb.gz", Profile("cpu", "merged")); err != nil {
		t.Fatal(err)
	}
	if err := w.Update(func(m *bundle.Manifest) {
		m.Merged = []bundle.Merged{{Kind: "cpu", Path: "merged/cpu.pb.gz", Targets: []string{"orchestration-1", "worker-1"}}}
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Profile returns a small valid profile with the sample types the Go
// runtime uses for kind, and two stacks under a root function named after
// the target.
func Profile(kind, target string) *profile.Profile {
	var types []*profile.ValueType
	var period *profile.ValueType
	switch kind {
	case "cpu":
		types = []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}}
		period = &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}
	case "heap", "allocs":
		types = []*profile.ValueType{{Type: "alloc_objects", Unit: "count"}, {Type: "alloc_space", Unit: "bytes"}, {Type: "inuse_objects", Unit: "count"}, {Type: "inuse_space", Unit: "bytes"}}
		period = &profile.ValueType{Type: "space", Unit: "bytes"}
	case "wall":
		types = []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "time", Unit: "nanoseconds"}}
		period = &profile.ValueType{Type: "wall", Unit: "nanoseconds"}
	default:
		types = []*profile.ValueType{{Type: kind, Unit: "count"}}
		period = &profile.ValueType{Type: kind, Unit: "count"}
	}
	m := &profile.Mapping{ID: 1, Start: 0x1000, Limit: 0x2000, File: "/bin/" + target, HasFunctions: true}
	p := &profile.Profile{SampleType: types, PeriodType: period, Period: 1, Mapping: []*profile.Mapping{m}}
	var fns []*profile.Function
	var locs []*profile.Location
	for i, name := range []string{"main." + target, "main.work", "main.idle"} {
		f := &profile.Function{ID: uint64(i + 1), Name: name, SystemName: name, Filename: "main.go"}
		fns = append(fns, f)
		locs = append(locs, &profile.Location{ID: uint64(i + 1), Mapping: m, Address: 0x1000 + uint64(i)*16, Line: []profile.Line{{Function: f, Line: int64(10 + i)}}})
	}
	p.Function, p.Location = fns, locs
	vals := func(base int64) []int64 {
		v := make([]int64, len(types))
		for i := range v {
			v[i] = base * int64(i+1)
		}
		return v
	}
	p.Sample = []*profile.Sample{
		{Location: []*profile.Location{locs[1], locs[0]}, Value: vals(3)},
		{Location: []*profile.Location{locs[2], locs[0]}, Value: vals(1)},
	}
	return p
}
