package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

func TestDidYouMean(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"recrod"}, `unknown command "recrod"; did you mean "record"?`},
		{[]string{"dif"}, `did you mean "diff"?`},
		{[]string{"record", "--duraton", "3s"}, "unknown flag: --duraton; did you mean --duration?"},
		{[]string{"flame", "--minwith", "2", "x"}, "did you mean --minwidth?"},
		{[]string{"flame", "--kind", "cpu,hep", "x"}, `unknown kind "hep"; did you mean "heap"?`},
		{[]string{"demo", "--sick", "worker-rust-2", "--stop"}, "--stop cannot be combined with --sick"},
	} {
		_, stderr, code := runCLI(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
	if got := didYouMean("zzzzzz", commandNames()); got != "" {
		t.Errorf("a word near nothing suggests %q", got)
	}
}

// merge --label names each input by where it lies in its bundle, so that
// two targets' cpu.pb.gz stay apart.
func TestMergeLabelByBundlePath(t *testing.T) {
	dir := t.TempDir()
	b := makeBundle(t, filepath.Join(dir, "b1"), 1)
	var inputs []string
	for _, name := range []string{"worker-1", "worker-2"} {
		src, err := os.ReadFile(filepath.Join(b, "merged", "cpu.pb.gz"))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(b, "targets", name, "cpu.pb.gz")
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, src, 0o644); err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, p)
	}
	out := filepath.Join(dir, "m.pb.gz")
	if _, e, code := runCLI(t, append([]string{"merge", "--label", "src", "-o", out}, inputs...)...); code != 0 {
		t.Fatal(e)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range p.Sample {
		seen[strings.Join(s.Label["src"], ",")] = true
	}
	if !seen["targets/worker-1/cpu.pb.gz"] || !seen["targets/worker-2/cpu.pb.gz"] || len(seen) != 2 {
		t.Errorf("labels %v, want the two bundle-relative paths", seen)
	}
	// Plain files with one name in two directories keep their paths.
	v := labelValues([]string{"a/cpu.pb.gz", "b/cpu.pb.gz", "c/heap.pb.gz"})
	if v["a/cpu.pb.gz"] != "a/cpu.pb.gz" || v["c/heap.pb.gz"] != "heap.pb.gz" {
		t.Errorf("labelValues %v", v)
	}
}

// diff writes diff-BASE-vs-NEW.html by default, titles its graphs after the
// two bundles, and warns when they were captured from different targets.
func TestDiffNamesAndWarns(t *testing.T) {
	dir := t.TempDir()
	b1 := makeBundle(t, filepath.Join(dir, "before"), 1)
	b2 := makeBundle(t, filepath.Join(dir, "after"), 2)
	for b, names := range map[string]string{b1: `[{"name":"api-1","labels":{},"status":"ok","profiles":[]},{"name":"api-2","labels":{},"status":"ok","profiles":[]}]`,
		b2: `[{"name":"api-1","labels":{},"status":"ok","profiles":[]},{"name":"api-3","labels":{},"status":"ok","profiles":[]}]`} {
		data, _ := os.ReadFile(filepath.Join(b, "manifest.json"))
		os.WriteFile(filepath.Join(b, "manifest.json"), []byte(strings.Replace(string(data), `"targets":[]`, `"targets":`+names, 1)), 0o644)
	}
	wd, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	_, stderr, code := runCLI(t, "diff", "before", "after")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "different targets; only in BASE: api-2; only in NEW: api-3") {
		t.Errorf("no warning about the targets:\n%s", stderr)
	}
	data, err := os.ReadFile(filepath.Join(dir, "diff-before-vs-after.html"))
	if err != nil {
		t.Fatalf("default output: %v (stderr %s)", err, stderr)
	}
	for _, want := range []string{"profcap diff: before → after", "cpu: before → after"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("diff page lacks %q", want)
		}
	}
}
