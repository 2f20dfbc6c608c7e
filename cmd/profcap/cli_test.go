package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/formats"
	"github.com/profcap/profcap/internal/golden"
)

// TestEveryCommandHelp: 'profcap COMMAND --help' (and -h) prints the help
// once, on stdout, and exits 0, for every command, hidden ones included.
func TestEveryCommandHelp(t *testing.T) {
	t.Setenv("PROFCAP_PYROSCOPE_SERVER", "") // push's --server default
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		var first string
		for _, flag := range []string{"--help", "-h"} {
			stdout, stderr, code := runCLI(t, name, flag)
			if code != 0 || stderr != "" {
				t.Errorf("%s %s: exit %d, stderr %q; want exit 0 and nothing on stderr", name, flag, code, stderr)
			}
			if !strings.HasPrefix(stdout, "Usage: profcap "+name) {
				t.Errorf("%s %s: stdout does not start with %q:\n%s", name, flag, "Usage: profcap "+name, stdout)
			}
			if n := strings.Count(stdout, "Usage:"); n != 1 {
				t.Errorf("%s %s: the help is printed %d times", name, flag, n)
			}
			if first == "" {
				first = stdout
			} else if stdout != first {
				t.Errorf("%s: -h and --help print different help", name)
			}
		}
		// A bad flag is a usage error that points at --help, printed once.
		_, stderr, code := runCLI(t, name, "--no-such-flag")
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "see 'profcap "+name+" --help'") {
			t.Errorf("%s --no-such-flag: exit %d, stderr %q; want exit 2 and one line naming --help", name, code, stderr)
		}
	}
}

// transcript runs each invocation of profcap and returns what a terminal
// would show: the command line, stdout, stderr and the exit status. repl
// pairs (old, new) replace what varies from run to run, such as the
// temporary directory.
func transcript(t *testing.T, invocations [][]string, repl ...string) string {
	t.Helper()
	var b strings.Builder
	for i, args := range invocations {
		stdout, stderr, code := runCLI(t, args...)
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "$ profcap %s\n", strings.Join(args, " "))
		b.WriteString(stdout)
		if stderr != "" {
			b.WriteString("[stderr]\n" + stderr)
		}
		fmt.Fprintf(&b, "[exit %d]\n", code)
	}
	return normalize(b.String(), repl...)
}

