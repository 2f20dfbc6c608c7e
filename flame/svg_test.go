package flame

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/profcap/profcap/formats/folded"
)

// cpuTime is the process's user+system CPU time so far (all threads).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSVGFromFolded100k is `profcap flame --format svg` on the
// 100,000-stack input in process: parse the folded text, build the tree
// (with its size bound), write the SVG. flamegraph.pl does the same work
// from the same text; scripts/bench-offline.sh times the two commands side
// by side. The phases are reported apart (parse, tree, svg as ns/op), with
// the CPU time of all threads, the garbage collector's included.
func BenchmarkSVGFromFolded100k(b *testing.B) {
	text := genFolded(100_000, 1_000_000)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	var parse, tree, svg time.Duration
	var cw countWriter
	t0 := cpuTime()
	for b.Loop() {
		s := time.Now()
		p, err := folded.Parse(strings.NewReader(text))
		if err != nil {
			b.Fatal(err)
		}
		s1 := time.Now()
		t, err := NewTree(p, Options{})
		if err != nil {
			b.Fatal(err)
		}
		s2 := time.Now()
		cw.n = 0
		if err := WriteSVG(&cw, t, Options{}); err != nil {
			b.Fatal(err)
		}
		parse, tree, svg = parse+s1.Sub(s), tree+s2.Sub(s1), svg+time.Since(s2)
	}
	n := float64(b.N)
	b.ReportMetric(float64(cpuTime()-t0)/n, "cpu-ns/op")
	b.ReportMetric(float64(parse)/n, "parse-ns/op")
	b.ReportMetric(float64(tree)/n, "tree-ns/op")
	b.ReportMetric(float64(svg)/n, "svg-ns/op")
	b.ReportMetric(float64(cw.n), "out-bytes")
}
