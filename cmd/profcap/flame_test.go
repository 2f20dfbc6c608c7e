package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

func writeTemp(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const flameTestdata = "../../flame/testdata/"

// makeBundle writes a minimal bundle with merged cpu and heap profiles, the
// cpu one carrying target labels as merged bundle profiles do.
func makeBundle(t *testing.T, dir string, scale int64) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "merged"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cpu", "heap"} {
		f, err := os.Open(flameTestdata + k + ".pb.gz")
		if err != nil {
			t.Fatal(err)
		}
		p, err := profile.Parse(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range p.Sample {
			s.Label = map[string][]string{"target": {[]string{"api-1", "api-2"}[i%2]}}
			for j := range s.Value {
				s.Value[j] *= scale
			}
		}
		out, err := os.Create(filepath.Join(dir, "merged", k+".pb.gz"))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Write(out); err != nil {
			t.Fatal(err)
		}
		out.Close()
	}
	manifest := `{"schema":"profcap.bundle/v1","id":"test","status":"ok","window":{},"targets":[],
		"merged":[{"kind":"cpu","path":"merged/cpu.pb.gz","targets":["api-1","api-2"]},{"kind":"heap","path":"merged/heap.pb.gz","targets":["api-1","api-2"]}]}`
	writeTemp(t, dir, "manifest.json", manifest)
	return dir
}

func TestFlameOutputFormats(t *testing.T) {
	dir := t.TempDir()
	in := writeTemp(t, dir, "in.folded", "main;b 2\nmain;a<x> 3\n")
	// folded to stdout, sorted bytewise.
	out, errOut, code := runCLI(t, "flame", "--format", "folded", in)
	if code != 0 || out != "main;a<x> 3\nmain;b 2\n" {
		t.Fatalf("folded: code %d, out %q, err %q", code, out, errOut)
	}
	for _, tc := range []struct{ file, check string }{
		{"g.html", `data-pcf="flame"`},
		{"g.svg", "<svg"},
		{"g.speedscope.json", `"$schema":"https://www.speedscope.app/file-format-schema.json"`},
		{"g.folded", "main;a<x> 3\n"},
	} {
		path := filepath.Join(dir, tc.file)
		_, errOut, code := runCLI(t, "flame", "-o", path, in)
		if code != 0 {
			t.Errorf("%s: exit %d: %s", tc.file, code, errOut)
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), tc.check) {
			t.Errorf("%s lacks %q", tc.file, tc.check)
		}
		if !strings.Contains(errOut, "wrote "+path) {
			t.Errorf("%s: stderr %q does not report the file", tc.file, errOut)
		}
		if strings.HasSuffix(tc.file, ".svg") {
			d := xml.NewDecoder(bytes.NewReader(data))
			for {
				_, err := d.Token()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("svg: %v", err)
				}
			}
		}
	}
	// --format wins over the extension.
	path := filepath.Join(dir, "x.html")
	if _, e, code := runCLI(t, "flame", "--format", "svg", "-o", path, in); code != 0 {
		t.Fatal(e)
	}
	if data, _ := os.ReadFile(path); !bytes.Contains(data, []byte("<svg")) {
		t.Error("--format svg ignored")
	}
}

func TestFlameSniffedMatchesNamed(t *testing.T) {
	dir := t.TempDir()
	inputs := map[string]string{
		flameTestdata + "cpu.pb.gz":           "pprof",
		flameTestdata + "heap.pb.gz":          "pprof",
		flameTestdata + "pyspy.folded":        "folded",
		writeTemp(t, dir, "x.txt", "a;b 1\n"): "folded",
	}
	for in, f := range inputs {
		auto, e1, c1 := runCLI(t, "flame", "--format", "folded", in)
		named, e2, c2 := runCLI(t, "flame", "--format", "folded", "--input-format", f, in)
		if c1 != 0 || c2 != 0 {
			t.Errorf("%s: exit %d %d: %s %s", in, c1, c2, e1, e2)
			continue
		}
		if auto != named || auto == "" {
			t.Errorf("%s: sniffed and --input-format %s outputs differ", in, f)
		}
	}
}

