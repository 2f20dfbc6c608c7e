package browsertests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/flame"
	"github.com/profcap/profcap/internal/pprofutil"
	"github.com/profcap/profcap/report"
)

// buildProfcap builds the profcap binary of this checkout.
func buildProfcap(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "profcap")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/profcap")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building profcap: %v\n%s", err, out)
	}
	return bin
}

// screenshotDir is where the tests leave their screenshots:
// $PROFCAP_SCREENSHOTS, else a temporary directory.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("PROFCAP_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// shoot saves a screenshot of the viewport (sel "") or of the element sel.
func shoot(t *testing.T, b *browser, dir, name, sel string) {
	t.Helper()
	var buf []byte
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	var err error
	if sel == "" {
		buf, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
	} else {
		buf, err = chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(sel)))
	}
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

const demoSeconds = 10

// The report of a real demo capture, with one worker made sick, read in a
// real headless Chromium: it answers first (the merged cpu profile's top
// function in the first screen's text, what the cluster waits on, the
// sick instance), its periods and durations read right, and the outlier
// view ranks the sick instance first for cpu and for its waits while
// healthy instances score alike.
func TestDemoCaptureReport(t *testing.T) {
	bin := buildProfcap(t)
	dir := t.TempDir()
	cluster := filepath.Join(dir, "cluster")
	start := exec.Command(bin, "demo", "--detach", "--free-ports", "--dir", cluster, "--workers", "3", "--sick", "worker-rust-2", "--work", "1.5")
	if out, err := start.CombinedOutput(); err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(bin, "demo", "--stop", "--dir", cluster).Run() })
	// Let the workflows reach a steady state before the window.
	time.Sleep(2 * time.Second)
	capDir := filepath.Join(dir, "capture")
	if d := os.Getenv("PROFCAP_KEEP_CAPTURE"); d != "" {
		os.RemoveAll(d)
		capDir = d // kept for a look after the test
	}
	rec := exec.Command(bin, "record", "--all", "--overhead", "full", "--duration", fmt.Sprintf("%ds", demoSeconds),
		"--perf-frequency", "297", "--out", capDir)
	rec.Dir = cluster
	out, err := rec.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 3) {
		t.Fatalf("record: %v\n%s", err, out)
	}
	t.Logf("record:\n%s", out)
	exec.Command(bin, "demo", "--stop", "--dir", cluster).Run()

	m, err := bundle.Read(capDir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Summary == nil {
		t.Fatal("the manifest has no summary")
	}
	// Time is true: the window is the window, merged profiles carry it.
	if w := m.Summary.WindowSeconds; w < 0.9*demoSeconds || w > 1.1*demoSeconds {
		t.Errorf("window of %.2f s for a %d s capture", w, demoSeconds)
	}
	var cpuTop string
	for _, mg := range m.Merged {
		p, err := bundle.LoadProfile(capDir, mg.Path)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Duration(p.DurationNanos).Seconds(); d < 0.9*demoSeconds || d > 1.1*demoSeconds {
			t.Errorf("merged %s lasts %.2f s, want within 10%% of %d s", mg.Kind, d, demoSeconds)
		}
		if mg.Kind == bundle.CPU {
			idx, err := pprofutil.SampleIndex(p, "")
			if err != nil {
				t.Fatal(err)
			}
			bySelf, _, _ := report.Top(p, idx, 1)
			if len(bySelf) == 0 {
				t.Fatal("empty merged cpu profile")
			}
			cpuTop = bySelf[0].Name
		}
	}
	if cpuTop == "" {
		t.Fatal("no merged cpu profile")
	}
	checkOutliers(t, m.Summary)

	// In the browser.
	b := newBrowser(t)
	defer b.check(t)
	b.do(t, chromedp.Navigate("file://"+filepath.Join(capDir, "report.html")), chromedp.WaitVisible(chromedp.CSS("#status")))
	waitFor(t, b, `document.querySelectorAll('div.pcf canvas').length > 0`)
	text := eval[string](t, b, `document.body.innerText`)
	first := text[:min(len(text), 3000)]
	if short := flame.ShortName(cpuTop); !strings.Contains(first, short) {
		t.Errorf("the first 3,000 characters of the report do not name the merged cpu profile's top function %s:\n%s", short, first)
	}
	for _, bad := range []string{"1000000000 Hz", " 0 Hz", "(0 Hz)", "/count"} {
		if strings.Contains(text, bad) {
			t.Errorf("the report reads %q: %s", bad, context40(text, bad))
		}
	}
	// What the cluster waits on names the demo's database, not the
	// runtime's waiting machinery.
	waits := eval[string](t, b, `(() => { const t = document.querySelector('#answer table.waits'); return t ? t.innerText : ''; })()`)
	var dbWait bool
	for _, line := range strings.Split(waits, "\n") {
		if strings.HasPrefix(line, "wall") || strings.HasPrefix(line, "block") {
			if strings.Contains(line, "fakeDB") {
				dbWait = true
			}
			for _, bad := range []string{"runtime.futex", "runtime.gopark", "runtime.selectgo"} {
				if strings.Contains(line, bad) {
					t.Errorf("waiting on names %s: %q", bad, line)
				}
			}
		}
	}
	if !dbWait {
		t.Errorf("the waiting-on lines do not name the demo's database (fakeDB):\n%s", waits)
	}
	// The answer fits the first screen: it starts within it.
	if top := eval[float64](t, b, `document.getElementById('answer').getBoundingClientRect().top`); top > 300 {
		t.Errorf("the answer starts %0.f px down the page", top)
	}
	// The outlier view's first row for worker-rust cpu is the sick one.
	firstRow := eval[string](t, b, `(() => { for (const h of document.querySelectorAll('#outliers h3')) {
		if (h.textContent.startsWith('worker-rust · cpu')) { const r = h.nextElementSibling.querySelectorAll('tr')[1]; return r ? r.innerText : ''; } } return ''; })()`)
	if !strings.HasPrefix(firstRow, "worker-rust-2") || !strings.Contains(firstRow, "differs") {
		t.Errorf("outlier view, worker-rust cpu, first row: %q", firstRow)
	}
	if n := eval[int](t, b, `document.querySelectorAll('img').length`); n != 0 {
		t.Errorf("%d <img> elements", n)
	}
	shots := screenshotDir(t)
	b.do(t, chromedp.ScrollIntoView(chromedp.CSS("header")))
	shoot(t, b, shots, "demo-first-screen", "")
	shoot(t, b, shots, "demo-kind-cpu", "#kind-cpu")
	shoot(t, b, shots, "demo-kind-wall", "#kind-wall")
	shoot(t, b, shots, "demo-timeline", "#timeline")
	shoot(t, b, shots, "demo-outliers", "#outliers")
	// Idle is hidden by default in the wall graph, and a click shows it.
	if st := eval[string](t, b, `document.querySelector('[data-pcf="merged-wall"]').getAttribute('data-idle')`); st != "hidden" {
		t.Errorf("wall graph idle: %q, want hidden", st)
	}
	b.do(t, chromedp.Click(chromedp.CSS(`[data-pcf="merged-wall"] button.pcf-idle`)))
	if st := eval[string](t, b, `document.querySelector('[data-pcf="merged-wall"]').getAttribute('data-idle')`); st != "shown" {
		t.Errorf("wall graph idle after the toggle: %q, want shown", st)
	}
}

