package perfscript

import (
	"bytes"
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

// TestCollapseStreams: folding 64 MB allocates a small fraction of that (the
// reader holds one event, the map the distinct stacks), so memory does not
// grow with the input.
func TestCollapseStreams(t *testing.T) {
	one := readFixture(t, "conformance/perf-iperf-stacks-pidtid-01.txt")
	n := (64 << 20) / len(one)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var out bytes.Buffer
	if err := Collapse(&repeatReader{data: one, n: n}, &out, CollapseOptions{}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("folded %d MB allocating %d KB", n*len(one)>>20, alloc>>10)
	if alloc > 8<<20 {
		t.Errorf("allocated %d MB to fold %d MB: the input is being held", alloc>>20, n*len(one)>>20)
	}
	if out.Len() == 0 {
		t.Error("no output")
	}
}
