package flame

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/formats/folded"
	"github.com/profcap/profcap/internal/golden"
)

func readProfile(t testing.TB, name string) *profile.Profile {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var p *profile.Profile
	if strings.HasSuffix(name, ".folded") {
		p, err = folded.Parse(f)
	} else {
		p, err = profile.Parse(f)
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

func foldedProfile(t testing.TB, s string) *profile.Profile {
	t.Helper()
	p, err := folded.Parse(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustTree(t testing.TB, p *profile.Profile, opt Options) *Tree {
	t.Helper()
	tr, err := NewTree(p, opt)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func render(t testing.TB, tr *Tree, opt Options, f func(io.Writer, *Tree, Options) error) string {
	t.Helper()
	var b bytes.Buffer
	if err := f(&b, tr, opt); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func find(n *Node, path ...string) *Node {
	for _, name := range path {
		n = findChild(n, name)
		if n == nil {
			return nil
		}
	}
	return n
}

func TestNewTreeValues(t *testing.T) {
	p := foldedProfile(t, "a;b;c 3\na;b 2\na;d 5\ne 1\n")
	tr := mustTree(t, p, Options{})
	if got := tr.Total(0); got != 11 {
		t.Errorf("root total %d, want 11", got)
	}
	for _, tc := range []struct {
		path        []string
		total, self int64
	}{
		{[]string{"a"}, 10, 0},
		{[]string{"a", "b"}, 5, 2},
		{[]string{"a", "b", "c"}, 3, 3},
		{[]string{"a", "d"}, 5, 5},
		{[]string{"e"}, 1, 1},
	} {
		n := find(tr.Root, tc.path...)
		if n == nil {
			t.Errorf("no node %v", tc.path)
			continue
		}
		if n.Total[0] != tc.total || n.Self(0) != tc.self {
			t.Errorf("%v: total %d self %d, want %d %d", tc.path, n.Total[0], n.Self(0), tc.total, tc.self)
		}
	}
	if tr.Nodes != 6 || tr.MaxDepth != 3 {
		t.Errorf("nodes %d depth %d, want 6 and 3", tr.Nodes, tr.MaxDepth)
	}
	// Reversed: leaves become roots, their callers children.
	rt := mustTree(t, p, Options{Reverse: true})
	if n := find(rt.Root, "c", "b", "a"); n == nil || n.Total[0] != 3 {
		t.Errorf("reversed c<-b<-a missing or wrong: %+v", n)
	}
	if n := find(rt.Root, "b", "a"); n == nil || n.Total[0] != 2 {
		t.Errorf("reversed b<-a missing or wrong: %+v", n)
	}
}

func TestSampleIndex(t *testing.T) {
	p := readProfile(t, "heap.pb.gz")
	def := mustTree(t, p, Options{})
	if got := def.SampleTypes[def.Selected].Type; got != "inuse_space" {
		t.Errorf("default sample type %q, want inuse_space (the last)", got)
	}
	alloc := mustTree(t, p, Options{SampleIndex: "alloc_space"})
	if got := alloc.SampleTypes[alloc.Selected].Type; got != "alloc_space" {
		t.Errorf("selected %q, want alloc_space", got)
	}
	if alloc.Total(alloc.Selected) <= alloc.Total(3) {
		t.Errorf("alloc_space %d not above inuse_space %d", alloc.Total(alloc.Selected), alloc.Total(3))
	}
	// Folded output follows the selected index.
	if a, b := render(t, alloc, Options{}, WriteFolded), render(t, def, Options{}, WriteFolded); a == b {
		t.Error("folded output is the same for alloc_space and inuse_space")
	}
	_, err := NewTree(p, Options{SampleIndex: "nope"})
	if err == nil || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), "alloc_space/bytes") {
		t.Errorf("unknown sample index: %v, want an error naming it and the choices", err)
	}
}

func TestFrameNaming(t *testing.T) {
	m := &profile.Mapping{ID: 1, Start: 0x400000, Limit: 0x500000, File: "/usr/lib/libfoo.so.1"}
	outer := &profile.Function{ID: 1, Name: "outer"}
	inner := &profile.Function{ID: 2, Name: "inlined"}
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "cpu", Unit: "nanoseconds"}},
		Mapping:    []*profile.Mapping{m},
		Function:   []*profile.Function{outer, inner},
		Location: []*profile.Location{
			{ID: 1, Line: []profile.Line{{Function: inner}, {Function: outer}}},
			{ID: 2, Mapping: m, Address: 0x401234},
			{ID: 3},
		},
	}
	p.Sample = []*profile.Sample{{Value: []int64{7}, Location: []*profile.Location{p.Location[2], p.Location[1], p.Location[0]},
		Label: map[string][]string{"target": {"api-1"}}}}
	tr := mustTree(t, p, Options{})
	if n := find(tr.Root, "outer", "inlined", "libfoo.so.1+0x1234", "[unknown]"); n == nil || n.Total[0] != 7 {
		t.Fatalf("want outer;inlined;libfoo.so.1+0x1234;[unknown], got %q", render(t, tr, Options{}, WriteFolded))
	}
	gt := mustTree(t, p, Options{GroupBy: "target"})
	if n := find(gt.Root, "target=api-1", "outer"); n == nil {
		t.Errorf("group-by target: got %q", render(t, gt, Options{}, WriteFolded))
	}
	// A bare name without a source file or mapping gives no language
	// signal: it gets the neutral colour; a mapped frame in a .so is C.
	if n := find(tr.Root, "outer"); n.Lang != LangOther {
		t.Errorf("outer classified as %v, want %v", n.Lang, LangOther)
	}
	if n := find(tr.Root, "outer", "inlined", "libfoo.so.1+0x1234"); n.Lang != LangC {
		t.Errorf("libfoo.so.1+0x1234 classified as %v, want %v", n.Lang, LangC)
	}
}

func TestGroupByTargetMerged(t *testing.T) {
	a := foldedProfile(t, "main;work 3\n")
	b := foldedProfile(t, "main;work 4\nmain;idle 1\n")
	for p, name := range map[*profile.Profile]string{a: "api-1", b: "api-2"} {
		for _, s := range p.Sample {
			s.Label = map[string][]string{"target": {name}}
		}
	}
	m, err := profile.Merge([]*profile.Profile{a, b})
	if err != nil {
		t.Fatal(err)
	}
	tr := mustTree(t, m, Options{GroupBy: "target"})
	got := render(t, tr, Options{}, WriteFolded)
	want := "target=api-1;main;work 3\ntarget=api-2;main;idle 1\ntarget=api-2;main;work 4\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name, file, mapping string
		want                Lang
	}{
		{"runtime.mallocgc", "", "", LangGo},
		{"github.com/x/y.(*Server).Serve.func1", "", "", LangGo},
		{"main.build", "/tmp/main.go", "", LangGo},
		{"tokio::runtime::task::raw::poll::h0123456789abcdef", "", "", LangRust},
		{"<alloc::vec::Vec<T> as core::ops::Drop>::drop", "", "", LangRust},
		{"std::vector<int>::push_back(int const&)", "", "", LangC},
		{"memcpy", "", "/usr/lib/x86_64-linux-gnu/libc.so.6", LangC},
		{"finish_task_switch.isra.0", "", "[kernel.kallsyms]", LangKernel},
		{"do_syscall_64_[k]", "", "", LangKernel},
		{"LazyCompile:~handler /app/server.js:10", "", "", LangJIT},
		{"handle (app.py:11)", "", "", LangPython},
		{"block in run - /app/lib/worker.rb:22", "", "", LangRuby},
	} {
		if got := classify(tc.name, tc.file, tc.mapping); got != tc.want {
			t.Errorf("classify(%q, %q, %q) = %v, want %v", tc.name, tc.file, tc.mapping, got, tc.want)
		}
	}
}

