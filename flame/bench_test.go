package flame

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/formats/folded"
)

// genFolded makes folded stacks with n distinct stacks and about total
// samples: stacks 8 to 40 frames deep drawn from 5,000 function names, with
// shared prefixes the way real programs have them (a few entry points, many
// leaves). The generator is seeded, so every run sees the same input.
func genFolded(n int, total int) string {
	r := rand.New(rand.NewPCG(1, 2))
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("github.com/example/svc%d/pkg%d.(*Type%d).Method%d", i%7, i%53, i%211, i)
	}
	seen := make(map[string]bool, n)
	var b strings.Builder
	per := total / n
	var stack []string
	for len(seen) < n {
		depth := 8 + r.IntN(33)
		stack = stack[:0]
		for d := 0; d < depth; d++ {
			// Low depths pick from few names, so prefixes are shared.
			pool := 3 + d*d*8
			if pool > len(names) {
				pool = len(names)
			}
			stack = append(stack, names[r.IntN(pool)])
		}
		s := strings.Join(stack, ";")
		if seen[s] {
			continue
		}
		seen[s] = true
		fmt.Fprintf(&b, "%s %d\n", s, 1+r.IntN(2*per))
	}
	return b.String()
}

var bench100k struct {
	p *profile.Profile
	t *Tree
}

func load100k(b *testing.B) (*profile.Profile, *Tree) {
	b.Helper()
	if bench100k.p == nil {
		p, err := folded.Parse(strings.NewReader(genFolded(100_000, 1_000_000)))
		if err != nil {
			b.Fatal(err)
		}
		t, err := NewTree(p, Options{})
		if err != nil {
			b.Fatal(err)
		}
		bench100k.p, bench100k.t = p, t
	}
	return bench100k.p, bench100k.t
}

func BenchmarkNewTree100k(b *testing.B) {
	p, t := load100k(b)
	b.ResetTimer()
	for b.Loop() {
		if _, err := NewTree(p, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(t.Nodes), "nodes")
}

func BenchmarkNewTreeReverse100k(b *testing.B) {
	p, _ := load100k(b)
	b.ResetTimer()
	for b.Loop() {
		if _, err := NewTree(p, Options{Reverse: true}); err != nil {
			b.Fatal(err)
		}
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func benchWrite(b *testing.B, w func(io.Writer, *Tree, Options) error) {
	_, t := load100k(b)
	b.ResetTimer()
	var cw countWriter
	for b.Loop() {
		cw.n = 0
		if err := w(&cw, t, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cw.n), "out-bytes")
}

func BenchmarkWriteSVG100k(b *testing.B)        { benchWrite(b, WriteSVG) }
func BenchmarkWriteHTML100k(b *testing.B)       { benchWrite(b, WriteHTML) }
func BenchmarkWriteFolded100k(b *testing.B)     { benchWrite(b, WriteFolded) }
func BenchmarkWriteSpeedscope100k(b *testing.B) { benchWrite(b, WriteSpeedscope) }

// TestWriteBenchInput writes the benchmark input as a folded file when
// FLAME_BENCH_INPUT names one, to time the command line against other tools
// on the same input (docs/flame.md). It writes nothing otherwise.
func TestWriteBenchInput(t *testing.T) {
	path := os.Getenv("FLAME_BENCH_INPUT")
	if path == "" {
		t.Skip("set FLAME_BENCH_INPUT=FILE to write the 100,000-stack benchmark input")
	}
	if err := os.WriteFile(path, []byte(genFolded(100_000, 1_000_000)), 0o644); err != nil {
		t.Fatal(err)
	}
}
