package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

const conformanceDir = "../../formats/perfscript/testdata/conformance/"

func TestCollapseCommand(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		input  string
		golden string
	}{
		{[]string{"--tid"}, "perf-iperf-stacks-pidtid-01.txt", "perf-iperf-stacks-pidtid-01-collapsed-tid.txt"},
		{[]string{"--all"}, "perf-java-stacks-01.txt", "perf-java-stacks-01-collapsed-all.txt"},
		{[]string{"--addrs"}, "perf-dd-stacks-01.txt", "perf-dd-stacks-01-collapsed-addrs.txt"},
		{nil, "perf-cycles-instructions-01.txt", "perf-cycles-instructions-01-collapsed-default.txt"},
	} {
		want, err := os.ReadFile(conformanceDir + "results/" + tc.golden)
		if err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		args := append(append([]string{}, tc.args...), conformanceDir+tc.input)
		if err := run(context.Background(), append([]string{"collapse"}, args...), &out, &errb); err != nil {
			t.Fatalf("collapse %v: %v", args, err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("collapse %v: output differs from %s", args, tc.golden)
		}
	}
}

func TestCollapseEventFilterFlag(t *testing.T) {
	var out, errb bytes.Buffer
	err := runCollapse(context.Background(), []string{"--event-filter", "cycles", conformanceDir + "perf-cycles-instructions-01.txt"}, &out, &errb)
	if err != nil {
		t.Fatal(err)
	}
	var def bytes.Buffer
	if err := runCollapse(context.Background(), []string{conformanceDir + "perf-cycles-instructions-01.txt"}, &def, &errb); err != nil {
		t.Fatal(err)
	}
	if out.Len() == 0 || bytes.Equal(out.Bytes(), def.Bytes()) {
		t.Errorf("--event-filter cycles gave the same output as the default (instructions)")
	}
	if !strings.Contains(errb.String(), "Filtering for events of type: cycles") {
		t.Errorf("no event-filter notice on stderr: %q", errb.String())
	}
}

func TestCollapseStdinAndWarnings(t *testing.T) {
	old := os.Stdin
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	os.Stdin = r
	defer func() { os.Stdin = old }()
	go func() {
		w.WriteString("demo 1 1.000000: 1 cpu-clock: \n\tffff spin (/a)\nnot a frame\n\n")
		w.Close()
	}()
	var out, errb bytes.Buffer
	if err := runCollapse(context.Background(), []string{"-"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if out.String() != "demo;spin 1\n" {
		t.Errorf("output %q", out.String())
	}
	if !strings.Contains(errb.String(), "standard input: line 3: unrecognized line") {
		t.Errorf("stderr %q: want the line number of the bad line", errb.String())
	}
}

func TestCollapseUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if err := runCollapse(context.Background(), []string{"--help"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Examples:") || !strings.Contains(out.String(), "--event-filter") {
		t.Errorf("--help output lacks examples or flags:\n%s", out.String())
	}
	for _, args := range [][]string{{"--no-such-flag"}, {"a", "b"}} {
		err := runCollapse(context.Background(), args, &out, &errb)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("collapse %v: err = %v, want a usage error (exit 2)", args, err)
		}
	}
	err := runCollapse(context.Background(), []string{"/nonexistent/perf.txt"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/perf.txt") {
		t.Errorf("missing file: err = %v", err)
	}
}

// TestCollapsePerfData: a perf.data file is read directly (sniffed by its
// PERFILE2 magic), from a path or from standard input.
func TestCollapsePerfData(t *testing.T) {
	const rec = "../../formats/perfdata/testdata/fp-cpu.data"
	var out, errb bytes.Buffer
	if err := runCollapse(context.Background(), []string{"--tid", rec}, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	if !strings.Contains(out.String(), "spinner-") || !strings.Contains(out.String(), ";") {
		t.Errorf("folded:\n%s", out.String())
	}
	if strings.Contains(errb.String(), "unrecognized line") {
		t.Errorf("perf.data read as text: %s", errb.String())
	}
}

// TestCollapseBinaryInput: a binary file that is not perf.data is one clear
// error naming it (and a non-zero exit), not a warning per "line".
func TestCollapseBinaryInput(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"cpu.pb.gz": {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3},
		"program":   append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 100)...),
		"blob.bin":  {'a', 'b', 0, 0, 0xff, 0xfe, '\n', 'x'},
	} {
		path := dir + "/" + name
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		err := run(context.Background(), []string{"collapse", path}, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not perf script text") {
			t.Errorf("%s: %v", name, err)
		}
		if strings.Contains(errb.String(), "unrecognized line") || out.Len() > 0 {
			t.Errorf("%s: stdout %q stderr %q", name, out.String(), errb.String())
		}
	}
}
