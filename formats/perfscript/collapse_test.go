package perfscript

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/profcap/profcap/internal/golden"
)

var collapseModes = map[string]CollapseOptions{
	"default": {},
	"pid":     {PID: true},
	"tid":     {TID: true},
	"kernel":  {Kernel: true},
	"jit":     {JIT: true},
	"all":     {All: true},
	"addrs":   {Addrs: true},
}

// TestCollapseConformance checks every input of the corpus against
// stackcollapse-perf.pl's output for every option (testdata/conformance).
func TestCollapseConformance(t *testing.T) {
	inputs, err := filepath.Glob("testdata/conformance/*.txt")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no conformance inputs: %v", err)
	}
	n := 0
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".txt")
		for mode, opt := range collapseModes {
			want, err := os.ReadFile(filepath.Join("testdata/conformance/results", name+"-collapsed-"+mode+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			t.Run(name+"/"+mode, func(t *testing.T) {
				f, err := os.Open(in)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				var got bytes.Buffer
				if err := Collapse(f, &got, opt); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Bytes(), want) {
					t.Errorf("output differs from stackcollapse-perf.pl (the reference; -update does not rewrite it)\n%s", golden.Diff("stackcollapse-perf.pl", "Collapse", string(want), got.String()))
				}
			})
			n++
		}
	}
	if n != 49 {
		t.Errorf("ran %d conformance cases, want 7 inputs x 7 options", n)
	}
}

// repeatReader yields data n times without holding more than one copy.
type repeatReader struct {
	data []byte
	n    int
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := copy(p, r.data[r.off:])
	r.off += k
	if r.off == len(r.data) {
		r.off = 0
		r.n--
	}
	return k, nil
}

// TestCollapseStreams: what folding allocates does not grow with the input
// (the segments are recycled, the caches hold what repeats): 128 MB of
// input cost no more than 32 MB do, give or take 1 MB, and both a small
// fraction of it.
func TestCollapseStreams(t *testing.T) {
	one := readFixture(t, "conformance/perf-iperf-stacks-pidtid-01.txt")
	alloc := func(mb int) uint64 {
		n := (mb << 20) / len(one)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var out bytes.Buffer
		if err := Collapse(&repeatReader{data: one, n: n}, &out, CollapseOptions{}); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		if out.Len() == 0 {
			t.Error("no output")
		}
		a := after.TotalAlloc - before.TotalAlloc
		t.Logf("folded %d MB allocating %d KB", n*len(one)>>20, a>>10)
		return a
	}
	small, big := alloc(32), alloc(128)
	if big > small+1<<20 || big > 8<<20 {
		t.Errorf("folding 32 MB allocated %d KB, 128 MB %d KB: the input is being held", small>>10, big>>10)
	}
}

// sameAsRef checks that Collapse, with the pipeline sized by cfg, gives
// what refCollapse (the sequential collapser it replaced) gives: the same
// output, the same warnings in the same order, the same error.
func sameAsRef(t testing.TB, data []byte, opt CollapseOptions, cfg foldConfig) {
	t.Helper()
	var want, got, wantWarn, gotWarn bytes.Buffer
	o := opt
	o.Warn = &wantWarn
	wantErr := refCollapse(bytes.NewReader(data), &want, o)
	// Read through a reader, and held in memory as a mapped file is.
	for _, how := range []string{"read", "in memory"} {
		got.Reset()
		gotWarn.Reset()
		o.Warn = &gotWarn
		var gotErr error
		if how == "read" {
			gotErr = collapse(bytes.NewReader(data), &got, o, cfg)
		} else {
			gotErr = collapseBytes(context.Background(), bytes.Clone(data), &got, o, cfg)
		}
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Fatalf("%+v %+v, %s: error %v, want %v", opt, cfg, how, gotErr, wantErr)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("%+v %+v, %s: output differs from the sequential collapser\n%s", opt, cfg, how, golden.Diff("sequential", "parallel", want.String(), got.String()))
		}
		if gotWarn.String() != wantWarn.String() {
			t.Fatalf("%+v %+v, %s: warnings differ\n%s", opt, cfg, how, golden.Diff("sequential", "parallel", wantWarn.String(), gotWarn.String()))
		}
	}
}

// smallSegments cuts the input every few bytes, so that every event
// boundary of a small input is a segment boundary somewhere.
func smallSegments(workers, size int) foldConfig {
	return foldConfig{workers: workers, segSize: size, maxSeg: MaxLineLen + size, warmup: 3 * size}
}

