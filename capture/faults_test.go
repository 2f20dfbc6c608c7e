package capture

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/internal/testsvc"
	"github.com/profcap/profcap/targets"
)

// Every fault costs only the faulty target's profiles: a healthy target in
// the same capture is captured in full, and the manifest says exactly what
// happened to the faulty one.
func TestFaultsCostOnlyTheFaultyTarget(t *testing.T) {
	healthy := testsvc.Start(t, testsvc.Normal, false)
	dying := testsvc.Start(t, testsvc.Normal, false)
	hang := testsvc.Start(t, testsvc.Hang, false)
	drip := testsvc.Start(t, testsvc.Drip, false)
	garbage := testsvc.Start(t, testsvc.Garbage, false)
	huge := testsvc.Start(t, testsvc.Huge, false)

	ts := []targets.Target{
		{Name: "healthy", Pprof: healthy.URL()},
		{Name: "dying", Pprof: dying.URL()},
		{Name: "hang", Pprof: hang.URL()},
		{Name: "drip", Pprof: drip.URL()},
		{Name: "garbage", Pprof: garbage.URL()},
		{Name: "huge", Pprof: huge.URL()},
	}
	const window = 4 * time.Second
	time.AfterFunc(2500*time.Millisecond, dying.Kill) // dies mid-window
	dir := filepath.Join(t.TempDir(), "bundle")
	start := time.Now()
	out, err := Run(context.Background(), Options{
		Targets: ts, Duration: window, Slice: time.Second, Out: dir,
		Kinds: []bundle.Kind{bundle.CPU, bundle.Heap, bundle.Goroutine},
		Collectors: []collectors.Collector{collectors.NewPprof(collectors.PprofOptions{
			MaxProfileSize: 4 << 20, SnapshotTimeout: 3 * time.Second})},
		Grace: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > window+10*time.Second {
		t.Errorf("capture took %v: past the deadline plus the grace period", d)
	}
	m, err := bundle.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != "partial" || out.ExitCode() != 3 {
		t.Errorf("status %s exit %d", m.Status, out.ExitCode())
	}
	want := map[string]map[string]string{ // target → kind → status, error substring
		"healthy": {"cpu": "ok", "heap": "ok", "goroutine": "ok"},
		// Killed mid-request (reset) or between requests (refused).
		"dying":   {"cpu": "partial|connection re", "heap": "failed|connection refused", "goroutine": "failed|connection refused"},
		"hang":    {"cpu": "failed|no response within 5s", "heap": "failed|no response within 5s"},
		"drip":    {"heap": "failed|not complete within 3s", "cpu": "ok", "goroutine": "ok"},
		"garbage": {"cpu": "failed|not a pprof profile", "heap": "failed|not a pprof profile"},
		"huge":    {"heap": "failed|larger than the 4 MiB limit"},
	}
	for target, kinds := range want {
		for kind, w := range kinds {
			st, msg, _ := strings.Cut(w, "|")
			p := profileOf(m, target, kind)
			if p == nil {
				t.Errorf("%s %s: missing from the manifest", target, kind)
				continue
			}
			if string(p.Status) != st || !strings.Contains(p.Error, msg) {
				t.Errorf("%s %s: status %q error %q; want %q with %q", target, kind, p.Status, p.Error, st, msg)
			}
		}
	}
	// The dying target's slices before it died are kept.
	if p := profileOf(m, "dying", "cpu"); p != nil && p.Path != "" {
		pr, err := bundle.LoadProfile(dir, p.Path)
		if err != nil || pr.DurationNanos < int64(time.Second) {
			t.Errorf("dying cpu kept %v (%v), want the slices before it died", time.Duration(pr.DurationNanos), err)
		}
	}
	if st := targetOf(m, "healthy").Status; st != "ok" {
		t.Errorf("healthy target status %s", st)
	}
	if st := targetOf(m, "dying").Status; st != "partial" {
		t.Errorf("dying target status %s, want partial", st)
	}
}
