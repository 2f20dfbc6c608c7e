package main

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/testsvc"
)

// `profcap record --pid PID --duration 5s` on a native process (one thread
// burning CPU, one sleeping) gives cpu and offcpu profiles and a report, and
// go tool pprof reads both.
func TestRecordPIDNativeProcess(t *testing.T) {
	if _, err := exec.LookPath("perf"); err != nil {
		t.Fatalf("perf is not installed (make setup installs linux-perf): %v", err)
	}
	bin := testsvc.BuildNative(t, false)
	cmd := exec.Command(bin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	dir := filepath.Join(t.TempDir(), "cap")
	_, stderr, code := runCLI(t, "record", "--pid", strconv.Itoa(cmd.Process.Pid), "--duration", "5s", "--out", dir)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	m, err := bundle.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Report != "report.html" {
		t.Errorf("no report: %+v", m.Report)
	}
	got := map[string]string{}
	for _, p := range m.Targets[0].Profiles {
		got[string(p.Kind)] = string(p.Status)
		if p.Path == "" {
			continue
		}
		top := goToolPprofTop(t, filepath.Join(dir, p.Path))
		switch p.Kind {
		case "cpu":
			if !strings.Contains(firstTopRow(top), "burn_cpu") {
				t.Errorf("cpu -top first row %q, want burn_cpu\n%s", firstTopRow(top), top)
			}
		case "offcpu":
			if !strings.Contains(top, "sleep_forever") {
				t.Errorf("offcpu -top lacks sleep_forever\n%s", top)
			}
		}
	}
	if got["cpu"] != "ok" || got["offcpu"] != "ok" {
		t.Errorf("profiles %v, want cpu and offcpu ok", got)
	}
}