// TestCollapseSegments folds every fixture with segments from 1 byte to
// 64 KB over 1 to 4 workers, in every mode, against the sequential
// collapser: the cut points, the merge and the caches must not show.
func TestCollapseSegments(t *testing.T) {
	files := append(fixtureFiles(t), "bench/perf-rust-refsvc.txt.gz", "bench/perf-cxx-templates.txt.gz")
	for _, name := range files {
		data := readFixture(t, name)
		if len(data) > 1<<20 {
			data = data[:1<<20]
		}
		// Twice, so the second copy reads from the caches.
		data = append(data, data...)
		for mode, opt := range collapseModes {
			for _, cfg := range []foldConfig{smallSegments(1, segSize), smallSegments(2, 4<<10), smallSegments(3, 64<<10), smallSegments(4, 1)} {
				if cfg.segSize == 1 && len(data) > 64<<10 {
					continue
				}
				t.Run(filepath.Base(name)+"/"+mode, func(t *testing.T) { sameAsRef(t, data, opt, cfg) })
			}
		}
	}
}

// TestCollapseWarningsOrder: warnings and the event-filter notice from many
// segments come out in input order with the input's line numbers, the 21st
// on only counted; strict mode fails at the first bad line.
func TestCollapseWarningsOrder(t *testing.T) {
	var in strings.Builder
	for i := range 90 {
		ev := "cycles"
		if i%7 == 3 {
			ev = "instructions"
		}
		period := "10"
		if i == 50 {
			period = "99999999999999999999999" // beyond 2^64-1
		}
		fmt.Fprintf(&in, "demo %d 1.0: %s %s: \n\tffff f%d (/a)\n", i, period, ev, i%5)
		if i%3 == 0 {
			fmt.Fprintf(&in, "bad line %d\n", i)
		}
		in.WriteString("\n")
	}
	data := []byte(in.String())
	for _, opt := range []CollapseOptions{{}, {Strict: true}, {EventFilter: "instructions"}, {TID: true}} {
		for _, size := range []int{1, 16, 100, 1000} {
			sameAsRef(t, data, opt, smallSegments(3, size))
		}
	}
}

// TestCollapseNoBlankLines: an input with no blank line for longer than a
// segment may be is cut inside events; the rest of each goes to the same
// worker, so the Perl state carries over as in one reading. A line longer
// than MaxLineLen fails at its line wherever it falls.
func TestCollapseNoBlankLines(t *testing.T) {
	var b bytes.Buffer
	for i := range 3 * (MaxLineLen / 40) {
		if i%5000 == 0 {
			fmt.Fprintf(&b, "demo %d 1.0: 1 cycles: \n", i)
		}
		fmt.Fprintf(&b, "\tffff f%d (/a)\n", i%7)
	}
	b.WriteString("\n")
	for range 100 {
		b.WriteString("demo 1 1.0: 1 cycles: \n\tffff g (/a)\n\n")
	}
	data := b.Bytes()
	for _, cfg := range []foldConfig{smallSegments(2, 1<<10), smallSegments(3, 64<<10), smallSegments(1, segSize)} {
		sameAsRef(t, data, CollapseOptions{}, cfg)
	}
	for _, n := range []int{MaxLineLen, MaxLineLen + 1, MaxLineLen + 100<<10} {
		long := append(bytes.Clone(data[:1000]), bytes.Repeat([]byte("x"), n)...)
		long = append(long, "\n\tffff g (/a)\n\n"...)
		for _, cfg := range []foldConfig{smallSegments(2, 1<<10), smallSegments(1, segSize)} {
			sameAsRef(t, long, CollapseOptions{}, cfg)
			sameAsRef(t, long[:1000+n], CollapseOptions{}, cfg)
		}
	}
}

// TestCollapseCacheLimits: with caches that start over every few events
// the output is the same.
func TestCollapseCacheLimits(t *testing.T) {
	defer func(f, e int) { maxFrameCache, maxEventCache = f, e }(maxFrameCache, maxEventCache)
	maxFrameCache, maxEventCache = 2000, 5000
	data := readFixture(t, "conformance/perf-java-stacks-01.txt")
	data = append(data, data...)
	for mode, opt := range collapseModes {
		t.Run(mode, func(t *testing.T) {
			sameAsRef(t, data, opt, smallSegments(1, segSize))
			sameAsRef(t, data, opt, smallSegments(2, 8<<10))
		})
	}
}

