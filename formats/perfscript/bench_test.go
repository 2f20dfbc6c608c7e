package perfscript

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loopCPU runs op b.N times and reports, beside the wall time, the CPU time
// per op (all threads), which other work on the machine disturbs less.
func loopCPU(b *testing.B, op func()) {
	t0 := cpuTime()
	for b.Loop() {
		op()
	}
	b.ReportMetric(float64(cpuTime()-t0)/float64(b.N), "cpu-ns/op")
}

// benchInput is the conformance corpus repeated to about 8 MB.
func benchInput(b *testing.B) []byte {
	var one []byte
	for _, name := range []string{"perf-iperf-stacks-pidtid-01.txt", "perf-numa-stacks-01.txt", "perf-java-stacks-01.txt"} {
		one = append(one, readFixture(b, "conformance/"+name)...)
	}
	return bytes.Repeat(one, 8<<20/len(one)+1)
}

// collapseInputs are the inputs of the collapse benchmarks and of
// scripts/bench-offline.sh, each a real recording repeated to about 60 MB
// (what a minute of perf record -F 99 -a on a busy 16-core machine gives):
// FlameGraph's Java test input (system-wide, JIT frames from a perf map),
// its iperf one (kernel-heavy), and two recorded for profcap
// (testdata/bench/README.md): a Rust/Tokio service and a C++ program
// built with templates at -O0.
var collapseInputs = []struct{ name, file string }{
	{"Java", "conformance/perf-java-stacks-01.txt"},
	{"Kernel", "conformance/perf-iperf-stacks-pidtid-01.txt"},
	{"Rust", "bench/perf-rust-refsvc.txt.gz"},
	{"Cxx", "bench/perf-cxx-templates.txt.gz"},
}

const collapseBenchSize = 60 << 20

func repeatTo(one []byte, size int) []byte {
	return bytes.Repeat(one, (size+len(one)-1)/len(one))
}

func BenchmarkCollapse(b *testing.B) {
	in := benchInput(b)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Collapse(bytes.NewReader(in), io.Discard, CollapseOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCollapse60MB folds each input of collapseInputs, repeated to
// about 60 MB, in memory (-cpu 1 for one worker).
func BenchmarkCollapse60MB(b *testing.B) {
	for _, in := range collapseInputs {
		b.Run(in.name, func(b *testing.B) {
			data := repeatTo(readFixture(b, in.file), collapseBenchSize)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			loopCPU(b, func() {
				if err := Collapse(bytes.NewReader(data), io.Discard, CollapseOptions{}); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkCollapseFile60MB is BenchmarkCollapse60MB through CollapseFile:
// the input a file in the page cache, mapped rather than read, as
// `profcap collapse FILE` folds it.
func BenchmarkCollapseFile60MB(b *testing.B) {
	dir := b.TempDir()
	for _, in := range collapseInputs {
		b.Run(in.name, func(b *testing.B) {
			data := repeatTo(readFixture(b, in.file), collapseBenchSize)
			path := filepath.Join(dir, in.name+".txt")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			loopCPU(b, func() {
				if err := CollapseFile(context.Background(), path, io.Discard, CollapseOptions{}); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkCollapseOnce folds each input of collapseInputs once over, not
// repeated: a recording where most events are new, so what the caches of
// whole events save shows less.
func BenchmarkCollapseOnce(b *testing.B) {
	for _, in := range collapseInputs {
		b.Run(in.name, func(b *testing.B) {
			data := readFixture(b, in.file)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			loopCPU(b, func() {
				if err := Collapse(bytes.NewReader(data), io.Discard, CollapseOptions{}); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkCollapseSequential60MB is BenchmarkCollapse60MB with the
// collapser that came before the parallel one (refCollapse, one event at a
// time, every line matched anew), for the speed-up on one core.
func BenchmarkCollapseSequential60MB(b *testing.B) {
	for _, in := range collapseInputs {
		b.Run(in.name, func(b *testing.B) {
			data := repeatTo(readFixture(b, in.file), collapseBenchSize)
			b.SetBytes(int64(len(data)))
			loopCPU(b, func() {
				if err := refCollapse(bytes.NewReader(data), io.Discard, CollapseOptions{}); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// TestWriteCollapseBenchInputs writes the collapse benchmark inputs into the
// directory PERFSCRIPT_BENCH_DIR names (NAME.txt, about 60 MB each), for
// timing the command line against stackcollapse-perf.pl on the same bytes
// (scripts/bench-offline.sh). It writes nothing otherwise.
func TestWriteCollapseBenchInputs(t *testing.T) {
	dir := os.Getenv("PERFSCRIPT_BENCH_DIR")
	if dir == "" {
		t.Skip("set PERFSCRIPT_BENCH_DIR=DIR to write the collapse benchmark inputs")
	}
	for _, in := range collapseInputs {
		data := repeatTo(readFixture(t, in.file), collapseBenchSize)
		if err := os.WriteFile(filepath.Join(dir, in.name+".txt"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	in := benchInput(b)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(bytes.NewReader(in), Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseOffCPU(b *testing.B) {
	in := bytes.Repeat(readFixture(b, "fixtures/perf-script-sched-switch-systemwide-filtered.txt"), 50)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseOffCPU(bytes.NewReader(in), OffCPUOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
