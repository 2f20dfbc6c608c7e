package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/profcap/profcap/bundle"
)

// What `make demo` does, on free ports: start the demo cluster, record all
// of it, stop it. Every demo target gives cpu, heap, allocs, goroutine, wall
// and async; the merges and a self-contained report are there.
func TestDemoClusterEndToEnd(t *testing.T) {
	bin := profcapBinary(t)
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("profcap %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("demo", "--detach", "--free-ports", "--dir", "cluster")
	defer exec.Command(bin, "demo", "--stop", "--dir", filepath.Join(dir, "cluster")).Run()

	cmd := exec.Command(bin, "record", "--all", "--overhead", "full", "--duration", "3s", "--out", "capture")
	cmd.Dir = filepath.Join(dir, "cluster")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("record: %v\n%s", err, out)
	}
	b := filepath.Join(dir, "cluster", "capture")
	m, err := bundle.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != "ok" || len(m.Targets) != 5 {
		t.Errorf("status %s with %d targets\n%s", m.Status, len(m.Targets), out)
	}
	for _, tg := range m.Targets {
		got := map[bundle.Kind]bundle.Status{}
		for _, p := range tg.Profiles {
			got[p.Kind] = p.Status
		}
		for _, k := range []bundle.Kind{"cpu", "heap", "allocs", "goroutine", "wall", "async"} {
			if got[k] != "ok" {
				t.Errorf("%s %s: %q", tg.Name, k, got[k])
			}
		}
	}
	for _, k := range []bundle.Kind{"cpu", "heap", "allocs", "goroutine", "wall", "async"} {
		mg, ok := m.MergedPath(k)
		if !ok {
			t.Errorf("no merged %s", k)
			continue
		}
		if _, err := bundle.LoadProfile(b, mg); err != nil {
			t.Errorf("merged %s: %v", k, err)
		}
	}
	report, err := os.ReadFile(filepath.Join(b, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	if u := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}[/"' )]`).Find(report); u != nil {
		t.Errorf("report.html names an external URL: %s", u)
	}
	// The demo's cache-janitor task yields on every poll: the console's
	// self-wakes lint names it, per target, in the report's warnings.
	if !regexp.MustCompile(`worker-rust-1: self-wakes: task cache-janitor`).Match(report) {
		t.Errorf("report lacks the self-wakes warning for the demo's cache-janitor task")
	}
	run("demo", "--stop", "--dir", "cluster")
	if ents, _ := os.ReadDir(filepath.Join(dir, "cluster", ".pids")); len(ents) != 0 {
		t.Errorf("pid files left after stop: %v", ents)
	}
}
