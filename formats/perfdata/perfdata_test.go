package perfdata

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/formats/perfscript"
	"github.com/profcap/profcap/internal/testreq"
)

// buildWorkload compiles testdata/workload.c with frame pointers and
// without PLT stubs (perf 6.1 names a PLT stub after the unsized symbol
// before .plt, which is wrong and which this reader does not copy; see
// docs/importers.md).
func buildWorkload(t testing.TB, dir string) string {
	t.Helper()
	testreq.Command(t, "gcc")
	src, err := filepath.Abs("testdata/workload.c")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "workload")
	if out, err := exec.Command("gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-fno-plt", "-pthread", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

// perfRecord runs perf record with args around cmd into dir/name.
func perfRecord(t testing.TB, dir, name string, args []string, cmd ...string) string {
	t.Helper()
	perf := testreq.Command(t, "perf")
	out := filepath.Join(dir, name)
	full := append(append([]string{"record", "-q", "-o", out}, args...), append([]string{"--"}, cmd...)...)
	c := exec.Command(perf, full...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		msg := stderr.String()
		if strings.Contains(msg, "perf_event_paranoid") || strings.Contains(msg, "Permission") || strings.Contains(msg, "No permission") {
			testreq.Missing(t, "permission to record with perf (%s)", strings.TrimSpace(msg))
		}
		t.Fatalf("perf %v: %v\n%s", full, err, msg)
	}
	return out
}

// perfScript runs perf script -i file with args.
func perfScript(t testing.TB, file string, args ...string) []byte {
	t.Helper()
	perf := testreq.Command(t, "perf")
	c := exec.Command(perf, append([]string{"script", "-i", file}, args...)...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("perf script: %v\n%s", err, stderr.String())
	}
	return out
}

// TestCollapseMatchesPerfScript records a real process with perf record -g
// and checks that folding perf.data equals folding perf script's text, for
// every collapse option, byte for byte. The workload has threads with
// their own comms, a one-letter comm (which stackcollapse-perf.pl reads
// oddly: it takes the fields after it into the comm), 150-deep stacks
// (past perf script's 127 frames), kernel stacks and libc calling back into
// the program.
func TestCollapseMatchesPerfScript(t *testing.T) {
	dir := t.TempDir()
	bin := buildWorkload(t, dir)
	for _, rec := range []struct {
		name string
		args []string
	}{
		{"cpu", []string{"-F", "999", "-g"}},
		{"period", []string{"-e", "cpu-clock", "-c", "500000", "-g"}},
		{"sched", []string{"-e", "sched:sched_switch", "--switch-events", "-g"}},
	} {
		t.Run(rec.name, func(t *testing.T) {
			data := perfRecord(t, dir, rec.name+".data", rec.args, bin, "0.5")
			withPID := []string{"-F", "+pid"}
			if rec.name == "sched" {
				// -F on a tracepoint drops the callchain perf script adds
				// by default: name every field of the default output.
				withPID = []string{"-F", "comm,pid,tid,cpu,time,event,trace,ip,sym,symoff,dso"}
			}
			for _, opt := range []struct {
				flags []string
				copt  perfscript.CollapseOptions
				ps    []string
			}{
				{nil, perfscript.CollapseOptions{}, nil},
				{[]string{"--pid"}, perfscript.CollapseOptions{PID: true}, withPID},
				{[]string{"--tid"}, perfscript.CollapseOptions{TID: true}, withPID},
				{[]string{"--kernel"}, perfscript.CollapseOptions{Kernel: true}, nil},
				{[]string{"--all"}, perfscript.CollapseOptions{All: true}, nil},
				{[]string{"--addrs"}, perfscript.CollapseOptions{Addrs: true}, nil},
			} {
				var want, got bytes.Buffer
				if err := perfscript.Collapse(bytes.NewReader(perfScript(t, data, opt.ps...)), &want, opt.copt); err != nil {
					t.Fatal(err)
				}
				if err := CollapseFile(data, &got, opt.copt, Options{}); err != nil {
					t.Fatal(err)
				}
				if want.Len() == 0 {
					t.Fatalf("%v: perf script folds to nothing", opt.flags)
				}
				if !bytes.Equal(want.Bytes(), got.Bytes()) {
					t.Errorf("%v: perf.data folds differently from perf script:\n%s", opt.flags, lineDiff(want.String(), got.String()))
				}
			}
			if rec.name == "cpu" {
				var got bytes.Buffer
				CollapseFile(data, &got, perfscript.CollapseOptions{}, Options{})
				for _, want := range []string{"spinner;", "writer;"} { // on a loaded machine a thread may get few samples
					if !strings.Contains(got.String(), want) {
						t.Errorf("no %q in\n%s", want, got.String())
					}
				}
			}
		})
	}
}

// lineDiff shows the lines only one side has.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for _, l := range w {
		if !slices.Contains(g, l) {
			fmt.Fprintf(&b, "- %.300s\n", l)
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			fmt.Fprintf(&b, "+ %.300s\n", l)
		}
	}
	return b.String()
}

