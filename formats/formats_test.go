package formats

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