func TestFlameOptions(t *testing.T) {
	dir := t.TempDir()
	a := writeTemp(t, dir, "a.folded", "main;work 3\nmain;idle 1\n")
	b := writeTemp(t, dir, "b.folded", "main;work 4\n")
	out, e, code := runCLI(t, "flame", "--format", "folded", a, b)
	if code != 0 || out != "main;idle 1\nmain;work 7\n" {
		t.Errorf("merge: code %d out %q err %q", code, out, e)
	}
	out, _, _ = runCLI(t, "flame", "--format", "folded", "--reverse", a)
	if out != "idle;main 1\nwork;main 3\n" {
		t.Errorf("--reverse: %q", out)
	}
	alloc, _, c1 := runCLI(t, "flame", "--format", "folded", "--sample-index", "alloc_space", flameTestdata+"heap.pb.gz")
	inuse, _, c2 := runCLI(t, "flame", "--format", "folded", "--sample-index", "inuse_space", flameTestdata+"heap.pb.gz")
	if c1 != 0 || c2 != 0 || alloc == inuse {
		t.Errorf("--sample-index alloc_space and inuse_space: exit %d %d, same output %v", c1, c2, alloc == inuse)
	}
	_, e, code = runCLI(t, "flame", "--format", "folded", "--sample-index", "bogus", flameTestdata+"heap.pb.gz")
	if code != 1 || !strings.Contains(e, `sample index "bogus"`) {
		t.Errorf("bad sample index: exit %d: %s", code, e)
	}
	svg := filepath.Join(dir, "t.svg")
	if _, e, code := runCLI(t, "flame", "--title", "My <title>", "--icicle", "--minwidth", "5", "-o", svg, a); code != 0 {
		t.Fatal(e)
	}
	if data, _ := os.ReadFile(svg); !bytes.Contains(data, []byte("My &lt;title&gt;")) {
		t.Error("--title not shown escaped in the SVG")
	}
}

func TestFlameUsageErrors(t *testing.T) {
	dir := t.TempDir()
	in := writeTemp(t, dir, "in.folded", "a 1\n")
	bundleDir := makeBundle(t, filepath.Join(dir, "bundle"), 1)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"flame"}, 2, "no INPUT"},
		{[]string{"flame", "--format", "png", in}, 2, `unknown --format "png"`},
		{[]string{"flame", "-o", filepath.Join(dir, "x.png"), in}, 0, ""}, // unknown extension: html
		{[]string{"flame", "--input-format", "json", in}, 2, `unknown input format "json"`},
		{[]string{"flame", "--bogus", in}, 2, "unknown flag"},
		{[]string{"flame", "--minwidth", "-1", in}, 2, "minwidth"},
		{[]string{"flame", filepath.Join(dir, "missing.pb.gz")}, 1, "missing.pb.gz"},
		{[]string{"flame", dir}, 1, "not a profcap bundle"},
		{[]string{"flame", in, bundleDir}, 2, "not both"},
		{[]string{"flame", "--format", "folded", bundleDir}, 2, "need -o DIR"},
		{[]string{"flame", "--kind", "cpu", in}, 2, "--kind only applies to bundle"},
		{[]string{"flame", "--format", "folded", "--input-format", "pprof", in}, 1, "in.folded: reading pprof"},
		{[]string{"flame", "--format", "folded", writeTemp(t, dir, "bad.folded", "a;b 1\nnope\n")}, 1, "bad.folded: reading folded stacks: line 2"},
		{[]string{"flame", "--format", "folded", writeTemp(t, dir, "prose", "hello there\n")}, 1, "cannot tell the input format"},
		{[]string{"flame", "--format", "folded", in, flameTestdata + "cpu.pb.gz"}, 1, "different sample types"},
		{[]string{"diff", in}, 2, "want BASE and NEW"},
		{[]string{"diff", "--format", "folded", in, in}, 2, `unknown --format "folded"`},
		{[]string{"diff", in, bundleDir}, 2, "both be bundles or both be profiles"},
	} {
		_, e, code := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(e, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d containing %q", tc.args, code, e, tc.code, tc.msg)
		}
	}
	for _, cmd := range []string{"flame", "diff"} {
		out, _, code := runCLI(t, cmd, "--help")
		if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "--sample-index") {
			t.Errorf("%s --help: exit %d, %q", cmd, code, out)
		}
	}
}

