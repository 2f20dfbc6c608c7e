package formats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
)

var sniffCases = []struct {
	file string
	want Format
}{
	{"go-cpu.pb", FormatPprof},
	{"go-heap.pb.gz", FormatPprof},
	{"pyspy.folded", FormatFolded},
	{"simple.folded.gz", FormatFolded},
	{"perf-6.1-cpuclock-fp.txt", FormatPerfScript},
	{"perf-header-graphviz.perf.gz", FormatPerfScript},
	{"simpleperf.txt.gz", FormatPerfScript},
	{"samply-v41-ls.json", FormatFirefox},
	{"samply-v49-macos.json.gz", FormatFirefox},
	{"samply-v49-as-v70.json", FormatFirefox},
	{"speedscope-0.0.1-evented.json", FormatSpeedscope},
	{"speedscope-0.6.0-two-sampled.json", FormatSpeedscope},
}

func head(t testing.TB, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > SniffLen {
		data = data[:SniffLen]
	}
	return data
}

func TestSniff(t *testing.T) {
	for _, tc := range sniffCases {
		if got := Sniff(head(t, tc.file)); got != tc.want {
			t.Errorf("Sniff(%s) = %q, want %q", tc.file, got, tc.want)
		}
	}
	for _, in := range []string{"", "hello world\n", "a;b c\n", "{\"$schema\": 1}\n"} {
		if got := Sniff([]byte(in)); got != FormatUnknown {
			t.Errorf("Sniff(%q) = %q, want unknown", in, got)
		}
	}
	// A head cut in the middle of a line still sniffs as folded.
	long := strings.Repeat("main;work;compute 1\n", SniffLen/20+10)
	if got := Sniff([]byte(long[:SniffLen])); got != FormatFolded {
		t.Errorf("Sniff(cut folded) = %q, want folded", got)
	}
}

// TestReadSniffedMatchesNamed reads every fixture twice, once with its format
// named and once sniffed, and requires the same profile (or the same error).
func TestReadSniffedMatchesNamed(t *testing.T) {
	for _, tc := range sniffCases {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			named, nerr := ReadFile(path, tc.want)
			auto, aerr := ReadFile(path, FormatAuto)
			if (nerr == nil) != (aerr == nil) || nerr != nil && nerr.Error() != aerr.Error() {
				t.Fatalf("named: %v, sniffed: %v", nerr, aerr)
			}
			if nerr != nil {
				if tc.want != FormatPerfScript {
					t.Fatalf("ReadFile: %v", nerr)
				}
				// The perf script parser is built elsewhere; until it is, both
				// paths must fail the same way, naming the file.
				if !strings.Contains(nerr.Error(), path) {
					t.Errorf("error %q does not name %s", nerr, path)
				}
				return
			}
			if named.String() != auto.String() {
				t.Errorf("sniffed profile differs from named one")
			}
			if len(named.Sample) == 0 {
				t.Errorf("no samples")
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		path   string
		f      Format
		substr string
	}{
		{write("empty", ""), FormatAuto, "empty input"},
		{write("prose.txt", "just some prose\n"), FormatAuto, "cannot tell the input format"},
		{write("bad.folded", "a;b 1\na;b x\n"), FormatFolded, "line 2"},
		{write("bad.pb", "a;b 1\n"), FormatPprof, "reading pprof"},
		{write("trunc.pb.gz", "\x1f\x8b\x08\x00garbage"), FormatAuto, "reading pprof"},
		{dir, FormatAuto, "is a directory"},
		{filepath.Join(dir, "missing"), FormatAuto, "no such file"},
	} {
		_, err := ReadFile(tc.path, tc.f)
		if err == nil || !strings.Contains(err.Error(), tc.substr) {
			t.Errorf("ReadFile(%s, %q) = %v, want an error containing %q", tc.path, tc.f, err, tc.substr)
		}
		if err != nil && !strings.Contains(err.Error(), tc.path) {
			t.Errorf("error %q does not name %s", err, tc.path)
		}
	}
	if _, err := ReadFile(filepath.Join(dir, "prose.txt"), FormatAuto); !errors.Is(err, ErrUnknownFormat) {
		t.Errorf("want ErrUnknownFormat, got %v", err)
	}
}

// TestSniffJSON: speedscope only by its $schema; Firefox by its version or
// its meta+threads shape; other JSON is unknown, also when cut short.
func TestSniffJSON(t *testing.T) {
	for in, want := range map[string]Format{
		`{"$schema": "https://www.speedscope.app/file-format-schema.json", "profiles": []}`: FormatSpeedscope,
		`{"profiles": [], "shared": {"frames": []}}`:                                        FormatUnknown,
		`{"meta": {"version": 24, "preprocessedProfileVersion": 66}}`:                       FormatFirefox,
		`{"meta": {"interval": 1}, "libs": [], "threads": [`:                                FormatFirefox,
		`{"meta": {"interval": 1}}`:                                                         FormatUnknown,
		"\ufeff  \n{\"meta\":{\"preprocessedProfileVersion\":41":                            FormatFirefox,
		`{"traceEvents": []}`:                                                               FormatUnknown,
	} {
		if got := Sniff([]byte(in)); got != want {
			t.Errorf("Sniff(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestJSONErrorsNameInput: a broken file of a JSON format gives an error
// naming the file, the place and what is wrong.
func TestJSONErrorsNameInput(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"cut.json":        `{"meta":{"preprocessedProfileVersion":49},"threads":[{"samples":{"stack":[1,`,
		"speedscope.json": `{"$schema":"https://www.speedscope.app/file-format-schema.json","shared":{"frames":[]},"profiles":[{"type":"sampled","unit":"none","samples":[[4]],"weights":[1]}]}`,
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadFile(path, FormatAuto)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "byte") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"": FormatAuto, "auto": FormatAuto, "pprof": FormatPprof, "Folded": FormatFolded, "perf": FormatPerfScript, "samply": FormatFirefox, "firefox": FormatFirefox, "speedscope": FormatSpeedscope} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseFormat("json"); err == nil || !strings.Contains(err.Error(), `"json"`) {
		t.Errorf("ParseFormat(json) = %v, want an error naming it", err)
	}
}

func fuzzSeeds(f *testing.F) {
	for _, tc := range sniffCases {
		f.Add(head(f, tc.file))
	}
}

func FuzzSniff(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		switch Sniff(data) {
		case FormatPprof, FormatFolded, FormatPerfScript, FormatFirefox, FormatSpeedscope, FormatUnknown:
		default:
			t.Fatal("Sniff returned a format outside its set")
		}
	})
}

func FuzzRead(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Read(strings.NewReader(string(data)), FormatAuto)
		if err == nil {
			if err := p.CheckValid(); err != nil {
				t.Fatalf("Read returned an invalid profile: %v", err)
			}
		}
	})
}

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeBundle writes a bundle whose merged profile of each kind holds the
// folded stacks given for it (kind, stacks, kind, stacks ...).
func writeBundle(t *testing.T, dir string, kinds ...string) string {
	t.Helper()
	m := bundle.Manifest{Schema: bundle.Schema, ID: "test", Status: bundle.StatusOK}
	for i := 0; i+1 < len(kinds); i += 2 {
		p, err := Read(strings.NewReader(kinds[i+1]), FormatFolded)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := p.Write(&b); err != nil {
			t.Fatal(err)
		}
		rel := "merged/" + kinds[i] + ".pb.gz"
		writeFile(t, dir, rel, b.String())
		m.Merged = append(m.Merged, bundle.Merged{Kind: bundle.Kind(kinds[i]), Path: rel})
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, bundle.ManifestFile, string(data))
	return dir
}