func context40(s, sub string) string {
	i := strings.Index(s, sub)
	return s[max(0, i-40):min(len(s), i+len(sub)+40)]
}

// checkOutliers: worker-rust-2 ranks first and differs for cpu and for a
// waiting kind; the orchestrators and the healthy workers are alike.
func checkOutliers(t *testing.T, s *bundle.Summary) {
	t.Helper()
	first := map[bundle.Kind]bundle.OutlierSummary{}
	for _, o := range s.Outliers {
		if o.Role == "worker-rust" {
			if _, ok := first[o.Kind]; !ok {
				first[o.Kind] = o
			}
		}
		healthy := o.Role == "orchestration" || o.Target == "worker-rust-1" || o.Target == "worker-rust-3"
		if healthy && o.Differs {
			t.Errorf("healthy %s differs in %s: %+v", o.Target, o.Kind, o)
		}
	}
	if o := first[bundle.CPU]; o.Target != "worker-rust-2" || !o.Differs {
		t.Errorf("worker-rust cpu: first %+v, want worker-rust-2 differing", o)
	}
	waits := false
	for _, k := range []bundle.Kind{bundle.Wall, bundle.Block, bundle.OffCPU} {
		if o := first[k]; o.Target == "worker-rust-2" && o.Differs {
			waits = true
		} else if o.Target != "" && o.Target != "worker-rust-2" && o.Differs {
			t.Errorf("worker-rust %s: %s differs first, not the sick worker", k, o.Target)
		}
	}
	if !waits {
		t.Errorf("worker-rust-2 differs in no waiting kind: %+v", first)
	}
	var rows []string
	for _, o := range s.Outliers {
		rows = append(rows, fmt.Sprintf("%s %s %s score %.1f p %.3g over %d differs %v (%s)", o.Role, o.Kind, o.Target, o.Score, o.PValue, o.Observations, o.Differs, o.Short))
	}
	t.Logf("outliers:\n%s", strings.Join(rows, "\n"))
}

