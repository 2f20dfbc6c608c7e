package perfdata

import (
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/profcap/profcap/formats/perfscript"
)

var (
	benchOnce sync.Once
	benchFile string
	benchErr  string
)

// benchRecording records the workload for 3 s at 4999 Hz with
// frame-pointer callchains, once per run (docs/performance.md compares the
// two benchmarks below, and hyperfine runs on a larger recording).
func benchRecording(b *testing.B) string {
	benchOnce.Do(func() {
		if _, err := exec.LookPath("perf"); err != nil {
			benchErr = "perf is not installed"
			return
		}
		if _, err := exec.LookPath("gcc"); err != nil {
			benchErr = "gcc is not installed"
			return
		}
		dir, err := os.MkdirTemp("", "profcap-perfdata-bench-")
		if err != nil {
			benchErr = err.Error()
			return
		}
		bin := buildWorkload(b, dir)
		benchFile = dir + "/bench.data"
		if out, err := exec.Command("perf", "record", "-q", "-F", "4999", "-g", "-o", benchFile, "--", bin, "3").CombinedOutput(); err != nil {
			benchErr = "perf record: " + err.Error() + ": " + string(out)
		}
	})
	if benchErr != "" {
		b.Skip(benchErr)
	}
	return benchFile
}

// BenchmarkCollapsePerfData is `profcap collapse perf.data`: read, name
// every frame, fold.
func BenchmarkCollapsePerfData(b *testing.B) {
	file := benchRecording(b)
	st, _ := os.Stat(file)
	b.SetBytes(st.Size())
	for b.Loop() {
		if err := CollapseFile(file, io.Discard, perfscript.CollapseOptions{}, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPerfScript is `perf script` alone on the same recording, for
// comparison (its text would still have to be folded).
func BenchmarkPerfScript(b *testing.B) {
	file := benchRecording(b)
	st, _ := os.Stat(file)
	b.SetBytes(st.Size())
	for b.Loop() {
		cmd := exec.Command("perf", "script", "-i", file)
		cmd.Stdout = io.Discard
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadPerfData is Read: the CPU profile (flame, convert, merge).
func BenchmarkReadPerfData(b *testing.B) {
	file := benchRecording(b)
	for b.Loop() {
		if _, err := ReadFile(file, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
