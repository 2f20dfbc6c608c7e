package perfscript

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/formats/internal/profiletest"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

// TestParseFixtures parses every real perf script output in testdata into a
// valid CPU profile with thread and tid labels on every sample.
func TestParseFixtures(t *testing.T) {
	files := fixtureFiles(t)
	for _, want := range []string{
		"fixtures/perf-script-cpuclock-fp.txt",
		"fixtures/perf-script-cpuclock-fp-pidtid.txt",
		"fixtures/perf-script-cpuclock-dwarf-inline.txt",
		"fixtures/perf-script-sched-switch-wakeup-perprocess.txt",
		"fixtures/perf-script-sched-switch-systemwide-filtered.txt",
		"fixtures/ffprofiler-perfscript-test.perf.gz",
		"fixtures/ffprofiler-perfscript-simple-perf.txt.gz",
		"fixtures/ffprofiler-perfscript-graphviz.perf.gz",
		"fixtures/ffprofiler-perfscript-gzip.perf.gz",
	} {
		if !slices.Contains(files, want) {
			t.Errorf("fixture %s not found", want)
		}
	}
	for _, name := range files {
		t.Run(filepath.Base(name), func(t *testing.T) {
			data := readFixture(t, name)
			p, err := Parse(bytes.NewReader(data), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.CheckValid(); err != nil {
				t.Fatal(err)
			}
			var n int64
			for _, s := range p.Sample {
				n += s.Value[0]
				if len(s.Label["thread"]) != 1 || len(s.NumLabel["tid"]) != 1 {
					t.Fatalf("sample without thread/tid labels: %v", s)
				}
			}
			if n == 0 {
				t.Fatal("no samples")
			}
		})
	}
}

// fixtureFiles lists every perf script output in testdata, relative to it.
func fixtureFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"testdata/fixtures/perf-script-*.txt", "testdata/fixtures/ffprofiler-perfscript-*.gz", "testdata/conformance/*.txt"} {
		m, err := filepath.Glob(pat)
		if err != nil || len(m) == 0 {
			t.Fatalf("no fixtures %s (%v)", pat, err)
		}
		for _, f := range m {
			files = append(files, strings.TrimPrefix(f, "testdata/"))
		}
	}
	return files
}

