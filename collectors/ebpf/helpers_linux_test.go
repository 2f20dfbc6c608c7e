//go:build linux && amd64

package ebpf

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/targets"
)

var (
	targetOnce sync.Once
	targetBin  string
	targetErr  error
	binDir     string
)

func TestMain(m *testing.M) {
	binDir, _ = os.MkdirTemp("", "profcap-ebpf-test-")
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// needEBPF requires what the collector needs: root, kernel BTF, a kernel
// that loads the programs (skipped where missing, a failure under CI).
func needEBPF(t testing.TB) {
	t.Helper()
	testreq.Root(t, "loading eBPF programs")
	if err := machineCheck(); err != nil {
		testreq.Missing(t, "eBPF: %v", err)
	}
}

// buildTarget compiles testdata/target.c with frame pointers.
func buildTarget(t testing.TB) string {
	t.Helper()
	gcc := testreq.Command(t, "gcc")
	targetOnce.Do(func() {
		targetBin = filepath.Join(binDir, "target")
		out, err := exec.Command(gcc, "-O1", "-g", "-fno-omit-frame-pointer", "-pthread", "testdata/target.c", "-o", targetBin).CombinedOutput()
		if err != nil {
			targetErr = err
			targetBin = string(out)
		}
	})
	if targetErr != nil {
		t.Fatalf("building the target: %v: %s", targetErr, targetBin)
	}
	return targetBin
}

func execTarget(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(buildTarget(t), args...)
	cmd.Stderr = os.Stderr
	return cmd
}

// start runs the target in a mode; it is killed when the test ends.
func start(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	cmd := execTarget(t, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	time.Sleep(50 * time.Millisecond) // let its threads start
	return cmd
}

// burners starts n processes that spin, to take the CPUs away.
func burners(t testing.TB, n int) {
	t.Helper()
	for range n {
		start(t, "spin")
	}
}

// record runs the collector over a window of d that opens when it is
// ready, and returns the results by kind.
func record(t testing.TB, c *Collector, pid int, d time.Duration, kinds ...bundle.Kind) (map[bundle.Kind]collectors.Result, *collectors.Window) {
	t.Helper()
	return recordThen(t, c, pid, d, nil, kinds...)
}

// recordThen is record, calling opened once the window is open.
func recordThen(t testing.TB, c *Collector, pid int, d time.Duration, opened func(), kinds ...bundle.Kind) (map[bundle.Kind]collectors.Result, *collectors.Window) {
	t.Helper()
	w := collectors.NewPendingWindow(d, d)
	ctx := collectors.WithReady(context.Background(), func() {
		w.Open()
		if opened != nil {
			opened()
		}
	})
	var mu sync.Mutex
	got := map[bundle.Kind]collectors.Result{}
	c.Collect(ctx, w, &targets.Target{Name: "t", PID: pid}, kinds, func(r collectors.Result) {
		mu.Lock()
		defer mu.Unlock()
		got[r.Kind] = r
	})
	for _, k := range kinds {
		r, ok := got[k]
		if !ok {
			t.Fatalf("no %s result", k)
		}
		if r.Status != bundle.StatusOK {
			t.Fatalf("%s: %s: %v (%s)", k, r.Status, r.Err, r.Note)
		}
	}
	return got, w
}

// coverage is the share of the window a result sampled.
func coverage(r collectors.Result, w *collectors.Window) float64 {
	end := w.Ended()
	from, to := r.Start, r.End
	if from.Before(w.Start) {
		from = w.Start
	}
	if to.After(end) {
		to = end
	}
	return float64(to.Sub(from)) / float64(end.Sub(w.Start))
}

func hasFunc(s *profile.Sample, name string) bool {
	for _, l := range s.Location {
		for _, ln := range l.Line {
			if ln.Function.Name == name {
				return true
			}
		}
	}
	return false
}

// sum adds value i of the samples that match.
func sum(p *profile.Profile, i int, match func(*profile.Sample) bool) int64 {
	var n int64
	for _, s := range p.Sample {
		if match(s) {
			n += s.Value[i]
		}
	}
	return n
}

func stackString(s *profile.Sample) string {
	var fs []string
	for i := len(s.Location) - 1; i >= 0; i-- {
		for _, ln := range s.Location[i].Line {
			fs = append(fs, ln.Function.Name)
		}
	}
	return strings.Join(fs, ";")
}

// top logs the heaviest samples.
func top(t testing.TB, p *profile.Profile, i, n int) {
	t.Helper()
	ss := append([]*profile.Sample(nil), p.Sample...)
	for a := range ss {
		for b := a + 1; b < len(ss); b++ {
			if ss[b].Value[i] > ss[a].Value[i] {
				ss[a], ss[b] = ss[b], ss[a]
			}
		}
	}
	for k, s := range ss {
		if k == n {
			break
		}
		t.Logf("%12d %v %v %s", s.Value[i], s.NumLabel["pid"], s.Label["thread"], stackString(s))
	}
}