// A bundle whose samples carry the second they were taken in: the
// timeline draws one bar per second per target, and selecting a span
// draws the flame graph of that span only.
func TestReportTimelineSpan(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	if d := os.Getenv("KEEP_TIMELINE"); d != "" {
		dir = d
	}
	m := &bundle.Manifest{ID: "timeline", Status: "ok", Merged: []bundle.Merged{},
		Window: bundle.Window{Start: "2026-12-01T10:00:00Z", End: "2026-12-01T10:00:10Z", RequestedSeconds: 10}}
	w, err := bundle.Create(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	var all []*profile.Profile
	names := []string{"api-1", "api-2", "api-3"}
	for i, name := range names {
		p := secondsProfile(name == "api-2")
		rel := "targets/" + name + "/cpu.pb.gz"
		if _, err := w.WriteProfile(rel, p); err != nil {
			t.Fatal(err)
		}
		m.Targets = append(m.Targets, &bundle.Target{Name: name, Labels: map[string]string{"role": "api"}, Status: "ok",
			Profiles: []*bundle.Profile{{Kind: "cpu", Collector: "pprof", Status: "ok", Path: rel, Samples: len(p.Sample)}}})
		c := p.Copy()
		pprofutil.LabelSamples(c, "target", name)
		all = append(all, c)
		_ = i
	}
	merged, err := profile.Merge(all)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteProfile("merged/cpu.pb.gz", merged); err != nil {
		t.Fatal(err)
	}
	m.Merged = append(m.Merged, bundle.Merged{Kind: "cpu", Path: "merged/cpu.pb.gz", Targets: names})
	if err := report.Write(dir, m); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t)
	defer b.check(t)
	b.do(t, chromedp.Navigate("file://"+filepath.Join(dir, "report.html")), chromedp.WaitVisible(chromedp.CSS("#timeline")))
	if n := eval[int](t, b, `document.querySelectorAll('.tl-kind[data-kind="cpu"] .tl-row').length`); n != 4 {
		t.Errorf("%d timeline rows, want 4 (all targets and three)", n)
	}
	if n := eval[int](t, b, `document.querySelectorAll('.tl-kind[data-kind="cpu"] .tl-row[data-target="api-2"] rect').length`); n != 10 {
		t.Errorf("api-2 has %d bars, want 10", n)
	}
	// Select the spike (seconds 6–7) on the whole cluster by dragging.
	box := eval[[]float64](t, b, `(() => { const r = document.querySelector('.tl-kind[data-kind="cpu"] .tl-row[data-target=""] svg').getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()`)
	y := box[1] + box[3]/2
	x := func(sec float64) float64 { return box[0] + box[2]*(sec+0.5)/10 }
	b.do(t, chromedp.MouseEvent("mousePressed", x(6), y, chromedp.ButtonLeft), chromedp.MouseEvent("mouseMoved", x(7), y), chromedp.MouseEvent("mouseReleased", x(7), y, chromedp.ButtonLeft))
	if !waitFor(t, b, `!!document.querySelector('.tl-kind[data-kind="cpu"] .tl-span div.pcf-bar')`) {
		t.Fatal("no span flame graph after the drag")
	}
	span := eval[string](t, b, `document.querySelector('.tl-kind[data-kind="cpu"]').getAttribute('data-span')`)
	if span != "all targets, seconds 6–7" {
		t.Errorf("span %q, want all targets, seconds 6–7", span)
	}
	// The span graph holds the spike; outside it, none.
	has := `(() => { const g = document.querySelector('.tl-kind[data-kind="cpu"] .tl-span').pcfGraph; return g.tree.names.indexOf('main.retryStorm') >= 0 && g.tree.name.some(k => g.tree.names[k] === 'main.retryStorm'); })()`
	if !eval[bool](t, b, has) {
		t.Error("the span of the spike has no main.retryStorm frame")
	}
	total := eval[float64](t, b, `window.profcapReport.selectSpan('cpu', 'api-1', 0, 3)`)
	if total != 4*10e6*4 {
		t.Errorf("api-1 seconds 0–3 total %.0f, want %.0f", total, 4*10e6*4.0)
	}
	if eval[bool](t, b, has) {
		t.Error("api-1's quiet seconds have a main.retryStorm frame")
	}
	b.do(t, chromedp.Evaluate[chromedp.Void](`window.profcapReport.selectSpan('cpu', '', 5, 8)`))
	shoot(t, b, screenshotDir(t), "timeline-span", "#timeline")
	// Frame names reach the timeline as text only.
	if n := eval[int](t, b, `document.querySelectorAll('img').length`); n != 0 {
		t.Errorf("%d <img> elements", n)
	}
}

