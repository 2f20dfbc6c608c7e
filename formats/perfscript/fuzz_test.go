package perfscript

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// seedFuzz adds every perf script output in testdata (cut to a few KB, so
// the fuzzer can work on them) and a few hand-made edge cases.
func seedFuzz(f *testing.F) {
	for _, name := range fixtureFiles(f) {
		data := readFixture(f, name)
		if len(data) > 4096 {
			data = data[:4096]
		}
		f.Add(data)
	}
	for _, s := range []string{
		"", "\n\n", "#\n", "a 1 1.0: x:\n\t1 f (m)\n\n", "\tffff (x)\n",
		"demo 1/0 1.000000: 0 cpu-clock: \n\t ff a->b->->c (m)\n\n",
		":-1    -1 [001] 1.000001: sched:sched_switch: prev_comm=a prev_pid=1 prev_prio=1 prev_state=S ==> next_comm=b next_pid=2 next_prio=1\n\n",
		"\x00\xff\xfe\n\x01",
	} {
		f.Add([]byte(s))
	}
}

func checkErr(t *testing.T, err error) {
	if err == nil {
		return
	}
	var se *SyntaxError
	if !errors.As(err, &se) {
		t.Fatalf("error is not a *SyntaxError: %v", err)
	}
	if se.Line <= 0 {
		t.Fatalf("error without a line number: %v", err)
	}
}

// FuzzParse: any input gives a valid profile or a *SyntaxError with a line.
func FuzzParse(f *testing.F) {
	seedFuzz(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(bytes.NewReader(data), Options{})
		checkErr(t, err)
		if err == nil {
			if err := p.CheckValid(); err != nil {
				t.Fatal(err)
			}
		}
		p, err = ParseOffCPU(bytes.NewReader(data), OffCPUOptions{})
		checkErr(t, err)
		if err == nil {
			if err := p.CheckValid(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzCollapse: the collapser never fails on text (like the Perl script it
// warns and goes on) and in strict mode fails only with a *SyntaxError.
func FuzzCollapse(f *testing.F) {
	seedFuzz(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		if err := Collapse(bytes.NewReader(data), &out, CollapseOptions{All: true, Addrs: true, TID: true}); err != nil {
			checkErr(t, err) // only an overlong line
		}
		checkErr(t, Collapse(bytes.NewReader(data), io.Discard, CollapseOptions{Strict: true}))
	})
}

// FuzzCollapseSegments: the parallel collapser, its input cut into
// segments of a few bytes, gives what the sequential one it replaced gives
// (output, warnings, errors) on any input.
func FuzzCollapseSegments(f *testing.F) {
	seedFuzz(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		size := 1
		if len(data) > 0 {
			size += int(data[0]) % 64
		}
		for _, opt := range []CollapseOptions{{}, {All: true, Addrs: true, TID: true}, {Strict: true, PID: true}, {EventFilter: "cycles"}} {
			sameAsRef(t, data, opt, smallSegments(3, size))
			sameAsRef(t, data, opt, smallSegments(1, size))
		}
	})
}

// FuzzPerlMatchers checks the hand-written matchers against the regular
// expressions of stackcollapse-perf.pl, line by line.
func FuzzPerlMatchers(f *testing.F) {
	seedFuzz(f)
	for _, s := range []string{"a  1 x", "ab 12/ 3", "ab 12/34x 5 ", "x: 12  ev:  ", "x:   ev:", "x:12 ev:", "\tab (x)", " 1 ( (x)", "\t1 a (b)c) (d)"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, line := range bytes.Split(data, []byte("\n")) {
			c1, a1, b1, ok1 := perlHeader(line)
			c2, a2, b2, ok2 := reHeader(line)
			if ok1 != ok2 || !bytes.Equal(c1, c2) || !bytes.Equal(a1, a2) || !bytes.Equal(b1, b2) || (b1 == nil) != (b2 == nil) {
				t.Fatalf("header %q: fast (%q %q %q %v) regexp (%q %q %q %v)", line, c1, a1, b1, ok1, c2, a2, b2, ok2)
			}
			p1, e1, ok1 := perlEvent(line)
			p2, e2, ok2 := reEvent(line)
			if ok1 != ok2 || !bytes.Equal(p1, p2) || (p1 == nil) != (p2 == nil) || !bytes.Equal(e1, e2) {
				t.Fatalf("event %q: fast (%q %q %v) regexp (%q %q %v)", line, p1, e1, ok1, p2, e2, ok2)
			}
			pc1, fn1, m1, ok1 := perlFrame(line)
			m := frameRE.FindSubmatch(line)
			if ok1 != (m != nil) || ok1 && (!bytes.Equal(pc1, m[1]) || !bytes.Equal(fn1, m[2]) || !bytes.Equal(m1, m[3])) {
				t.Fatalf("frame %q: fast (%q %q %q %v) regexp %q", line, pc1, fn1, m1, ok1, m)
			}
		}
	})
}

// FuzzParseLine feeds every line to the line parsers (event header, frame,
// sched_switch fields): none may panic, and each error is a *SyntaxError
// naming the line it was given.
func FuzzParseLine(f *testing.F) {
	seedFuzz(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for i, line := range bytes.Split(data, []byte("\n")) {
			n := i + 1
			lineErr := func(what string, err error) {
				t.Helper()
				var se *SyntaxError
				if err != nil && (!errors.As(err, &se) || se.Line != n) {
					t.Fatalf("%s of line %d %q: error %v is not a *SyntaxError at that line", what, n, line, err)
				}
			}
			h, err := ParseHeader(n, line)
			lineErr("ParseHeader", err)
			if err == nil && h.Event == "" {
				t.Fatalf("ParseHeader(%q) accepted a header without an event", line)
			}
			_, ok, err := ParseFrame(n, line)
			lineErr("ParseFrame", err)
			if ok && err != nil {
				t.Fatalf("ParseFrame(%q): ok with an error", line)
			}
			_, err = ParseSchedSwitch(n, line)
			lineErr("ParseSchedSwitch", err)
			if err == nil {
				_, err = ParseSchedSwitch(n, h.Trace)
				lineErr("ParseSchedSwitch of the trace fields", err)
			}
		}
	})
}