func TestNewTreeRejectsInvalid(t *testing.T) {
	if _, err := NewTree(nil, Options{}); err == nil {
		t.Error("NewTree(nil) succeeded")
	}
	p := foldedProfile(t, "a 1\n")
	p.Sample[0].Value = []int64{1, 2}
	if _, err := NewTree(p, Options{}); err == nil || !strings.Contains(err.Error(), "invalid profile") {
		t.Errorf("NewTree(invalid) = %v", err)
	}
}

func TestDiffTree(t *testing.T) {
	base := foldedProfile(t, "main;fast 50\nmain;slow 50\nmain;gone 100\n")
	cur := foldedProfile(t, "main;fast 10\nmain;slow 90\nmain;new 100\n")
	tr, err := NewDiffTree(base, cur, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Root.Base[0] != 200 || tr.Root.Total[0] != 200 {
		t.Fatalf("root base %d new %d, want 200 200", tr.Root.Base[0], tr.Root.Total[0])
	}
	for _, tc := range []struct {
		name      string
		base, cur int64
		grew      bool
	}{{"fast", 50, 10, false}, {"slow", 50, 90, true}, {"new", 0, 100, true}} {
		n := find(tr.Root, "main", tc.name)
		if n == nil || n.Base[0] != tc.base || n.Total[0] != tc.cur {
			t.Errorf("%s: %+v, want base %d new %d", tc.name, n, tc.base, tc.cur)
			continue
		}
		if d := selfDelta(n, 0, 200, 200); d > 0 != tc.grew {
			t.Errorf("%s: self share change %v, want grew=%v", tc.name, d, tc.grew)
		}
	}
	if find(tr.Root, "main", "gone") != nil {
		t.Error("a frame only in base appears in NEW's shape")
	}
	// Normalised by totals: twice the samples in the same shape is no change.
	double := foldedProfile(t, "main;fast 100\nmain;slow 100\nmain;gone 200\n")
	same, err := NewDiffTree(base, double, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := selfDelta(find(same.Root, "main", "slow"), 0, same.Root.Base[0], same.Root.Total[0]); d != 0 {
		t.Errorf("doubling the capture changed the share by %v", d)
	}
	svg := render(t, tr, Options{}, WriteSVG)
	if !strings.Contains(svg, "base 50 samples (25.00%) → new 10 samples (5.00%)") {
		t.Errorf("diff SVG tooltips lack base and new values:\n%s", svg)
	}
	heap := readProfile(t, "heap.pb.gz")
	if _, err := NewDiffTree(heap, cur, Options{}); err == nil || !strings.Contains(err.Error(), "samples/count") {
		t.Errorf("diff of unrelated sample types: %v", err)
	}
}

var evilNames = []string{"</script><img src=x onerror=alert(1)>", `a<b>&"quoted" 'single'`, "<!-- comment -->"}

func TestSVGIsXMLAndEscaped(t *testing.T) {
	for _, file := range []string{"evil.folded", "heap.pb.gz", "cpu.pb.gz", "pyspy.folded"} {
		for _, opt := range []Options{{}, {Icicle: true, Reverse: true, Title: `<title>&"x"`}} {
			tr := mustTree(t, readProfile(t, file), opt)
			svg := render(t, tr, opt, WriteSVG)
			texts := checkXML(t, svg)
			if file == "evil.folded" {
				for _, n := range evilNames {
					if !containsPrefix(texts, n) {
						t.Errorf("%s: name %q not found as text in SVG", file, n)
					}
				}
				if strings.Contains(svg, "<img") || strings.Contains(svg, "<script") || strings.Contains(svg, "<!--") {
					t.Errorf("%s: markup from a frame name leaked into the SVG", file)
				}
			}
		}
	}
}

// checkXML parses doc as XML and returns its character data.
func checkXML(t *testing.T, doc string) []string {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(doc))
	d.Strict = true
	var texts []string
	elems := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			elems++
			if elems == 1 && tk.Name.Local != "svg" {
				t.Fatalf("root element %q, want svg", tk.Name.Local)
			}
		case xml.CharData:
			texts = append(texts, string(tk))
		}
	}
	return texts
}