func TestFlameBundle(t *testing.T) {
	dir := t.TempDir()
	b := makeBundle(t, filepath.Join(dir, "bundle"), 1)
	page := filepath.Join(dir, "all.html")
	if _, e, code := runCLI(t, "flame", "-o", page, b); code != 0 {
		t.Fatal(e)
	}
	data, _ := os.ReadFile(page)
	if n := bytes.Count(data, []byte(`<div class="pcf" data-pcf="g`)); n != 2 {
		t.Errorf("bundle page has %d graphs, want 2 (cpu, heap)", n)
	}
	out := filepath.Join(dir, "svgs")
	if _, e, code := runCLI(t, "flame", "--format", "svg", "-o", out, b); code != 0 {
		t.Fatal(e)
	}
	for _, k := range []string{"cpu.svg", "heap.svg"} {
		if _, err := os.Stat(filepath.Join(out, k)); err != nil {
			t.Error(err)
		}
	}
	// One kind, one root frame per target.
	folded, e, code := runCLI(t, "flame", "--kind", "cpu", "--group-by", "target", "--format", "folded", b)
	if code != 0 {
		t.Fatal(e)
	}
	roots := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(folded), "\n") {
		roots[strings.SplitN(l, ";", 2)[0]] = true
	}
	if len(roots) != 2 || !roots["target=api-1"] || !roots["target=api-2"] {
		t.Errorf("--group-by target roots: %v", roots)
	}
	// --sample-index that only heap has falls back for cpu.
	if _, e, code := runCLI(t, "flame", "--sample-index", "alloc_space", "-o", filepath.Join(dir, "a.html"), b); code != 0 || !strings.Contains(e, "cpu") {
		t.Errorf("exit %d, stderr %q", code, e)
	}
}

func TestDiffCommand(t *testing.T) {
	dir := t.TempDir()
	base := writeTemp(t, dir, "base.folded", "main;fast 50\nmain;slow 50\n")
	cur := writeTemp(t, dir, "new.folded", "main;fast 20\nmain;slow 180\n")
	svg := filepath.Join(dir, "d.svg")
	if _, e, code := runCLI(t, "diff", "-o", svg, base, cur); code != 0 {
		t.Fatal(e)
	}
	data, _ := os.ReadFile(svg)
	if !bytes.Contains(data, []byte("slow (180 samples, 90.00%)\nbase 50 samples (50.00%) → new 180 samples (90.00%)")) {
		t.Errorf("diff SVG lacks base and new values of slow:\n%s", data)
	}
	html := filepath.Join(dir, "d.html")
	if _, e, code := runCLI(t, "diff", "-o", html, base, cur); code != 0 {
		t.Fatal(e)
	}
	data, _ = os.ReadFile(html)
	if !bytes.Contains(data, []byte(`"diff":true`)) {
		t.Error("diff page data lacks diff:true")
	}
	// Bundles: one section per shared kind; NEW twice as long compares equal.
	b1 := makeBundle(t, filepath.Join(dir, "b1"), 1)
	b2 := makeBundle(t, filepath.Join(dir, "b2"), 2)
	page := filepath.Join(dir, "bd.html")
	if _, e, code := runCLI(t, "diff", "-o", page, b1, b2); code != 0 {
		t.Fatal(e)
	}
	data, _ = os.ReadFile(page)
	if n := bytes.Count(data, []byte(`<div class="pcf" data-pcf="g`)); n != 2 {
		t.Errorf("bundle diff page has %d graphs, want 2", n)
	}
	dsvg := filepath.Join(dir, "dsvg")
	if _, e, code := runCLI(t, "diff", "--format", "svg", "--kind", "heap", "-o", filepath.Join(dir, "heap-diff.svg"), b1, b2); code != 0 {
		t.Fatal(e)
	}
	_, e, code := runCLI(t, "diff", "--format", "svg", "-o", dsvg, b1, b2)
	if code != 0 {
		t.Fatal(e)
	}
	data, _ = os.ReadFile(filepath.Join(dsvg, "cpu.svg"))
	if !bytes.Contains(data, []byte("self share +0.00 pp")) || bytes.Contains(data, []byte("rgb(255,55,55)")) {
		t.Error("a capture twice as long in the same shape shows change")
	}
}