// canon prints a profile as sorted "labels | stack | values" lines, for
// comparing two profiles built in different orders.
func canon(p *profile.Profile) string {
	var lines []string
	for _, s := range p.Sample {
		var fr []string
		for _, l := range s.Location {
			for _, ln := range l.Line {
				fr = append(fr, fmt.Sprintf("%s@%s#%x", ln.Function.Name, ln.Function.Filename, l.Address))
			}
		}
		var labels []string
		for k, v := range s.Label {
			labels = append(labels, k+"="+strings.Join(v, ","))
		}
		for k, v := range s.NumLabel {
			labels = append(labels, fmt.Sprintf("%s=%v", k, v))
		}
		slices.Sort(labels)
		lines = append(lines, fmt.Sprintf("%s | %s | %v", strings.Join(labels, " "), strings.Join(fr, ";"), s.Value))
	}
	slices.Sort(lines)
	// Samples with one stack and labels may come as one or as several.
	var merged []string
	for _, l := range lines {
		merged = append(merged, l)
	}
	return fmt.Sprintf("types %v period %d duration %d\n%s", typeNames(p.SampleType), p.Period, p.DurationNanos, strings.Join(merged, "\n"))
}

// mergeSame sums samples of equal stacks and labels, so that profiles that
// add samples one at a time and ones that add them grouped compare equal.
func mergeSame(t *testing.T, p *profile.Profile) *profile.Profile {
	t.Helper()
	m, err := profile.Merge([]*profile.Profile{p})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestReadMatchesPerfScript checks that Read builds the profiles the perf
// collector builds from perf script's text: on-CPU (perfscript.Parse of
// -F comm,pid,tid,time,period,event,ip,sym,symoff,dso) and off-CPU
// (ParseOffCPU of the collector's fields with --show-switch-events).
func TestReadMatchesPerfScript(t *testing.T) {
	dir := t.TempDir()
	bin := buildWorkload(t, dir)
	t.Run("cpu", func(t *testing.T) {
		data := perfRecord(t, dir, "cpu.data", []string{"-F", "499", "-g"}, bin, "0.5")
		text := perfScript(t, data, "--ns", "-F", "comm,pid,tid,time,period,event,ip,sym,symoff,dso")
		opt := perfscript.Options{Frequency: 499}
		want, err := perfscript.Parse(bytes.NewReader(text), opt)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadFile(data, Options{Kind: KindCPU, CPU: opt})
		if err != nil {
			t.Fatal(err)
		}
		if w, g := canon(mergeSame(t, want)), canon(mergeSame(t, got)); w != g {
			t.Errorf("profiles differ:\n%s", lineDiff(w, g))
		}
	})
	t.Run("offcpu", func(t *testing.T) {
		data := perfRecord(t, dir, "off.data", []string{"-e", "sched:sched_switch", "--switch-events", "-k", "CLOCK_MONOTONIC", "--call-graph", "fp"}, bin, "0.3")
		text := perfScript(t, data, "--ns", "-F", "comm,pid,tid,cpu,time,event,trace,ip,sym,symoff,dso", "--show-switch-events")
		for _, opt := range []perfscript.OffCPUOptions{{}, {ExcludeRunnable: true}} {
			want, err := perfscript.ParseOffCPU(bytes.NewReader(text), opt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ReadFile(data, Options{OffCPU: opt}) // KindAuto: an off-CPU recording
			if err != nil {
				t.Fatal(err)
			}
			if got.SampleType[0].Type != "offcpu" {
				t.Fatalf("KindAuto read an off-CPU recording as %v", got.SampleType)
			}
			if w, g := canon(mergeSame(t, want)), canon(mergeSame(t, got)); w != g {
				t.Errorf("%+v: profiles differ:\n%s", opt, lineDiff(w, g))
			}
		}
	})
}

// TestTestdata reads the committed recordings (testdata/README.md) on any
// machine: their files are not there, so frames stay unnamed, but threads,
// counts and the kinds of profile must come out.
func TestTestdata(t *testing.T) {
	for _, tc := range []struct {
		file    string
		kind    string
		threads []string
	}{
		{"fp-cpu.data", "samples", []string{"spinner", "writer", "x"}},
		{"pipe.data", "samples", []string{"spinner", "writer"}},
		{"offcpu.data", "offcpu", []string{"sleeper"}},
		{"nocallchain.data", "samples", []string{"spinner"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			p, err := ReadFile(filepath.Join("testdata", tc.file), Options{NoSymbols: true})
			if err != nil {
				t.Fatal(err)
			}
			if p.SampleType[0].Type != tc.kind || len(p.Sample) == 0 {
				t.Fatalf("%v, %d samples", p.SampleType, len(p.Sample))
			}
			seen := map[string]bool{}
			for _, s := range p.Sample {
				seen[s.Label["thread"][0]] = true
			}
			for _, th := range tc.threads {
				if !seen[th] {
					t.Errorf("no samples of thread %q (have %v)", th, seen)
				}
			}
		})
	}
}

func TestNotPerfData(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"text", []byte("this is perf script text, not perf.data\n\n\n"), "no PERFILE2 magic"},
		{"short", []byte("PERF"), "too short"},
		{"truncated", func() []byte {
			b, _ := os.ReadFile("testdata/fp-cpu.data")
			return b[:200]
		}(), "truncated"},
	} {
		_, err := Parse(tc.data)
		var fe *FormatError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a FormatError saying %q", tc.name, err, tc.want)
		}
	}
	// A header whose data section ends before the file does, cut in the
	// middle of a record: the records before it are folded, then the error.
	b, _ := os.ReadFile("testdata/fp-cpu.data")
	f, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	cut := append([]byte(nil), b...)
	// Shrink the data section by 3 bytes: its last record runs past it.
	f.bo.PutUint64(cut[48:], uint64(f.recEnd-f.recOff-3))
	var out bytes.Buffer
	err = Collapse(bytes.NewReader(cut), &out, perfscript.CollapseOptions{}, Options{NoSymbols: true})
	if err == nil || !strings.Contains(err.Error(), "truncated") || out.Len() == 0 {
		t.Errorf("cut file: %v, %d bytes folded", err, out.Len())
	}
}