func containsPrefix(texts []string, s string) bool {
	for _, x := range texts {
		if strings.HasPrefix(x, s) {
			return true
		}
	}
	return false
}

func TestEmbedEscapes(t *testing.T) {
	tr := mustTree(t, readProfile(t, "evil.folded"), Options{})
	h, err := Embed("g1", tr, Options{Title: "</script><b>x</b>"})
	if err != nil {
		t.Fatal(err)
	}
	s := string(h)
	if strings.Count(s, "<script") != 1 || strings.Count(s, "</script>") != 1 || strings.Contains(s, "<img") || strings.Contains(s, "<b>") {
		t.Fatalf("a name broke out of the data script:\n%s", s)
	}
	start := strings.Index(s, ">{") + 1
	end := strings.LastIndex(s, "</script>")
	var data struct {
		Title string   `json:"title"`
		Names []string `json:"names"`
		Nodes []int64  `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(s[start:end]), &data); err != nil {
		t.Fatalf("embedded data is not JSON: %v", err)
	}
	for _, n := range evilNames {
		if !strings.Contains(strings.Join(data.Names, "\n"), n) {
			t.Errorf("name %q lost", n)
		}
	}
	if data.Title != "</script><b>x</b>" || len(data.Nodes) != tr.Nodes*3 {
		t.Errorf("title %q, %d node numbers for %d nodes", data.Title, len(data.Nodes), tr.Nodes)
	}
	for _, bad := range []string{"", "a b", "a\nb", strings.Repeat("a", 201)} {
		if _, err := Embed(bad, tr, Options{}); err == nil {
			t.Errorf("Embed(%q) accepted a bad id", bad)
		}
	}
	if h, err := Embed(`outlier-cpu-10.0.0.1:80"><b>`, tr, Options{}); err != nil || strings.Contains(string(h), `"><b>`) {
		t.Errorf("Embed with a target-name id: %v, or the id was not escaped", err)
	}
	var page bytes.Buffer
	if err := WriteHTML(&page, tr, Options{Title: "<i>t</i>"}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(page.String(), "<i>t</i>") || !strings.Contains(page.String(), "<title>&lt;i&gt;t&lt;/i&gt;</title>") {
		t.Error("page title not escaped")
	}
	if strings.Contains(page.String(), "http://") || strings.Contains(page.String(), "https://") || strings.Contains(page.String(), "<img") || strings.Contains(page.String(), "<link") {
		t.Error("page refers to the network")
	}
}

func TestFoldedRoundTrip(t *testing.T) {
	in := "main;a b 2\nmain;a b;c 3\nx 1\n"
	tr := mustTree(t, foldedProfile(t, in), Options{})
	if got := render(t, tr, Options{}, WriteFolded); got != in {
		t.Errorf("got\n%s\nwant\n%s", got, in)
	}
}

// speedscopeFile mirrors the schema's File type with every field optional,
// so validateSpeedscope can tell a missing field from a zero one.
type speedscopeFile struct {
	Schema *string `json:"$schema"`
	Shared *struct {
		Frames []map[string]any `json:"frames"`
	} `json:"shared"`
	Profiles           []map[string]json.RawMessage `json:"profiles"`
	ActiveProfileIndex *float64                     `json:"activeProfileIndex"`
	Exporter           *string                      `json:"exporter"`
	Name               *string                      `json:"name"`
}

// validateSpeedscope checks data against speedscope's file-format schema
// (src/lib/file-format-spec.ts): the required fields and types, sampled
// profiles with equal samples/weights lengths, frame indices in range and
// non-negative weights.
func validateSpeedscope(data []byte) error {
	var f speedscopeFile
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("not JSON of the File shape: %v", err)
	}
	if f.Schema == nil || *f.Schema != SpeedscopeSchema {
		return fmt.Errorf("$schema missing or not %q", SpeedscopeSchema)
	}
	if f.Shared == nil || f.Shared.Frames == nil {
		return fmt.Errorf("shared.frames missing")
	}
	for i, fr := range f.Shared.Frames {
		if _, ok := fr["name"].(string); !ok {
			return fmt.Errorf("shared.frames[%d].name missing or not a string", i)
		}
		for _, k := range []string{"line", "col"} {
			if v, ok := fr[k]; ok {
				if _, isNum := v.(float64); !isNum {
					return fmt.Errorf("shared.frames[%d].%s not a number", i, k)
				}
			}
		}
	}
	if f.Profiles == nil {
		return fmt.Errorf("profiles missing")
	}
	if f.ActiveProfileIndex != nil && (*f.ActiveProfileIndex < 0 || int(*f.ActiveProfileIndex) >= len(f.Profiles)) {
		return fmt.Errorf("activeProfileIndex %v out of range", *f.ActiveProfileIndex)
	}
	units := map[string]bool{"none": true, "nanoseconds": true, "microseconds": true, "milliseconds": true, "seconds": true, "bytes": true}
	for i, p := range f.Profiles {
		var typ, name, unit string
		var start, end float64
		var samples [][]int
		var weights []float64
		for _, fld := range []struct {
			key string
			dst any
		}{{"type", &typ}, {"name", &name}, {"unit", &unit}, {"startValue", &start}, {"endValue", &end}, {"samples", &samples}, {"weights", &weights}} {
			raw, ok := p[fld.key]
			if !ok {
				return fmt.Errorf("profiles[%d].%s missing", i, fld.key)
			}
			if err := json.Unmarshal(raw, fld.dst); err != nil {
				return fmt.Errorf("profiles[%d].%s: wrong type: %v", i, fld.key, err)
			}
		}
		if typ != "sampled" {
			return fmt.Errorf("profiles[%d].type %q, want sampled", i, typ)
		}
		if !units[unit] {
			return fmt.Errorf("profiles[%d].unit %q not a speedscope unit", i, unit)
		}
		if len(samples) != len(weights) {
			return fmt.Errorf("profiles[%d]: %d samples but %d weights", i, len(samples), len(weights))
		}
		var sum float64
		for j, s := range samples {
			for _, k := range s {
				if k < 0 || k >= len(f.Shared.Frames) {
					return fmt.Errorf("profiles[%d].samples[%d]: frame index %d out of range", i, j, k)
				}
			}
			if weights[j] < 0 {
				return fmt.Errorf("profiles[%d].weights[%d] is negative", i, j)
			}
			sum += weights[j]
		}
		if end-start < sum {
			return fmt.Errorf("profiles[%d]: endValue-startValue %v below the weights' sum %v", i, end-start, sum)
		}
	}
	return nil
}

func TestSpeedscopeValidates(t *testing.T) {
	// The validator accepts the real sampled files speedscope ships (the
	// speedscope importer's fixtures).
	for _, f := range []string{"speedscope-0.1.2-simple-sampled.speedscope.json", "speedscope-0.6.0-two-sampled.speedscope.json"} {
		data, err := os.ReadFile(filepath.Join("..", "formats", "speedscope", "testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := validateSpeedscope(data); err != nil {
			t.Errorf("validator rejects speedscope's own %s: %v", f, err)
		}
	}
	if err := validateSpeedscope([]byte(`{"$schema":"` + SpeedscopeSchema + `","shared":{"frames":[{"name":"a"}]},"profiles":[{"type":"sampled","name":"x","unit":"none","startValue":0,"endValue":1,"samples":[[1]],"weights":[1]}]}`)); err == nil {
		t.Error("validator accepts an out-of-range frame index")
	}
	for _, file := range []string{"heap.pb.gz", "cpu.pb.gz", "evil.folded"} {
		tr := mustTree(t, readProfile(t, file), Options{})
		out := render(t, tr, Options{}, WriteSpeedscope)
		if err := validateSpeedscope([]byte(out)); err != nil {
			t.Errorf("%s: %v", file, err)
		}
		var f struct {
			Profiles []struct {
				Unit     string  `json:"unit"`
				EndValue int64   `json:"endValue"`
				Weights  []int64 `json:"weights"`
			} `json:"profiles"`
			Active int `json:"activeProfileIndex"`
		}
		json.Unmarshal([]byte(out), &f)
		if len(f.Profiles) != len(tr.SampleTypes) || f.Active != tr.Selected {
			t.Errorf("%s: %d profiles active %d, want %d active %d", file, len(f.Profiles), f.Active, len(tr.SampleTypes), tr.Selected)
			continue
		}
		if got := f.Profiles[tr.Selected].EndValue; got != tr.Total(tr.Selected) {
			t.Errorf("%s: endValue %d, want the total %d", file, got, tr.Total(tr.Selected))
		}
		if file == "heap.pb.gz" && f.Profiles[1].Unit != "bytes" {
			t.Errorf("alloc_space unit %q, want bytes", f.Profiles[1].Unit)
		}
	}
}

func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		in  string
		opt Options
		out string
		f   func(io.Writer, *Tree, Options) error
	}{
		{"heap.pb.gz", Options{SampleIndex: "alloc_space"}, "heap-alloc_space.folded", WriteFolded},
		{"heap.pb.gz", Options{}, "heap-inuse_space.folded", WriteFolded},
		{"cpu.pb.gz", Options{}, "cpu.folded", WriteFolded},
		{"cpu.pb.gz", Options{Reverse: true}, "cpu-reverse.folded", WriteFolded},
		{"pyspy.folded", Options{}, "pyspy.folded", WriteFolded},
		{"evil.folded", Options{Title: "evil"}, "evil.svg", WriteSVG},
		{"evil.folded", Options{Icicle: true}, "evil-icicle.svg", WriteSVG},
		{"rbspy.folded", Options{}, "rbspy.speedscope.json", WriteSpeedscope},
	} {
		t.Run(tc.out, func(t *testing.T) {
			tr := mustTree(t, readProfile(t, tc.in), tc.opt)
			got := render(t, tr, tc.opt, tc.f)
			golden.Check(t, filepath.Join("testdata", "golden", tc.out), got)
			// Rendering twice gives the same bytes.
			if again := render(t, mustTree(t, readProfile(t, tc.in), tc.opt), tc.opt, tc.f); again != got {
				t.Error("output is not stable between runs")
			}
		})
	}
}

// FuzzRender feeds folded stacks through every renderer: none may fail or
// panic on a profile the parser accepted, and the SVG must stay XML.
func FuzzRender(f *testing.F) {
	files, err := filepath.Glob("testdata/*.folded")
	if err != nil || len(files) == 0 {
		f.Fatalf("no testdata/*.folded to seed from (%v)", err)
	}
	for _, fn := range files {
		data, err := os.ReadFile(fn)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, false)
	}
	f.Add([]byte("a;\x00;\xff 3\n"), true)
	f.Fuzz(func(t *testing.T, data []byte, reverse bool) {
		p, err := folded.Parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		opt := Options{Reverse: reverse}
		tr, err := NewTree(p, opt)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []func(io.Writer, *Tree, Options) error{WriteSVG, WriteFolded, WriteSpeedscope, WriteHTML} {
			if err := w(io.Discard, tr, opt); err != nil {
				t.Fatal(err)
			}
		}
		checkXML(t, render(t, tr, opt, WriteSVG))
		if err := validateSpeedscope([]byte(render(t, tr, opt, WriteSpeedscope))); err != nil {
			t.Fatal(err)
		}
	})
}

// A profile with far more distinct stacks than a graph can show builds a
// tree within MaxNodes, with the same total, the heavy paths intact and
// the pruning said.
func TestTreeBoundedByMaxNodes(t *testing.T) {
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}}}
	fid := uint64(0)
	loc := func(name string) *profile.Location {
		fid++
		f := &profile.Function{ID: fid, Name: name}
		l := &profile.Location{ID: fid, Line: []profile.Line{{Function: f}}}
		p.Function, p.Location = append(p.Function, f), append(p.Location, l)
		return l
	}
	hot := []*profile.Location{loc("hot_leaf"), loc("hot_mid"), loc("main")}
	p.Sample = append(p.Sample, &profile.Sample{Location: hot, Value: []int64{1_000_000}})
	var total int64 = 1_000_000
	for i := range 20_000 { // 20,000 distinct 5-deep stacks of weight 1
		var st []*profile.Location
		for d := range 5 {
			st = append(st, loc(fmt.Sprintf("cold_%d_%d", i, d)))
		}
		st = append(st, hot[2])
		p.Sample = append(p.Sample, &profile.Sample{Location: st, Value: []int64{1}})
		total++
	}
	tr, err := NewTree(p, Options{MaxNodes: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Nodes > 5000 || tr.PrunedBelow == 0 {
		t.Errorf("%d nodes, pruned below %g: want at most 5000 and a pruning share", tr.Nodes, tr.PrunedBelow)
	}
	if tr.Total(0) != total {
		t.Errorf("total %d, want %d", tr.Total(0), total)
	}
	if n := find(tr.Root, "main", "hot_mid", "hot_leaf"); n == nil || n.Total[0] != 1_000_000 {
		t.Errorf("the hot path lost its value: %+v", n)
	}
	full, err := NewTree(p, Options{MaxNodes: -1})
	if err != nil {
		t.Fatal(err)
	}
	if full.Nodes < 100_000 || full.PrunedBelow != 0 {
		t.Errorf("unbounded tree: %d nodes, pruned %g", full.Nodes, full.PrunedBelow)
	}
}
