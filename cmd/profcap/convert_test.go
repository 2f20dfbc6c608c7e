package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/profcap/profcap/formats"
)

// runSub runs one subcommand function as realMain would: stdout, stderr
// and the exit code.
func runSub(t *testing.T, fn func(context.Context, []string, io.Writer, io.Writer) error, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := fn(context.Background(), args, &out, &errb)
	if err != nil {
		errb.WriteString("profcap: " + err.Error() + "\n")
	}
	return out.String(), errb.String(), exitCode(err)
}

func fixture(name string) string { return filepath.Join("..", "..", "formats", "testdata", name) }

func total(t *testing.T, path string, f formats.Format) int64 {
	t.Helper()
	p, err := formats.ReadFile(path, f)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, s := range p.Sample {
		n += s.Value[0]
	}
	return n
}

func TestConvertSamplyToPprof(t *testing.T) {
	out := filepath.Join(t.TempDir(), "cpu.pb.gz")
	_, stderr, code := runSub(t, runConvert, fixture("samply-v49-macos.json.gz"), "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// 236 = the weighted sample count the Firefox Profiler shows for the file.
	if n := total(t, out, formats.FormatPprof); n != 236 {
		t.Errorf("total %d, want 236", n)
	}
}

func TestConvertSpeedscopeToFolded(t *testing.T) {
	stdout, stderr, code := runSub(t, runConvert, "--to", "folded", fixture("speedscope-0.0.1-evented.json"), "-o", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if want := "a;b 5\na;b;c 5\na;b;d 4\n"; stdout != want {
		t.Errorf("got %q, want %q", stdout, want)
	}
}

// TestConvertRoundTrip: folded → speedscope → folded gives the same lines.
func TestConvertRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ss := filepath.Join(dir, "py.speedscope.json")
	if _, stderr, code := runSub(t, runConvert, "../../formats/folded/testdata/pyspy.folded", "-o", ss); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	stdout, stderr, code := runSub(t, runConvert, "--to", "folded", ss, "-o", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want, err := os.ReadFile("../../formats/folded/testdata/pyspy.folded")
	if err != nil {
		t.Fatal(err)
	}
	if stdout != string(want) {
		t.Errorf("round trip changed the stacks:\n%s\nwant\n%s", stdout, want)
	}
}

func TestMerge(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "all.pb.gz")
	_, stderr, code := runSub(t, runMerge, "--label", "src", "-o", out, fixture("samply-v41-ls.json"), fixture("samply-v49-macos.json.gz"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "wrote "+out) {
		t.Errorf("stderr %q", stderr)
	}
	p, err := formats.ReadFile(out, formats.FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	bySrc := map[string]int64{}
	for _, s := range p.Sample {
		bySrc[s.Label["src"][0]] += s.Value[0]
	}
	if bySrc["samply-v41-ls.json"] != 13069 || bySrc["samply-v49-macos.json.gz"] != 236 {
		t.Errorf("per input: %v", bySrc)
	}
	// Without --label: the same totals, no label.
	out2 := filepath.Join(dir, "plain.pb.gz")
	if _, stderr, code := runSub(t, runMerge, "-o", out2, fixture("samply-v41-ls.json"), fixture("samply-v49-macos.json.gz")); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if n := total(t, out2, formats.FormatPprof); n != 13069+236 {
		t.Errorf("merged total %d", n)
	}
}

func TestConvertMergeUsage(t *testing.T) {
	for _, tc := range []struct {
		fn   func(context.Context, []string, io.Writer, io.Writer) error
		args []string
		code int
		want string
	}{
		{runConvert, []string{"--help"}, 0, "Examples:"},
		{runMerge, []string{"--help"}, 0, "Examples:"},
		{runConvert, []string{fixture("speedscope-0.0.1-evented.json")}, 2, "-o OUT is required"},
		{runConvert, []string{"-o", "x.bin", fixture("speedscope-0.0.1-evented.json")}, 2, "cannot tell the output format"},
		{runConvert, []string{"--to", "svg", "-o", "-", fixture("speedscope-0.0.1-evented.json")}, 2, "unknown --to"},
		{runConvert, []string{"-o", "-"}, 2, "no INPUT"},
		{runConvert, []string{"--bogus"}, 2, "unknown flag"},
		{runConvert, []string{"--input-format", "xml", "-o", "-", "x"}, 2, "unknown input format"},
		{runMerge, []string{"a.pb.gz"}, 2, "-o OUT.pb.gz is required"},
		{runMerge, []string{"--label", "a b", "-o", "x.pb.gz", "a"}, 2, "--label"},
		{runMerge, []string{"-o", "-", fixture("speedscope-0.0.1-evented.json"), fixture("samply-v49-macos.json.gz")}, 1, "different sample types"},
		{runConvert, []string{"-o", "-", "--to", "folded", "does-not-exist.json"}, 1, "does-not-exist.json"},
	} {
		stdout, stderr, code := runSub(t, tc.fn, tc.args...)
		if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q", tc.args, code, stdout, stderr, tc.code, tc.want)
		}
	}
}

// TestFlameAndDiffReadNewFormats: flame and diff take samply and speedscope
// files through formats.ReadFile with no change of their own.
func TestFlameAndDiffReadNewFormats(t *testing.T) {
	stdout, stderr, code := runCLI(t, "flame", "--format", "folded", fixture("speedscope-0.6.0-two-sampled.json"))
	if code != 0 || stdout != "a;b 10000000000\na;b;c 10000000000\na;b;d 8000000000\n" {
		t.Errorf("flame speedscope: exit %d, %q %s", code, stdout, stderr)
	}
	stdout, stderr, code = runCLI(t, "flame", "--format", "folded", "--group-by", "thread", fixture("samply-v49-as-v70.json"))
	if code != 0 || !strings.Contains(stdout, "thread=a.out;dyld+0x6153;a.out+0x3ec3;libsystem_pthread.dylib+0x948b;libsystem_kernel.dylib+0x2bac 60\n") {
		t.Errorf("flame samply: exit %d, %q %s", code, stdout, stderr)
	}
	out := filepath.Join(t.TempDir(), "d.svg")
	if _, stderr, code := runCLI(t, "diff", "-o", out, fixture("samply-v41-ls.json"), fixture("samply-v49-macos.json.gz")); code != 0 {
		t.Errorf("diff: exit %d: %s", code, stderr)
	}
}
