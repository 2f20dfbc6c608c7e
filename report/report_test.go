package report

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
)

// cpuProfile makes a cpu profile with the given leaf functions (under main)
// and their sample counts.
func cpuProfile(leaves map[string]int64) *profile.Profile {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}, Period: 10000000,
	}
	mainFn := &profile.Function{ID: 1, Name: "main.main"}
	mainLoc := &profile.Location{ID: 1, Line: []profile.Line{{Function: mainFn}}}
	p.Function = append(p.Function, mainFn)
	p.Location = append(p.Location, mainLoc)
	names := make([]string, 0, len(leaves))
	for n := range leaves {
		names = append(names, n)
	}
	for i, n := range names {
		fn := &profile.Function{ID: uint64(i + 2), Name: n}
		loc := &profile.Location{ID: uint64(i + 2), Line: []profile.Line{{Function: fn}}}
		p.Function = append(p.Function, fn)
		p.Location = append(p.Location, loc)
		p.Sample = append(p.Sample, &profile.Sample{Location: []*profile.Location{loc, mainLoc}, Value: []int64{leaves[n], leaves[n] * 10000000}})
	}
	return p
}

// writeBundle writes a bundle with one cpu profile per target and a merge.
func writeBundle(t *testing.T, profiles map[string]*profile.Profile, labels map[string]string) (string, *bundle.Manifest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "b")
	m := &bundle.Manifest{ID: "test", Status: "ok", Merged: []bundle.Merged{}}
	w, err := bundle.Create(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var all []*profile.Profile
	for _, name := range []string{"worker-1", "worker-2", "worker-3", "worker-4"} {
		p, ok := profiles[name]
		if !ok {
			continue
		}
		rel := "targets/" + name + "/cpu.pb.gz"
		if _, err := w.WriteProfile(rel, p); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		m.Targets = append(m.Targets, &bundle.Target{Name: name, Labels: labels, Status: "ok",
			Profiles: []*bundle.Profile{{Kind: "cpu", Collector: "pprof", Status: "ok", Path: rel, Samples: len(p.Sample)}}})
		c := p.Copy()
		for _, s := range c.Sample {
			s.Label = map[string][]string{"target": {name}}
		}
		all = append(all, c)
	}
	merged, err := profile.Merge(all)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteProfile("merged/cpu.pb.gz", merged); err != nil {
		t.Fatal(err)
	}
	m.Merged = append(m.Merged, bundle.Merged{Kind: "cpu", Path: "merged/cpu.pb.gz", Targets: names})
	return dir, m
}

func TestReportIsSelfContainedAndEscaped(t *testing.T) {
	hostile := `<img src=x onerror=alert(1)></script><b>&"'`
	dir, m := writeBundle(t, map[string]*profile.Profile{
		"worker-1": cpuProfile(map[string]int64{hostile: 50, "main.work": 50}),
	}, nil)
	m.Targets[0].Profiles = append(m.Targets[0].Profiles, &bundle.Profile{Kind: "heap", Status: "failed", Error: `connection refused <script>alert(2)</script>`})
	var buf bytes.Buffer
	if err := Render(&buf, dir, m); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, bad := range []string{"<img src=x", "<script>alert(2)", "<b>&"} {
		if strings.Contains(page, bad) {
			t.Errorf("report contains unescaped %q", bad)
		}
	}
	if !strings.Contains(page, "&lt;img src=x onerror=alert(1)&gt;") {
		t.Errorf("the hostile frame name is not shown escaped in the top tables")
	}
	if u := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}[/"' )]`).FindString(page); u != "" {
		t.Errorf("report names an external URL: %s", u)
	}
	if !strings.Contains(page, "connection refused") || !strings.Contains(page, `class="st-failed"`) {
		t.Errorf("report does not show the failed profile")
	}
}

func TestOutliersRankTheSickInstanceFirst(t *testing.T) {
	healthy := map[string]int64{"main.handle": 60, "main.encode": 30, "runtime.gcBgMarkWorker": 10}
	sick := map[string]int64{"main.handle": 20, "main.encode": 10, "main.retryStorm": 70}
	dir, m := writeBundle(t, map[string]*profile.Profile{
		"worker-1": cpuProfile(healthy), "worker-2": cpuProfile(sick), "worker-3": cpuProfile(healthy), "worker-4": cpuProfile(healthy),
	}, map[string]string{"role": "worker"})
	groups := outliers(dir, m, true)
	if len(groups) != 1 || len(groups[0].Rows) != 4 {
		t.Fatalf("groups %+v", groups)
	}
	top := groups[0].Rows[0]
	if top.Target != "worker-2" || top.Function != "main.retryStorm" || !top.Differs || top.Score < 50 || top.Graph == "" {
		t.Errorf("top outlier %+v, want worker-2 differing with main.retryStorm", top)
	}
	for _, r := range groups[0].Rows[1:] {
		if r.Differs || r.Score > 5 {
			t.Errorf("healthy %s differs (score %.1f, p %.3g)", r.Target, r.Score, r.P)
		}
	}
	if err := Write(dir, m); err != nil {
		t.Fatal(err)
	}
	page, _ := os.ReadFile(filepath.Join(dir, "report.html"))
	if !strings.Contains(string(page), `id="outliers"`) || !strings.Contains(string(page), "main.retryStorm") {
		t.Errorf("report lacks the outlier section")
	}
}

func TestRoleOf(t *testing.T) {
	for name, want := range map[string]string{"worker-rust-2": "worker-rust", "orchestration-1": "orchestration", "db": "db"} {
		if got := roleOf(&bundle.Target{Name: name}); got != want {
			t.Errorf("roleOf(%s) = %s, want %s", name, got, want)
		}
	}
	if got := roleOf(&bundle.Target{Name: "x-1", Labels: map[string]string{"role": "api"}}); got != "api" {
		t.Errorf("role label ignored: %s", got)
	}
}

func TestUserLeavesSkipsKernelFrames(t *testing.T) {
	kmap := &profile.Mapping{ID: 1, File: "[kernel.kallsyms]"}
	umap := &profile.Mapping{ID: 2, File: "/usr/bin/app"}
	fn := func(id uint64, name string) *profile.Function { return &profile.Function{ID: id, Name: name} }
	sched, nap, main := fn(1, "__schedule"), fn(2, "do_nap"), fn(3, "main")
	loc := func(id uint64, m *profile.Mapping, f *profile.Function, addr uint64) *profile.Location {
		return &profile.Location{ID: id, Mapping: m, Address: addr, Line: []profile.Line{{Function: f}}}
	}
	l1, l2, l3 := loc(1, kmap, sched, 0xffffffff81000000), loc(2, umap, nap, 0x401000), loc(3, umap, main, 0x400500)
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "offcpu", Unit: "nanoseconds"}},
		Sample:     []*profile.Sample{{Location: []*profile.Location{l1, l2, l3}, Value: []int64{5e9}}, {Location: []*profile.Location{l1}, Value: []int64{1e9}}},
		Location:   []*profile.Location{l1, l2, l3}, Function: []*profile.Function{sched, nap, main}, Mapping: []*profile.Mapping{kmap, umap},
	}
	bySelf, _, total := Top(UserLeaves(p), 0, 5)
	if total != 6e9 || bySelf[0].Name != "do_nap" || bySelf[0].Self != 5e9 {
		t.Errorf("top %+v total %d, want do_nap 5s of 6s", bySelf, total)
	}
	if len(p.Sample[0].Location) != 3 {
		t.Errorf("UserLeaves changed its input")
	}
}