// TestString checks the whole profile each real perf script output becomes
// against testdata/golden/FILE.string (pprof's Profile.String dump), and
// the off-CPU profiles of the sched_switch recordings against
// FILE.offcpu.string; go test -update rewrites them.
func TestString(t *testing.T) {
	files := fixtureFiles(t)
	if len(files) != 16 {
		t.Fatalf("%d fixtures, want the 9 real recordings and 7 conformance inputs of testdata/README.md", len(files))
	}
	for _, name := range files {
		t.Run(filepath.Base(name), func(t *testing.T) {
			p, err := Parse(bytes.NewReader(readFixture(t, name)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			profiletest.Golden(t, filepath.Base(name), p)
		})
	}
	for _, name := range []string{"fixtures/perf-script-sched-switch-systemwide-filtered.txt", "fixtures/perf-script-sched-switch-wakeup-perprocess.txt"} {
		t.Run(filepath.Base(name)+"/offcpu", func(t *testing.T) {
			p, err := ParseOffCPU(bytes.NewReader(readFixture(t, name)), OffCPUOptions{})
			if err != nil {
				t.Fatal(err)
			}
			profiletest.Golden(t, filepath.Base(name)+".offcpu", p)
		})
	}
}

// selfTop returns the function with the most self value (index vi).
func selfTop(p *profile.Profile, vi int) (string, int64, int64) {
	self := map[string]int64{}
	var total int64
	for _, s := range p.Sample {
		total += s.Value[vi]
		if len(s.Location) > 0 {
			self[s.Location[0].Line[0].Function.Name] += s.Value[vi]
		}
	}
	best, bv := "", int64(-1)
	for f, v := range self {
		if v > bv {
			best, bv = f, v
		}
	}
	return best, bv, total
}

func TestParseCPUClock(t *testing.T) {
	p, err := Parse(bytes.NewReader(readFixture(t, "fixtures/perf-script-cpuclock-fp-pidtid.txt")), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if top, _, _ := selfTop(p, 1); top != "spin" {
		t.Errorf("top function %q, want spin", top)
	}
	// cpu-clock periods are ns: every sample here is 2004008 ns.
	for _, s := range p.Sample {
		if s.Value[1] != 2004008*s.Value[0] {
			t.Fatalf("cpu value %d for %d samples, want the cpu-clock period", s.Value[1], s.Value[0])
		}
		if len(s.NumLabel["pid"]) != 1 || s.NumLabel["pid"][0] != 12560 {
			t.Fatalf("pid label %v, want 12560", s.NumLabel["pid"])
		}
	}
	tids := map[int64]bool{}
	for _, s := range p.Sample {
		tids[s.NumLabel["tid"][0]] = true
	}
	if len(tids) < 2 {
		t.Errorf("threads %v: want the main thread and the worker", tids)
	}
	if p.DurationNanos <= 0 {
		t.Errorf("duration %d", p.DurationNanos)
	}
}

// TestParseInline checks that "(inlined)" frames join the real frame's
// Location (leaf line first), and are not read as a DSO named "inlined".
func TestParseInline(t *testing.T) {
	p, err := Parse(bytes.NewReader(readFixture(t, "fixtures/perf-script-cpuclock-dwarf-inline.txt")), Options{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range p.Location {
		if len(l.Line) == 2 && l.Line[0].Function.Name == "mix" && l.Line[1].Function.Name == "spin" {
			found = true
			if l.Mapping == nil || !strings.HasSuffix(l.Mapping.File, "/demo") {
				t.Errorf("inline location mapping %v", l.Mapping)
			}
		}
	}
	for _, m := range p.Mapping {
		if m.File == "inlined" {
			t.Error("a mapping named \"inlined\"")
		}
	}
	if !found {
		t.Error("no location with mix inlined into spin")
	}
}

func TestParseFrame(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Frame
	}{
		{"\tffffffff82265488 __schedule+0x628 ([kernel.kallsyms])", Frame{PC: 0xffffffff82265488, Sym: "__schedule", Module: "[kernel.kallsyms]"}},
		{"\t           c584f [unknown] (/memfd:sealed-91 (deleted))", Frame{PC: 0xc584f, Sym: "[unknown]", Module: "/memfd:sealed-91 (deleted)"}},
		{"\t            11fe mix+0x2e (inlined)", Frame{PC: 0x11fe, Sym: "mix", Inlined: true}},
		{"        b3cea535\tshould_trace() (/system/lib/libc.so)", Frame{PC: 0xb3cea535, Sym: "should_trace()", Module: "/system/lib/libc.so"}},
		{"\t dd0 std::vector<int>::push_back(int const&) (/x/a.out)", Frame{PC: 0xdd0, Sym: "std::vector<int>::push_back(int const&)", Module: "/x/a.out"}},
		{"\t 7f00 [unknown] ([unknown])", Frame{PC: 0x7f00, Sym: "[unknown]", Module: "[unknown]"}},
	} {
		got, ok, err := ParseFrame(1, []byte(tc.line))
		if err != nil || !ok || got != tc.want {
			t.Errorf("ParseFrame(%q) = %+v, %v, %v; want %+v", tc.line, got, ok, err, tc.want)
		}
	}
	if _, ok, err := ParseFrame(1, []byte("  demo.c:5")); ok || err != nil {
		t.Errorf("srcline: ok=%v err=%v, want skipped", ok, err)
	}
	if name := symName(Frame{PC: 0x1a2b, Sym: "[unknown]", Module: "/usr/bin/stripped"}); name != "stripped+0x1a2b" {
		t.Errorf("unknown frame named %q, want module+offset", name)
	}
}

func TestParseHeader(t *testing.T) {
	for _, tc := range []struct {
		line          string
		comm          string
		pid, tid, cpu int
		time          int64
		period        uint64
		event         string
	}{
		{"demo 12560   441.103634:    2004008 cpu-clock:pppH: ", "demo", -1, 12560, -1, 441103634000, 2004008, "cpu-clock:pppH"},
		{"V8 WorkerThread 24636/25607 [000] 94564.109216: 100 cycles:", "V8 WorkerThread", 24636, 25607, 0, 94564109216000, 100, "cycles"},
		{":-1    -1 [001]   486.123456: sched:sched_switch: prev_comm=x", ":-1", -1, -1, 1, 486123456000, 0, "sched:sched_switch"},
		{"Gecko\t25122 [007] 115539.936601:\t\t1000000 task-clock:u:", "Gecko", -1, 25122, 7, 115539936601000, 1000000, "task-clock:u"},
		{"node-v011 31912 cpu-clock: ", "node-v011", -1, 31912, -1, -1, 0, "cpu-clock"},
		{"worker 12 1234 [003] 1.000000001: 5 cycles:", "worker 12", -1, 1234, 3, 1000000001, 5, "cycles"},
	} {
		h, err := ParseHeader(1, []byte(tc.line))
		if err != nil {
			t.Errorf("%q: %v", tc.line, err)
			continue
		}
		if h.Comm != tc.comm || h.PID != tc.pid || h.TID != tc.tid || h.CPU != tc.cpu || h.Time != tc.time || h.Period != tc.period || h.Event != tc.event {
			t.Errorf("%q:\n got %+v", tc.line, h)
		}
	}
	if BaseEvent("cpu-clock:pppH") != "cpu-clock" || BaseEvent("sched:sched_switch") != "sched:sched_switch" {
		t.Error("BaseEvent")
	}
}

// TestParseErrors: input that is not perf script text gives a *SyntaxError
// with the line where it goes wrong, never a panic.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		line     int
	}{
		{"binary", "\x7fELF\x02\x01\x01\x00\x00\x00\x00\n\x00\x01\x02", 1},
		{"truncated frame", "demo 1 1.000000: 1 cpu-clock: \n\tffff spin+0x1 (/a)\n\tfff", 3},
		{"garbled frame", "demo 1 1.000000: 1 cpu-clock: \n\tnot-hex spin (/a)\n", 2},
		{"frames without header", "\n\tffff spin (/a)\n", 2},
		{"folded stacks", "a;b;c 10\n", 1},
		{"no event", "demo 1 1.000000:\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.in), Options{})
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a *SyntaxError", err)
			}
			if se.Line != tc.line {
				t.Errorf("error at line %d, want %d: %v", se.Line, tc.line, err)
			}
		})
	}
}