// errReader returns its data, then err.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestCollapseReadError: a read error is returned after the warnings of
// the lines before it, whatever the segments.
func TestCollapseReadError(t *testing.T) {
	data := bytes.Repeat([]byte("demo 1 1.0: 1 cycles: \n\tffff g (/a)\nbad\n\n"), 5000)
	boom := errors.New("boom")
	for _, cfg := range []foldConfig{smallSegments(1, segSize), smallSegments(2, 1<<10)} {
		var warn bytes.Buffer
		err := collapse(&errReader{data: data[:len(data)-7], err: boom}, io.Discard, CollapseOptions{Warn: &warn}, cfg)
		if err != boom {
			t.Errorf("%+v: err = %v, want %v", cfg, err, boom)
		}
		if !strings.Contains(warn.String(), "line 3: unrecognized line") {
			t.Errorf("%+v: warnings %q", cfg, warn.String())
		}
	}
}

func TestAfterLastBlank(t *testing.T) {
	for _, s := range []string{"", "\n", "\n\n", "a\n\nb", "a\n\nb\n\nc\n", "\n\na", "ab\n", "a\nb\n\n", "\n\n\n"} {
		want := bytes.LastIndex([]byte(s), blankLine)
		if want >= 0 {
			want += 2
		}
		if got := afterLastBlank([]byte(s)); got != want {
			t.Errorf("afterLastBlank(%q) = %d, want %d", s, got, want)
		}
	}
}

// TestCollapseReference checks the hand-written edge cases of
// testdata/reference against what stackcollapse-perf.pl printed for them.
func TestCollapseReference(t *testing.T) {
	data := readFixture(t, "reference/perf-edge-cases.txt")
	for mode, opt := range collapseModes {
		t.Run(mode, func(t *testing.T) {
			want := readFixture(t, "reference/results/perf-edge-cases-collapsed-"+mode+".txt")
			var got bytes.Buffer
			if err := Collapse(bytes.NewReader(data), &got, opt); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("output differs from stackcollapse-perf.pl\n%s", golden.Diff("stackcollapse-perf.pl", "Collapse", string(want), got.String()))
			}
			sameAsRef(t, data, opt, smallSegments(3, 64))
		})
	}
}

// TestCollapserFold: events given to Collapser.Fold n times over fold to
// what Collapse makes of their text with each event written n times (what
// the perf.data reader relies on), and bad lines are reported without a
// line number.
func TestCollapserFold(t *testing.T) {
	for _, name := range append(fixtureFiles(t), "bench/perf-rust-refsvc.txt.gz") {
		rd := NewReader(bytes.NewReader(readFixture(t, name)))
		var events [][][]byte // header, then frames
		for {
			ev, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Header == nil {
				continue
			}
			e := [][]byte{bytes.Clone(ev.Header)}
			for _, l := range ev.Lines {
				e = append(e, bytes.Clone(l.Text))
			}
			events = append(events, e)
		}
		for mode, opt := range collapseModes {
			for _, n := range []int{1, 3} {
				var text bytes.Buffer
				for _, e := range events {
					for range n {
						for _, l := range e {
							text.Write(l)
							text.WriteByte('\n')
						}
						text.WriteByte('\n')
					}
				}
				var want, got bytes.Buffer
				if err := Collapse(&text, &want, opt); err != nil {
					t.Fatal(err)
				}
				c := NewCollapser(opt)
				for _, e := range events {
					if err := c.Fold(e[0], e[1:], uint64(n)); err != nil {
						t.Fatal(err)
					}
				}
				if err := c.Write(&got); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Bytes(), want.Bytes()) {
					t.Fatalf("%s %s n=%d: Fold differs from Collapse\n%s", name, mode, n, golden.Diff("Collapse", "Fold", want.String(), got.String()))
				}
			}
		}
	}
	var warn bytes.Buffer
	c := NewCollapser(CollapseOptions{Warn: &warn})
	if err := c.Fold([]byte("demo 1 1.0: 1 cycles: "), [][]byte{[]byte("\tffff f (/a)"), []byte("junk")}, 2); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c.Write(&out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "demo;f 2\n" || warn.String() != "unrecognized line: \"junk\"\n" {
		t.Errorf("output %q, warnings %q", out.String(), warn.String())
	}
	err := NewCollapser(CollapseOptions{Strict: true}).Fold([]byte("demo 1 1.0: 1 cycles: "), [][]byte{[]byte("junk")}, 1)
	var se *SyntaxError
	if !errors.As(err, &se) || se.Line != 0 {
		t.Errorf("strict: err = %v, want a *SyntaxError without a line", err)
	}
}
