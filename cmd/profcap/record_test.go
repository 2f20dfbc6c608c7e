package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/golden"
	"github.com/profcap/profcap/internal/testsvc"
)

func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/debug/pprof"
}

func TestRecordURLCapturesEveryGoKind(t *testing.T) {
	svc := testsvc.Start(t, testsvc.Normal, false)
	dir := filepath.Join(t.TempDir(), "cap")
	start := time.Now()
	stdout, stderr, code := runCLI(t, "record", "--url", svc.URL(), "--duration", "3s", "--out", dir)
	elapsed := time.Since(start)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if strings.TrimSpace(stdout) != dir {
		t.Errorf("stdout %q, want the bundle path", stdout)
	}
	if elapsed > 3*time.Second+3*time.Second {
		t.Errorf("took %v for a 3s window", elapsed)
	}
	if !strings.Contains(stderr, "report: "+filepath.Join(dir, "report.html")) {
		t.Errorf("stderr does not name the report:\n%s", stderr)
	}
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(strings.TrimSuffix(svc.URL(), "/debug/pprof"), "http://")
	// The summary's figures change from run to run: it is checked below,
	// the rest of the manifest against the golden file.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	var sum bundle.Summary
	if err := json.Unmarshal(raw["summary"], &sum); err != nil || len(sum.Kinds) == 0 {
		t.Errorf("manifest summary %s: %v", raw["summary"], err)
	}
	if c := sum.Profiles; c.Requested == 0 || c.OK+c.Partial+c.Failed+c.Unsupported != c.Requested {
		t.Errorf("summary counts %+v do not add up", c)
	}

	var ordered bytes.Buffer
	enc := json.NewEncoder(&ordered)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(withoutSummary(data)); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/record-url.manifest.json", normalize(ordered.String(), dir, "DIR", strings.ReplaceAll(host, ":", "_"), "HOST"))

	m, err := bundle.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	// go tool pprof reads every file, and the service's hottest function
	// tops the cpu profile.
	for _, tg := range m.Targets {
		for _, p := range tg.Profiles {
			if p.Path == "" {
				continue
			}
			top := goToolPprofTop(t, filepath.Join(dir, p.Path))
			if p.Kind == "cpu" {
				first := firstTopRow(top)
				if !strings.Contains(first, "hotLoopForProfcapTests") {
					t.Errorf("cpu -top first row %q, want the service's hot loop\n%s", first, top)
				}
			}
		}
	}
	for _, mg := range m.Merged {
		goToolPprofTop(t, filepath.Join(dir, mg.Path))
	}
	report, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	if u := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}[/"' )]`).Find(report); u != nil {
		t.Errorf("report.html names an external URL: %s", u)
	}
	for _, k := range []string{"cpu", "heap", "allocs", "goroutine", "mutex", "block"} {
		if !strings.Contains(string(report), `id="kind-`+k+`"`) {
			t.Errorf("report has no %s section", k)
		}
	}
}

// firstTopRow returns the first row of `go tool pprof -top` output.
func firstTopRow(top string) string {
	lines := strings.Split(top, "\n")
	for i, l := range lines {
		if strings.Contains(l, "flat%") && i+1 < len(lines) {
			return lines[i+1]
		}
	}
	return ""
}

func TestRecordTargetDown(t *testing.T) {
	svc := testsvc.Start(t, testsvc.Normal, false)
	dead := deadURL(t)

	// Only target down: exit 1, fast, with the cause on the terminal.
	dir := filepath.Join(t.TempDir(), "down")
	start := time.Now()
	_, stderr, code := runCLI(t, "record", "--url", dead, "--duration", "20s", "--out", dir)
	if code != 1 {
		t.Errorf("exit %d, want 1 when nothing was captured\n%s", code, stderr)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("a down target took %v to report", d)
	}
	if !strings.Contains(stderr, "connection refused") {
		t.Errorf("stderr lacks the cause:\n%s", stderr)
	}
	if m, err := bundle.Read(dir); err != nil || m.Status != "failed" {
		t.Errorf("manifest %v, %v", m, err)
	}

	// One of two down: exit 3, the other captured in full.
	dir = filepath.Join(t.TempDir(), "partial")
	_, stderr, code = runCLI(t, "record", "--url", svc.URL(), "--url", dead, "--duration", "2s", "--out", dir)
	if code != 3 {
		t.Errorf("exit %d, want 3\n%s", code, stderr)
	}
	m, err := bundle.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	var sawOK, sawFailed bool
	for _, tg := range m.Targets {
		switch tg.Status {
		case "ok":
			sawOK = true
		case "failed":
			sawFailed = true
			for _, p := range tg.Profiles {
				if !strings.Contains(p.Error, "connection refused") {
					t.Errorf("%s %s error %q", tg.Name, p.Kind, p.Error)
				}
			}
		}
	}
	if !sawOK || !sawFailed || m.Status != "partial" {
		t.Errorf("statuses: ok=%v failed=%v bundle=%s", sawOK, sawFailed, m.Status)
	}
}

func TestRecordUsageErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "profcap.yaml")
	os.WriteFile(cfg, []byte("targets:\n  - name: orchestration-1\n    pprof: http://127.0.0.1:1/debug/pprof\n  - name: worker-rust-1\n    pid: 1\n"), 0o644)
	var got strings.Builder
	for _, args := range [][]string{
		{"record", "--profiles", "cpu,bogus", "--url", "http://127.0.0.1:1/debug/pprof"},
		{"record", "--duration", "-1s", "--url", "http://127.0.0.1:1/debug/pprof"},
		{"record", "--url", "ftp://x"},
		{"record", "--config", cfg},
		{"record", "--config", cfg, "--target", "nope-*"},
		{"record", "--config", filepath.Join(dir, "missing.yaml"), "--target", "x"},
		{"record", "--url", "http://127.0.0.1:1/debug/pprof", "stray"},
		{"record", "--bogus-flag"},
		{"nosuchcommand"},
	} {
		_, stderr, code := runCLI(t, args...)
		last := strings.TrimSpace(stderr)
		if i := strings.LastIndex(last, "\n"); i >= 0 {
			last = last[i+1:]
		}
		got.WriteString(strings.Join(args, " ") + "\n  exit " + itoa(code) + ": " + last + "\n")
	}
	golden.Check(t, "testdata/record-usage.txt", strings.ReplaceAll(got.String(), dir, "DIR"))
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestTargetsProbesEachTarget(t *testing.T) {
	svc := testsvc.Start(t, testsvc.Normal, false)
	dead := deadURL(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(cfg, []byte("targets:\n  - name: orchestration-1\n    pprof: "+svc.URL()+"\n    labels: {role: orchestration}\n  - name: worker-rust-1\n    pprof: "+dead+"\n"), 0o644)
	stdout, stderr, code := runCLI(t, "targets", "--config", cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	host := strings.TrimPrefix(strings.TrimSuffix(svc.URL(), "/debug/pprof"), "http://")
	deadHost := strings.TrimPrefix(strings.TrimSuffix(dead, "/debug/pprof"), "http://")
	golden.Check(t, "testdata/targets.txt", normalize(stdout, cfg, "CONFIG", host, "UP", deadHost, "DOWN"))
}

func TestRecordFromPidsDirNeedsNoConfig(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, ".pids"), 0o755)
	os.WriteFile(filepath.Join(dir, ".pids", "orchestration-1.pid"), []byte("4242\n"), 0o644)
	os.WriteFile(filepath.Join(dir, ".pids", "worker-ruby-1.pid"), []byte("4243\n"), 0o644)
	t.Chdir(dir)
	stdout, stderr, code := runCLI(t, "targets", "--no-probe")
	if code != 0 || !strings.Contains(stdout, "2 target(s) from .pids/") || !strings.Contains(stdout, "orchestration-1") || !strings.Contains(stdout, "pid 4242") {
		t.Errorf("exit %d\n%s%s", code, stdout, stderr)
	}
	_, stderr, code = runCLI(t, "record", "--target", "worker-*", "--profiles", "heap", "--duration", "1s", "--out", filepath.Join(dir, "b"))
	// worker-ruby-1 resolves from .pids/; it has no pprof endpoint, so heap
	// is unsupported for it, which is a failure when asked for by name.
	if code != 1 || !strings.Contains(stderr, "worker-ruby-1") {
		t.Errorf("exit %d\n%s", code, stderr)
	}
}

func mustManifest(t *testing.T, dir string) *bundle.Manifest {
	t.Helper()
	m, err := bundle.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// withoutSummary is a manifest without its summary, its keys in the
// manifest's order.
func withoutSummary(data []byte) *bundle.Manifest {
	var m bundle.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil
	}
	m.Summary = nil
	return &m
}