func TestParseLongLine(t *testing.T) {
	in := "demo 1 1.000000: 1 cpu-clock: \n\t" + strings.Repeat("f", MaxLineLen+10) + "\n"
	_, err := Parse(strings.NewReader(in), Options{})
	var se *SyntaxError
	if !errors.As(err, &se) || se.Line != 2 {
		t.Fatalf("err = %v, want a *SyntaxError at line 2", err)
	}
}

func TestParseEventFilter(t *testing.T) {
	data := readFixture(t, "conformance/perf-cycles-instructions-01.txt")
	count := func(opt Options) int64 {
		p, err := Parse(bytes.NewReader(data), opt)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, s := range p.Sample {
			n += s.Value[0]
		}
		return n
	}
	first, cycles, instr := count(Options{}), count(Options{Event: "cycles"}), count(Options{Event: "instructions"})
	if first != instr || cycles == 0 || instr == 0 {
		t.Errorf("samples: default %d, cycles %d, instructions %d; default should be the first event's (instructions)", first, cycles, instr)
	}
}

func TestCollapseWarnings(t *testing.T) {
	in := "demo 1 1.000000: 1 cpu-clock: \n\tffff spin (/a)\ngarbage-no-match\n\n"
	var out, warn bytes.Buffer
	if err := Collapse(strings.NewReader(in), &out, CollapseOptions{Warn: &warn}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "demo;spin 1\n" {
		t.Errorf("output %q", out.String())
	}
	if !strings.Contains(warn.String(), "line 3: unrecognized line") {
		t.Errorf("warnings %q", warn.String())
	}
	err := Collapse(strings.NewReader(in), io.Discard, CollapseOptions{Strict: true})
	var se *SyntaxError
	if !errors.As(err, &se) || se.Line != 3 {
		t.Errorf("strict: err = %v, want a *SyntaxError at line 3", err)
	}
}
