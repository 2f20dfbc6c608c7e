package targets

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseTargetsFile(t *testing.T) {
	cfg, err := Parse([]byte(`
targets:
  - name: orchestration-1
    pprof: http://127.0.0.1:8080/debug/pprof
    pid: 4242
    tokio_console: 127.0.0.1:6669
    labels: {role: orchestration}
  - name: worker-rust-1
    pidfile: .pids/worker-rust-1.pid
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Targets) != 2 || cfg.Targets[0].PID != 4242 || cfg.Targets[0].Labels["role"] != "orchestration" || cfg.Targets[1].PIDFile == "" {
		t.Errorf("parsed %+v", cfg.Targets)
	}
}

func TestParseErrorsNameTheProblem(t *testing.T) {
	cases := map[string]string{
		"":                                   "empty targets file",
		"targets: [{name: a}]":               "nothing to attach to",
		"targets: [{pid: 1}]":                "missing name",
		"targets: [{name: ../../x, pid: 1}]": "invalid name",
		"targets: [{name: a, pid: 1}, {name: a, pid: 2}]": "duplicate name",
		"targets: [{name: a, pprof: ftp://x}]":            "not an http(s) URL",
		"targets: [{name: a, pid: 1, colour: 3}]":         "colour",
		"targets: {": "not a valid targets file",
		"targets: [{name: a, pid: 1, labels: {target: x}}]": "reserved",
	}
	for in, want := range cases {
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}

func TestPidsDirAndPidFiles(t *testing.T) {
	dir := t.TempDir()
	pids := filepath.Join(dir, ".pids")
	os.Mkdir(pids, 0o755)
	os.WriteFile(filepath.Join(pids, "orchestration-1.pid"), []byte("1234\n"), 0o644)
	os.WriteFile(filepath.Join(pids, "worker-ruby-1.pid"), []byte("not a pid"), 0o644)
	os.WriteFile(filepath.Join(pids, "notes.txt"), []byte("x"), 0o644)
	ts, err := FromPidsDir(pids)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].Name != "orchestration-1" || ts[1].Name != "worker-ruby-1" {
		t.Fatalf("targets %+v", ts)
	}
	if pid, err := ts[0].ResolvePID(); err != nil || pid != 1234 {
		t.Errorf("pid %d, %v", pid, err)
	}
	if _, err := ts[1].ResolvePID(); err == nil || !strings.Contains(err.Error(), "not a process id") {
		t.Errorf("bad pid file: %v", err)
	}
	if ts, err := FromPidsDir(filepath.Join(dir, "none")); err != nil || ts != nil {
		t.Errorf("missing dir: %v %v", ts, err)
	}
}

func TestSelectGlobs(t *testing.T) {
	all := []Target{{Name: "orchestration-1"}, {Name: "worker-rust-1"}, {Name: "worker-ruby-1"}, {Name: "worker-rust-2"}}
	got, err := Select(all, []string{"worker-rust-*"})
	if err != nil || len(got) != 2 || got[0].Name != "worker-rust-1" || got[1].Name != "worker-rust-2" {
		t.Errorf("Select = %v, %v", got, err)
	}
	if _, err := Select(all, []string{"nope-*"}); err == nil || !strings.Contains(err.Error(), "orchestration-1") {
		t.Errorf("a pattern that matches nothing: %v", err)
	}
	if _, err := Select(all, []string{"["}); err == nil {
		t.Errorf("bad pattern accepted")
	}
}

func TestSafeNameStaysInside(t *testing.T) {
	for in, want := range map[string]string{"../../x": "x", "a/b": "a_b", "..": "target", "ok-name_1.2": "ok-name_1.2", "": "target"} {
		if got := SafeName(in); got != want {
			t.Errorf("SafeName(%q) = %q, want %q", in, got, want)
		}
		if !ValidName(SafeName(in)) {
			t.Errorf("SafeName(%q) = %q is not a valid name", in, SafeName(in))
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("targets:\n  - name: a\n    pid: 1\n"))
	f.Add([]byte("targets: [{name: x, pprof: http://h/debug/pprof, labels: {a: b}}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		for _, tg := range cfg.Targets {
			if !ValidName(tg.Name) {
				t.Fatalf("accepted invalid name %q", tg.Name)
			}
		}
	})
}
