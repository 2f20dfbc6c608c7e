package folded

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/profcap/profcap/formats/internal/profiletest"
)

// stacks renders a profile back to "a;b;c N" lines, sorted, for comparison.
func stacks(t *testing.T, data string) []string {
	t.Helper()
	p, err := Parse(strings.NewReader(data))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var out []string
	for _, s := range p.Sample {
		var fr []string
		for i := len(s.Location) - 1; i >= 0; i-- {
			fr = append(fr, s.Location[i].Line[0].Function.Name)
		}
		out = append(out, strings.Join(fr, ";")+" "+itoa(s.Value[0]))
	}
	sort.Strings(out)
	return out
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func TestParseFixtures(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"simple.folded", []string{"main 1", "main;run;compute 17", "main;run;io wait 3"}},
		{"pyspy.folded", []string{
			"<module> (app.py:1);main (app.py:20);handle (app.py:11);json.dumps (/usr/lib/python3.11/json/__init__.py:231) 40",
			"<module> (app.py:1);main (app.py:20);time.sleep (<built-in>) 9",
			"process_request (server.py:44);render (templates.py:7) 3",
		}},
		{"rbspy.folded", []string{
			"<main> - /app/bin/server:10;block in run - /app/lib/worker.rb:22;Array#each - <internal:array>:0 17",
			"<main> - /app/bin/server:10;sleep - <internal:kernel>:0 4",
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got := stacks(t, string(data))
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestString checks the whole profile each file in testdata becomes against
// testdata/golden/FILE.string (pprof's Profile.String dump); go test
// -update rewrites them.
func TestString(t *testing.T) {
	files, err := filepath.Glob("testdata/*.folded")
	if err != nil || len(files) != 3 {
		t.Fatalf("fixtures %v (%v), want the 3 of testdata/README.md", files, err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			p, err := Parse(f)
			if err != nil {
				t.Fatal(err)
			}
			profiletest.Golden(t, name, p)
		})
	}
}

func TestParseSharesFrames(t *testing.T) {
	p, err := Parse(strings.NewReader("a;b 1\na;c 2\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Function) != 3 || len(p.Location) != 3 || len(p.Sample) != 2 {
		t.Fatalf("got %d functions, %d locations, %d samples; want 3, 3, 2", len(p.Function), len(p.Location), len(p.Sample))
	}
	if p.SampleType[0].Type != "samples" || p.SampleType[0].Unit != "count" {
		t.Errorf("sample type %v, want samples/count", p.SampleType[0])
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		line int
		msg  string
	}{
		{"a;b 1\nnocount\n", 2, "no count"},
		{"a;b x\n", 1, "not a non-negative number"},
		{"a;b -3\n", 1, "negative"},
		{"# c\n\n 5\n", 3, "empty stack"},
		{"a;b 99999999999999999999\n", 1, "too large"},
	} {
		_, err := Parse(strings.NewReader(tc.in))
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q) = %v, want a SyntaxError", tc.in, err)
			continue
		}
		if se.Pos() != tc.line || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Parse(%q) = %v at line %d, want line %d containing %q", tc.in, err, se.Pos(), tc.line, tc.msg)
		}
	}
}

func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*.folded")
	if err != nil || len(files) == 0 {
		f.Fatalf("no testdata/*.folded to seed from (%v)", err)
	}
	for _, fn := range files {
		data, err := os.ReadFile(fn)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a;;b 1\n;; 2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		if err := p.CheckValid(); err != nil {
			t.Fatalf("Parse returned an invalid profile: %v", err)
		}
		for _, s := range p.Sample {
			if s.Value[0] <= 0 {
				t.Fatalf("sample with value %d", s.Value[0])
			}
		}
	})
}