// TestDWARFNeedsPerf: a --call-graph dwarf recording is detected; without
// perf the error says perf script is needed, with it perf script runs.
func TestDWARFNeedsPerf(t *testing.T) {
	_, err := ReadFile("testdata/dwarf.data", Options{Perf: filepath.Join(t.TempDir(), "no-perf")})
	if err == nil || !strings.Contains(err.Error(), "DWARF") {
		t.Errorf("with a missing perf: %v", err)
	}
	f, _ := os.ReadFile("testdata/dwarf.data")
	pf, err := Parse(f)
	if err != nil || pf.needsPerf() == "" {
		t.Fatalf("dwarf.data not detected: %v", err)
	}
	testreq.Command(t, "perf")
	var notes []string
	var out bytes.Buffer
	if err := CollapseFile("testdata/dwarf.data", &out, perfscript.CollapseOptions{}, Options{Notes: func(n string) { notes = append(notes, n) }}); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "running perf script") }) {
		t.Errorf("notes %q", notes)
	}
}

func TestTracingData(t *testing.T) {
	b, err := os.ReadFile("testdata/offcpu.data")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Tracing == nil {
		t.Fatal("no HEADER_TRACING_DATA")
	}
	var sw *EventFormat
	for _, ev := range f.Tracing.Events {
		if ev.Name == "sched_switch" {
			sw = ev
		}
	}
	if sw == nil || sw.System != "sched" || sw.Field("prev_state") == nil || sw.Field("next_pid") == nil {
		t.Fatalf("sched_switch format: %+v", sw)
	}
	ts := statesOf(sw.PrintFmt)
	for v, want := range map[uint64]string{0: "R", 1: "S", 2: "D", 0x80: "I", ts.max: "R+", 1 | 2: "S|D"} {
		if got := ts.format(v); got != want {
			t.Errorf("state %#x: %q, want %q", v, got, want)
		}
	}
	if name := f.eventName(f.Attrs[0]); name != "sched:sched_switch" {
		t.Errorf("event name %q", name)
	}
	if len(f.BuildIDs) == 0 {
		t.Error("no build-ids from HEADER_BUILD_ID")
	}
}