// secondsProfile is 10 s of cpu samples, 4 per second of main.work (10 ms
// each), with window_second labels; spiky adds main.retryStorm at seconds
// 6 and 7 (and a hostile name).
func secondsProfile(spiky bool) *profile.Profile {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}, Period: 10e6, DurationNanos: 10e9,
	}
	fn := func(id uint64, name string) *profile.Location {
		f := &profile.Function{ID: id, Name: name}
		l := &profile.Location{ID: id, Line: []profile.Line{{Function: f}}}
		p.Function = append(p.Function, f)
		p.Location = append(p.Location, l)
		return l
	}
	// api-1's and api-3's labels have the unit, api-2's do not: second 0
	// counts either way.
	secUnit := map[string][]string{bundle.SecondLabel: {bundle.SecondUnit}}
	if spiky {
		secUnit = nil
	}
	mainLoc, work, storm, evil := fn(1, "main.main"), fn(2, "main.work"), fn(3, "main.retryStorm"), fn(4, `<img src=x onerror=alert(1)>`)
	for sec := int64(0); sec < 10; sec++ {
		p.Sample = append(p.Sample, &profile.Sample{Location: []*profile.Location{work, mainLoc}, Value: []int64{4, 4 * 10e6},
			NumLabel: map[string][]int64{bundle.SecondLabel: {sec}}, NumUnit: secUnit})
		if spiky && (sec == 6 || sec == 7) {
			p.Sample = append(p.Sample, &profile.Sample{Location: []*profile.Location{storm, mainLoc}, Value: []int64{40, 40 * 10e6},
				NumLabel: map[string][]int64{bundle.SecondLabel: {sec}}, NumUnit: secUnit})
			p.Sample = append(p.Sample, &profile.Sample{Location: []*profile.Location{evil, mainLoc}, Value: []int64{1, 10e6},
				NumLabel: map[string][]int64{bundle.SecondLabel: {sec}}, NumUnit: secUnit})
		}
	}
	return p
}
