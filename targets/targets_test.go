package targets

import (
	"errors"
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

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	two := filepath.Join(dir, "two.yaml")
	os.WriteFile(two, []byte("targets:\n  - name: orchestration-1\n    pprof: http://127.0.0.1:1/debug/pprof\n  - name: worker-rust-1\n    pid: 1\n"), 0o644)
	one := filepath.Join(dir, "one.yaml")
	os.WriteFile(one, []byte("targets:\n  - name: 127.0.0.1_6060\n    pid: 7\n"), 0o644)
	broken := filepath.Join(dir, "broken.yaml")
	os.WriteFile(broken, []byte("targets: {"), 0o644)
	pids := filepath.Join(dir, ".pids")
	os.Mkdir(pids, 0o755)
	os.WriteFile(filepath.Join(pids, "api-1.pid"), []byte("11\n"), 0o644)
	os.WriteFile(filepath.Join(pids, "api-2.pid"), []byte("12\n"), 0o644)
	missing := filepath.Join(dir, "missing.yaml")
	nopids := filepath.Join(dir, "no-pids")
	const url = "http://127.0.0.1:6060/debug/pprof"

	for _, tc := range []struct {
		name   string
		sel    Selection
		want   string // names, comma-separated
		source string
		usage  string // a *UsageError containing this
		err    string // another error containing this
	}{
		{name: "file, all", sel: Selection{Config: two, All: true, Require: true}, want: "orchestration-1,worker-rust-1", source: two},
		{name: "file, glob", sel: Selection{Config: two, Names: []string{"worker-*"}, Require: true}, want: "worker-rust-1", source: two},
		{name: "file, one target needs no pick", sel: Selection{Config: one, Require: true}, want: "127.0.0.1_6060", source: one},
		{name: "file, several need a pick", sel: Selection{Config: two, Require: true}, usage: "2 targets in " + two + ": pick some with --target NAME"},
		{name: "file, listing takes all", sel: Selection{Config: two}, want: "orchestration-1,worker-rust-1", source: two},
		{name: "file, no match", sel: Selection{Config: two, Names: []string{"nope-*"}, Require: true}, usage: `no target matches "nope-*" (known: orchestration-1, worker-rust-1)`},
		{name: "file, bad pattern", sel: Selection{Config: two, Names: []string{"["}, Require: true}, usage: "bad --target pattern"},
		{name: "file and ad-hoc, names kept apart", sel: Selection{Config: one, All: true, URLs: []string{url, url}, PIDs: []int{7}}, want: "127.0.0.1_6060,127.0.0.1_6060-2,127.0.0.1_6060-3,pid-7", source: one},
		{name: "ad-hoc only", sel: Selection{Config: missing, PidsDir: nopids, URLs: []string{url}, PIDs: []int{42}, Require: true}, want: "127.0.0.1_6060,pid-42", source: "flags"},
		{name: "bad url", sel: Selection{Config: missing, PidsDir: nopids, URLs: []string{"ftp://x"}}, usage: `--url "ftp://x": not an http(s) URL`},
		{name: "bad pid", sel: Selection{Config: missing, PidsDir: nopids, PIDs: []int{0}}, usage: "--pid 0: not a process id"},
		{name: "no file: .pids/", sel: Selection{Config: missing, PidsDir: pids, All: true, Require: true}, want: "api-1,api-2", source: pids + "/"},
		{name: "no file: .pids/, glob", sel: Selection{Config: missing, PidsDir: pids, Names: []string{"api-2"}, Require: true}, want: "api-2", source: pids + "/"},
		{name: "named file missing", sel: Selection{Config: missing, ConfigExplicit: true, PidsDir: pids, All: true}, usage: "targets file " + missing + " does not exist"},
		{name: "names without a pool", sel: Selection{Config: missing, PidsDir: nopids, Names: []string{"x"}, Require: true}, usage: "--target needs a targets file (" + missing + ") or a " + nopids + "/ directory here"},
		{name: "nothing, record", sel: Selection{Config: missing, PidsDir: nopids, Require: true}, usage: "no targets: give --target NAME with a profcap.yaml or " + nopids + "/ here, or --url URL, or --pid PID"},
		{name: "nothing, targets", sel: Selection{Config: missing, PidsDir: nopids}, usage: "no targets: no profcap.yaml or " + nopids + "/ here; give --config FILE, --url or --pid"},
		{name: "broken default file, ad-hoc still work", sel: Selection{Config: broken, URLs: []string{url}}, want: "127.0.0.1_6060", source: "flags"},
		{name: "broken named file", sel: Selection{Config: broken, ConfigExplicit: true, URLs: []string{url}}, err: "not a valid targets file"},
		{name: "broken default file alone", sel: Selection{Config: broken, Require: true}, err: "not a valid targets file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, source, err := Resolve(tc.sel)
			var ue *UsageError
			switch {
			case tc.usage != "":
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.usage) {
					t.Fatalf("err = %v (%T), want a *UsageError containing %q", err, err, tc.usage)
				}
				return
			case tc.err != "":
				if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v (%T), want an error (not a usage error) containing %q", err, err, tc.err)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			var names []string
			for _, tg := range ts {
				names = append(names, tg.Name)
			}
			if got := strings.Join(names, ","); got != tc.want || source != tc.source {
				t.Errorf("got %s from %s, want %s from %s", got, source, tc.want, tc.source)
			}
		})
	}
}

// TestResolveDefaults: with no Config and no PidsDir, profcap.yaml and
// .pids/ of the working directory are read.
func TestResolveDefaults(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	os.Mkdir(".pids", 0o755)
	os.WriteFile(filepath.Join(".pids", "api-1.pid"), []byte("11\n"), 0o644)
	ts, source, err := Resolve(Selection{Require: true})
	if err != nil || len(ts) != 1 || ts[0].Name != "api-1" || source != ".pids/" {
		t.Fatalf("from .pids/: %v from %q, %v", ts, source, err)
	}
	os.WriteFile(DefaultConfig, []byte("targets:\n  - name: svc\n    pid: 1\n"), 0o644)
	ts, source, err = Resolve(Selection{Require: true})
	if err != nil || len(ts) != 1 || ts[0].Name != "svc" || source != DefaultConfig {
		t.Fatalf("from %s: %v from %q, %v", DefaultConfig, ts, source, err)
	}
}
