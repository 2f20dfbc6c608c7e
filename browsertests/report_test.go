package browsertests

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/report"
)

// cpuProfile makes a cpu profile with the given leaf functions (under main)
// and their sample counts (as report/report_test.go does).
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

// writeBundle writes a bundle with one cpu profile per target and a merge,
// through the bundle package's public writer (as report/report_test.go does).
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

// The report opens in a real headless Chromium with no console errors, every
// graph on screen is drawn, and a per-target graph inside a closed <details>
// is drawn when it is opened.
func TestReportInChromium(t *testing.T) {
	healthy := map[string]int64{"main.handle": 60, "main.encode": 30, `<img src=x onerror=alert(1)>`: 10}
	sick := map[string]int64{"main.handle": 20, "main.encode": 10, "main.retryStorm": 70}
	dir, m := writeBundle(t, map[string]*profile.Profile{
		"worker-1": cpuProfile(healthy), "worker-2": cpuProfile(sick), "worker-3": cpuProfile(healthy),
	}, map[string]string{"role": "worker"})
	if err := report.Write(dir, m); err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t)
	defer b.check(t)
	// drawn counts canvases with at least one painted pixel.
	const drawn = `(() => { let n = 0; for (const c of document.querySelectorAll('div.pcf canvas')) {
		if (!c.width || !c.height) continue;
		const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
		for (let i = 3; i < d.length; i += 4) if (d[i]) { n++; break; } } return n; })()`
	b.do(t, chromedp.Navigate("file://"+filepath.Join(dir, "report.html")), chromedp.WaitVisible("#status"))
	before := eval[int](t, b, drawn)
	if before < 1 {
		t.Errorf("no flame graph drawn on load")
	}
	// Open every per-target and outlier graph; each must draw. The page
	// draws a graph when its section opens: wait until all are drawn (or
	// the bound that only stops a hung page).
	b.do(t, chromedp.Evaluate[chromedp.Void](`document.querySelectorAll('details').forEach(d => d.open = true)`))
	waitFor(t, b, `(() => { const n = document.querySelectorAll('div.pcf canvas').length; return n > 0 && `+drawn+` === n; })()`)
	total := eval[int](t, b, `document.querySelectorAll('div.pcf canvas').length`)
	after := eval[int](t, b, drawn)
	// 1 merged + 3 per target + 3 outlier diffs.
	if total != 7 || after != total {
		t.Errorf("%d of %d graphs drawn after opening every section (before: %d), want 7 of 7", after, total, before)
	}
	if imgs := eval[int](t, b, `document.querySelectorAll('img').length`); imgs != 0 {
		t.Errorf("%d <img> elements: a frame name became markup", imgs)
	}
	if text := eval[string](t, b, `document.getElementById('outliers').innerText`); !strings.Contains(text, "worker-2") || !strings.Contains(text, "main.retryStorm") {
		t.Errorf("outlier section: %q", text)
	}
}