// foldedBundle writes a bundle whose merged profile of each kind is the
// folded stacks given for it: small enough to show whole in a golden file.
func foldedBundle(t *testing.T, dir string, kinds ...string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "merged"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := bundle.Manifest{Schema: bundle.Schema, ID: filepath.Base(dir), Status: bundle.StatusOK}
	for i := 0; i+1 < len(kinds); i += 2 {
		p, err := formats.Read(strings.NewReader(kinds[i+1]), formats.FormatFolded)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := p.Write(&buf); err != nil {
			t.Fatal(err)
		}
		rel := "merged/" + kinds[i] + ".pb.gz"
		writeTemp(t, dir, rel, buf.String())
		m.Merged = append(m.Merged, bundle.Merged{Kind: bundle.Kind(kinds[i]), Path: rel, Targets: []string{"api-1"}})
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	writeTemp(t, dir, bundle.ManifestFile, string(data))
	return dir
}

// cliFixtures writes the small inputs the CLI goldens share into dir.
func cliFixtures(t *testing.T, dir string) (a, b, bad, b1, b2 string) {
	t.Helper()
	a = writeTemp(t, dir, "a.folded", "main;work 3\nmain;idle 1\n")
	b = writeTemp(t, dir, "b.folded", "main;work 4\nmain;io;read 2\n")
	bad = writeTemp(t, dir, "bad.folded", "a;b 1\nnope\n")
	b1 = makeBundle(t, filepath.Join(dir, "b1"), 1)
	b2 = makeBundle(t, filepath.Join(dir, "b2"), 2)
	return a, b, bad, b1, b2
}

func TestFlameCLIGolden(t *testing.T) {
	dir := t.TempDir()
	a, b, bad, b1, b2 := cliFixtures(t, dir)
	heap := flameTestdata + "heap.pb.gz"
	got := transcript(t, [][]string{
		{"flame", "--format", "folded", a, b},
		{"flame", "--format", "folded", "--reverse", a},
		{"flame", "-o", filepath.Join(dir, "g.svg"), a},
		{"flame", "--sample-index", "alloc_space", "-o", filepath.Join(dir, "all.html"), b1},
		{"flame", "--format", "svg", "-o", filepath.Join(dir, "svgs"), b1, b2},
		{"flame"},
		{"flame", "--format", "png", a},
		{"flame", "--format", "folded", b1},
		{"flame", a, b1},
		{"flame", "--kind", "cpu", a},
		{"flame", "--format", "folded", "--kind", "wall", b1},
		{"flame", "--format", "folded", "--sample-index", "bogus", heap},
		{"flame", "--format", "folded", bad},
		{"flame", "--format", "folded", a, flameTestdata + "cpu.pb.gz"},
		{"flame", "--format", "folded", dir},
		{"flame", "--format", "folded", filepath.Join(dir, "missing.pb.gz")},
		{"diff", "-o", filepath.Join(dir, "d.svg"), a, b},
		{"diff", "--kind", "heap", "-o", filepath.Join(dir, "bd.html"), b1, b2},
		{"diff", a, b1},
	}, dir, "DIR")
	golden.Check(t, "testdata/flame.txt", got)
}

func TestConvertCLIGolden(t *testing.T) {
	dir := t.TempDir()
	a, _, _, b1, _ := cliFixtures(t, dir)
	fb1 := foldedBundle(t, filepath.Join(dir, "fb1"), "cpu", "main;work 5\n", "heap", "main;alloc 7\nmain;work;alloc 2\n")
	ss := filepath.Join(dir, "a.speedscope.json")
	pb := filepath.Join(dir, "samply.pb.gz")
	got := transcript(t, [][]string{
		{"convert", "--to", "folded", fixture("speedscope-0.0.1-evented.json"), "-o", "-"},
		{"convert", "-o", ss, a},
		{"convert", "--to", "folded", ss, "-o", "-"},
		{"convert", "-o", pb, fixture("samply-v49-macos.json.gz")},
		{"convert", "--to", "folded", pb, "-o", "-"},
		{"convert", "--kind", "heap", "--to", "folded", fb1, "-o", "-"},
		{"convert", "--kind", "heap", "-o", filepath.Join(dir, "heap.pb.gz"), b1},
		{"convert", fixture("speedscope-0.0.1-evented.json")},
		{"convert", "-o", "x.bin", a},
		{"convert", "--to", "svg", "-o", "-", a},
		{"convert", "-o", "-"},
		{"convert", "--input-format", "xml", "-o", "-", a},
		{"convert", "-o", "-", b1},
		{"convert", "-o", "-", "--to", "folded", filepath.Join(dir, "does-not-exist.json")},
	}, dir, "DIR")
	golden.Check(t, "testdata/convert.txt", got)
}

func TestMergeCLIGolden(t *testing.T) {
	dir := t.TempDir()
	a, b, _, b1, _ := cliFixtures(t, dir)
	fb1 := foldedBundle(t, filepath.Join(dir, "fb1"), "cpu", "main;work 5\n", "heap", "main;alloc 7\n")
	fb2 := foldedBundle(t, filepath.Join(dir, "fb2"), "cpu", "main;work 1\nmain;idle 2\n")
	all := filepath.Join(dir, "all.pb.gz")
	plain := filepath.Join(dir, "plain.pb.gz")
	got := transcript(t, [][]string{
		{"merge", "--label", "src", "-o", all, a, b},
		{"flame", "--format", "folded", "--group-by", "src", all},
		{"merge", "-o", plain, a, b},
		{"convert", "--to", "folded", plain, "-o", "-"},
		{"merge", "--kind", "cpu", "--label", "bundle", "-o", filepath.Join(dir, "cpu.pb.gz"), fb1, fb2},
		{"flame", "--format", "folded", "--group-by", "bundle", filepath.Join(dir, "cpu.pb.gz")},
		{"merge", a},
		{"merge", "--label", "a b", "-o", "x.pb.gz", a},
		{"merge", "-o", "x.pb.gz"},
		{"merge", "-o", "-", fixture("speedscope-0.0.1-evented.json"), fixture("samply-v49-macos.json.gz")},
		{"merge", "-o", "-", a, b1},
		{"merge", "-o", "-", b1},
	}, dir, "DIR")
	golden.Check(t, "testdata/merge.txt", got)
}

func TestCollapseCLIGolden(t *testing.T) {
	dir := t.TempDir()
	perf := "../../formats/testdata/perf-6.1-cpuclock-fp.txt"
	bad := writeTemp(t, dir, "bad.txt", "demo 1 1.000000: 1 cpu-clock: \n\tffff spin (/a)\nnot a frame\n\n")
	got := transcript(t, [][]string{
		{"collapse", perf},
		{"collapse", "--tid", "--kernel", perf},
		{"collapse", conformanceDir + "perf-cycles-instructions-01.txt"},
		{"collapse", "--event-filter", "instructions", conformanceDir + "perf-cycles-instructions-01.txt"},
		{"collapse", bad},
		{"collapse", "--strict", bad},
		{"collapse", perf, bad},
		{"collapse", filepath.Join(dir, "missing.txt")},
	}, dir, "DIR")
	golden.Check(t, "testdata/collapse.txt", got)
}