// stacks lists a profile's samples as "frame;frame value" lines (root
// first) with their labels, sorted.
func stacks(p *profile.Profile) string {
	var ls []string
	for _, s := range p.Sample {
		var fs []string
		for i := len(s.Location) - 1; i >= 0; i-- {
			for j := len(s.Location[i].Line) - 1; j >= 0; j-- {
				fs = append(fs, s.Location[i].Line[j].Function.Name)
			}
		}
		l := strings.Join(fs, ";") + " " + strconv.FormatInt(s.Value[0], 10)
		for k, v := range s.Label {
			l += " " + k + "=" + strings.Join(v, ",")
		}
		ls = append(ls, l)
	}
	slices.Sort(ls)
	return strings.Join(ls, "\n")
}

func TestLoadMergedFiles(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "a.folded", "main;work 3\nmain;idle 1\n")
	b := writeFile(t, dir, "b.folded", "main;work 4\n")
	sets, err := LoadMerged(context.Background(), []string{a, b}, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 1 || sets[0].Kind != "" || sets[0].Bundles {
		t.Fatalf("sets %+v, want one set of files", sets)
	}
	s := sets[0]
	if got, want := stacks(s.Profile), "main;idle 1\nmain;work 7"; got != want {
		t.Errorf("merged stacks\n%s\nwant\n%s", got, want)
	}
	if !slices.Equal(s.Inputs, []string{a, b}) || s.Title() != "a.folded and 1 more" {
		t.Errorf("inputs %v, title %q", s.Inputs, s.Title())
	}
	// --label: each input's samples carry its base name.
	sets, err = LoadMerged(context.Background(), []string{a, b}, LoadOptions{Label: "src"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := stacks(sets[0].Profile), "main;idle 1 src=a.folded\nmain;work 3 src=a.folded\nmain;work 4 src=b.folded"; got != want {
		t.Errorf("labelled stacks\n%s\nwant\n%s", got, want)
	}
	// Standard input, read from opt.Stdin.
	sets, err = LoadMerged(context.Background(), []string{"-"}, LoadOptions{Stdin: strings.NewReader("x;y 2\n")})
	if err != nil || stacks(sets[0].Profile) != "x;y 2" || sets[0].Title() != "-" {
		t.Errorf("stdin: %v, %v", sets, err)
	}
	if _, err := LoadMerged(context.Background(), []string{"-"}, LoadOptions{Stdin: strings.NewReader("")}); err == nil || !strings.Contains(err.Error(), "standard input: empty input") {
		t.Errorf("empty stdin: %v", err)
	}
}

func TestLoadMergedBundles(t *testing.T) {
	dir := t.TempDir()
	b1 := writeBundle(t, filepath.Join(dir, "b1"), "cpu", "main;work 5\n", "heap", "main;alloc 7\n")
	b2 := writeBundle(t, filepath.Join(dir, "b2"), "heap", "main;alloc 1\n", "offcpu", "main;sleep 9\n")
	sets, err := LoadMerged(context.Background(), []string{b1, b2}, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range sets {
		if !s.Bundles {
			t.Errorf("%s: not marked as from bundles", s.Kind)
		}
		got = append(got, s.Title()+": "+stacks(s.Profile))
	}
	want := []string{"cpu — b1: main;work 5", "heap — b1 and 1 more: main;alloc 8", "offcpu — b2: main;sleep 9"}
	if !slices.Equal(got, want) {
		t.Errorf("sets\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	sets, err = LoadMerged(context.Background(), []string{b1, b2}, LoadOptions{Kinds: []bundle.Kind{bundle.Heap}, Label: "bundle"})
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 1 || stacks(sets[0].Profile) != "main;alloc 1 bundle=b2\nmain;alloc 7 bundle=b1" {
		t.Errorf("--kind heap --label bundle: %d sets, %q", len(sets), stacks(sets[0].Profile))
	}
	// Load gives each merged profile with where it came from.
	ls, err := Load(context.Background(), b1, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[1].Kind != bundle.Heap || !ls[1].Bundle || ls[1].Input != b1 || ls[1].Origin != filepath.Join(b1, "merged", "heap.pb.gz") {
		t.Errorf("Load(bundle) = %+v", ls)
	}
	if _, err := LoadMerged(context.Background(), []string{b1}, LoadOptions{Kinds: []bundle.Kind{"wall"}}); err == nil || err.Error() != b1+": no merged profile of kind wall" {
		t.Errorf("missing kind: %v", err)
	}
	empty := writeBundle(t, filepath.Join(dir, "empty"))
	if _, err := LoadMerged(context.Background(), []string{empty}, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "bundle holds no merged profiles") {
		t.Errorf("empty bundle: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "a.folded", "main;work 3\n")
	b := writeBundle(t, filepath.Join(dir, "b"), "cpu", "main;work 5\n")
	ctx := context.Background()
	if _, err := LoadMerged(ctx, []string{a, b}, LoadOptions{}); !errors.Is(err, ErrMixedInputs) {
		t.Errorf("files and bundles: %v, want ErrMixedInputs", err)
	}
	if _, err := LoadMerged(ctx, []string{a}, LoadOptions{Kinds: []bundle.Kind{bundle.CPU}}); !errors.Is(err, ErrKindsWithoutBundles) {
		t.Errorf("kinds with files: %v, want ErrKindsWithoutBundles", err)
	}
	if _, err := Load(ctx, a, LoadOptions{Kinds: []bundle.Kind{bundle.CPU}}); !errors.Is(err, ErrKindsWithoutBundles) {
		t.Errorf("Load, kinds with a file: %v, want ErrKindsWithoutBundles", err)
	}
	if _, err := LoadMerged(ctx, []string{dir}, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "is a directory but not a profcap bundle") {
		t.Errorf("plain directory: %v", err)
	}
	if _, err := LoadMerged(ctx, []string{filepath.Join(dir, "nope")}, LoadOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	cpu := filepath.Join("testdata", "go-cpu.pb")
	if _, err := LoadMerged(ctx, []string{a, cpu}, LoadOptions{}); err == nil || err.Error() != "cannot merge "+a+" (samples/count) with "+cpu+" (samples/count, cpu/nanoseconds): different sample types" {
		t.Errorf("different sample types: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := LoadMerged(cancelled, []string{a}, LoadOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// TestMergeAlignsPeriodTypes: inputs that differ only in what they call
// the period (folded against perf script) merge; the first one's wins.
func TestMergeAlignsPeriodTypes(t *testing.T) {
	a, err := Read(strings.NewReader("main;work 3\n"), FormatFolded)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Read(strings.NewReader("main;work 4\n"), FormatFolded)
	if err != nil {
		t.Fatal(err)
	}
	b.PeriodType, b.Period = &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}, 1000
	c, err := Read(strings.NewReader("main;idle 1\n"), FormatFolded)
	if err != nil {
		t.Fatal(err)
	}
	c.PeriodType = nil
	p, err := Merge([]Loaded{{Profile: a, Origin: "a"}, {Profile: b, Origin: "b"}, {Profile: c, Origin: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := stacks(p); got != "main;idle 1\nmain;work 7" {
		t.Errorf("merged %q", got)
	}
	if p.PeriodType == nil || *p.PeriodType != *a.PeriodType {
		t.Errorf("period type %v, want the first input's %v", p.PeriodType, a.PeriodType)
	}
	if _, err := Merge(nil); err == nil {
		t.Error("merging nothing succeeded")
	}
	if q, err := Merge([]Loaded{{Profile: a}}); err != nil || q != a {
		t.Errorf("one profile is not returned as it is: %v", err)
	}
}