func FuzzRead(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.data")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err == nil && len(b) < 100<<10 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := Parse(data)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("not a FormatError: %v", err)
			}
			return
		}
		if pf.needsPerf() != "" {
			return // handed to perf script, not read here
		}
		opt := Options{NoSymbols: true, Perf: "/nonexistent/perf"}
		_ = Collapse(bytes.NewReader(data), io.Discard, perfscript.CollapseOptions{}, opt)
		p, err := Read(bytes.NewReader(data), opt)
		if err == nil {
			if err := p.CheckValid(); err != nil {
				t.Fatalf("invalid profile: %v", err)
			}
		}
	})
}

func typeNames(ts []*profile.ValueType) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Type+"/"+t.Unit)
	}
	return out
}

// TestPerfScriptFailsPartWay: perf script that fails after part of its
// output (perf 6.1 exits 242 on records it cannot process, "failed to
// process type: 17 [Bad address]") does not lose what it printed: the
// profile of those events comes back with an IncompleteError naming the
// failure. The fake perf only injects that fault: it prints the real
// perf script's output of a real DWARF recording, cut in half.
func TestPerfScriptFailsPartWay(t *testing.T) {
	dir := t.TempDir()
	data := perfRecord(t, dir, "dwarf.data", []string{"--call-graph", "dwarf", "-F", "999"}, buildWorkload(t, dir), "1")
	text := perfScript(t, data, "--ns", "-F", "comm,pid,tid,time,period,event,ip,sym,symoff,dso")
	half := text[:bytes.LastIndex(text[:len(text)/2], []byte("\n\n"))+2]
	if err := os.WriteFile(filepath.Join(dir, "half.txt"), half, 0o644); err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(dir, "perf")
	script := "#!/bin/sh\ncat " + filepath.Join(dir, "half.txt") + "\necho '0x2b3b280 [0x70]: failed to process type: 17 [Bad address]' >&2\nexit 242\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := ReadFile(data, Options{Perf: fake})
	var inc *IncompleteError
	if !errors.As(err, &inc) || !strings.Contains(err.Error(), "failed to process type: 17") || !strings.Contains(err.Error(), "exit status 242") {
		t.Fatalf("error %v, want an IncompleteError with perf script's message", err)
	}
	whole, err := ReadFile(data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	count := func(p *profile.Profile) (n int64) {
		for _, s := range p.Sample {
			n += s.Value[0]
		}
		return n
	}
	if p == nil || count(p) == 0 || count(p) >= count(whole) {
		t.Errorf("incomplete profile: %v samples of %d", p, count(whole))
	}
	// Nothing printed before the failure: no profile, the error.
	if err := os.WriteFile(filepath.Join(dir, "half.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := ReadFile(data, Options{Perf: fake}); p != nil || err == nil {
		t.Errorf("no output: profile %v, error %v", p != nil, err)
	}
}
