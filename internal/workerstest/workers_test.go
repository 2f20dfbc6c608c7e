// Package workerstest runs profcap against the FFI workers (workers/run.sh):
// Python under `uv run`, Ruby with Fiddle and TypeScript on Bun, each
// calling the Rust worker core (libworker_core.so) in a loop of steps, with
// the real py-spy, rbspy, perf, uv and Bun. Each capture must show one
// stack from the language's step function into the Rust code.
package workerstest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/testreq"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// profcapBin builds the CLI once per test binary.
func profcapBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "profcap-workerstest-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "profcap")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/profcap")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// freeOffset picks the workers' port offset: the three ports it gives
// (8200, 8300 and 8400 moved by it) below the kernel's ephemeral range
// (32768 and up, where an outgoing connection can hold a port: a port
// picked there was once taken by the time Bun listened), each free when
// tried.
func freeOffset(t *testing.T) int {
	t.Helper()
	for range 100 {
		offset := 10000 + rand.IntN(14000)
		free := true
		for _, base := range []int{8200, 8300, 8400} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+offset))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return offset
		}
	}
	t.Fatal("no free port offset for the workers in 100 tries")
	return 0
}

// startWorkers starts the three workers in a new directory (ports moved by
// a random offset, so runs side by side do not collide) and stops them at
// the end of the test.
func startWorkers(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"uv", "ruby", "bun", "py-spy", "rbspy", "perf"} {
		testreq.Command(t, tool)
	}
	testreq.Root(t, "perf records sched:sched_switch, py-spy and rbspy read the workers' memory")
	cache := os.Getenv("PROFCAP_CACHE")
	if cache == "" {
		cache = filepath.Join(os.Getenv("HOME"), ".cache", "profcap")
	}
	if _, err := os.Stat(filepath.Join(cache, "rust", "bin", "libworker_core.so")); err != nil {
		testreq.Missing(t, "libworker_core.so (bash scripts/rust-build.sh): %v", err)
	}
	dir := t.TempDir()
	script := filepath.Join(repoRoot(t), "workers", "run.sh")
	offset := freeOffset(t)
	run := func(args ...string) ([]byte, error) {
		cmd := exec.Command("bash", append([]string{script}, args...)...)
		cmd.Env = append(os.Environ(), fmt.Sprintf("PORT_BASE_OFFSET=%d", offset))
		return cmd.CombinedOutput()
	}
	t.Cleanup(func() {
		if out, err := run("stop", dir); err != nil {
			t.Errorf("workers/run.sh stop: %v: %s", err, out)
		}
	})
	if out, err := run("start", dir); err != nil {
		t.Fatalf("workers/run.sh start: %v: %s", err, out)
	}
	for _, n := range []string{"worker-python-1", "worker-ruby-1", "worker-ts-1"} {
		if _, err := os.Stat(filepath.Join(dir, ".pids", n+".pid")); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// record runs profcap record in dir (where .pids is) and returns the
// bundle's manifest and directory.
func record(t *testing.T, dir string, args ...string) (*bundle.Manifest, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bundle")
	cmd := exec.Command(profcapBin(t), append([]string{"record", "--out", out}, args...)...)
	cmd.Dir = dir
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	t.Logf("profcap record %s:\n%s", strings.Join(args, " "), buf.String())
	if err != nil {
		t.Fatalf("profcap record: %v", err)
	}
	m, err := bundle.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	return m, out
}

func profileOf(t *testing.T, m *bundle.Manifest, dir, target string, k bundle.Kind) (*bundle.Profile, *profile.Profile) {
	t.Helper()
	for _, tg := range m.Targets {
		if tg.Name != target {
			continue
		}
		for _, p := range tg.Profiles {
			if p.Kind != k {
				continue
			}
			if p.Status != bundle.StatusOK {
				t.Fatalf("%s %s: status %s: %s", target, k, p.Status, p.Error)
			}
			prof, err := bundle.LoadProfile(dir, p.Path)
			if err != nil {
				t.Fatal(err)
			}
			return p, prof
		}
	}
	t.Fatalf("%s: no %s profile", target, k)
	return nil, nil
}

// names lists a sample's function names, root first.
func names(s *profile.Sample) []string {
	var out []string
	for i := len(s.Location) - 1; i >= 0; i-- {
		for j := len(s.Location[i].Line) - 1; j >= 0; j-- {
			out = append(out, s.Location[i].Line[j].Function.Name)
		}
	}
	return out
}

// under sums the first value of the samples whose stack has each of
// frames, in this order from the root (not necessarily adjacent).
func under(p *profile.Profile, frames ...string) (n, total int64) {
	for _, s := range p.Sample {
		total += s.Value[0]
		st := names(s)
		i := 0
		for _, f := range st {
			if i < len(frames) && f == frames[i] {
				i++
			}
		}
		if i == len(frames) {
			n += s.Value[0]
		}
	}
	return n, total
}

func has(p *profile.Profile, frame string) bool {
	n, _ := under(p, frame)
	return n > 0
}

// pprofTop runs go tool pprof -top on a profile and returns its output.
func pprofTop(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("go", "tool", "pprof", "-top", file).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof -top %s: %v: %s", file, err, out)
	}
	return string(out)
}

const (
	rustHot   = "worker_core::compute::checksum_block"
	rustBlock = "worker_core::io::wait_for_io"
)

func TestWorkers(t *testing.T) {
	dir := startWorkers(t)

	t.Run("python", func(t *testing.T) {
		m, out := record(t, dir, "--target", "worker-python-1", "--duration", "10s", "--profiles", "cpu,offcpu,wall")
		meta, cpu := profileOf(t, m, out, "worker-python-1", bundle.CPU)
		if meta.Collector != "py-spy" {
			t.Errorf("cpu from %s, want py-spy", meta.Collector)
		}
		uv, _ := os.ReadFile(filepath.Join(dir, ".pids", "worker-python-1.pid"))
		if want := "pid " + strings.TrimSpace(string(uv)) + " runs the launcher uv; profiling its child python"; !strings.Contains(meta.Note, want) {
			t.Errorf("cpu note %q, want %q", meta.Note, want)
		}
		// One stack from the Python step function into the Rust core.
		n, total := under(cpu, "handle_step", rustHot)
		t.Logf("cpu: %d of %d samples run from handle_step into %s", n, total, rustHot)
		if n == 0 || n*4 < total {
			t.Errorf("cpu: %d of %d samples under handle_step → %s, want at least a quarter", n, total, rustHot)
		}
		if !has(cpu, "prepare_payload") {
			t.Error("cpu: no prepare_payload (the Python half)")
		}
		if top := pprofTop(t, filepath.Join(out, meta.Path)); !strings.Contains(top, rustHot) || !strings.Contains(top, "handle_step") {
			t.Errorf("pprof -top:\n%s", top)
		}
		_, wall := profileOf(t, m, out, "worker-python-1", bundle.Wall)
		if n, _ := under(wall, "handle_step", rustBlock); n == 0 {
			t.Error("wall: no handle_step → wait_for_io")
		}
		if n, _ := under(wall, "[idle: waiting for work]", "idle_until"); n == 0 {
			t.Error("wall: idle_until is not under the idle frame")
		}
		if n, _ := under(wall, "[idle: waiting for work]", "handle_step"); n != 0 {
			t.Error("wall: a step counted as idle")
		}
		// offcpu is perf's or eBPF's (py-spy offers none): native frames,
		// the Rust wait by name.
		offMeta, off := profileOf(t, m, out, "worker-python-1", bundle.OffCPU)
		if !has(off, rustBlock) {
			t.Errorf("offcpu from %s does not name %s", offMeta.Collector, rustBlock)
		}
	})

	t.Run("ruby", func(t *testing.T) {
		m, out := record(t, dir, "--target", "worker-ruby-1", "--duration", "10s", "--profiles", "cpu,offcpu,wall")
		meta, cpu := profileOf(t, m, out, "worker-ruby-1", bundle.CPU)
		if meta.Collector != "rbspy" {
			t.Errorf("cpu from %s, want rbspy", meta.Collector)
		}
		n, total := under(cpu, "handle_step", "process_step", rustHot)
		t.Logf("cpu: %d of %d samples run from handle_step → process_step into %s; note %s", n, total, rustHot, meta.Note)
		if n == 0 || n*4 < total {
			t.Errorf("cpu: %d of %d samples under handle_step → process_step → %s, want at least a quarter", n, total, rustHot)
		}
		// The Rust frames are under the Ruby call that made them, not
		// the idle loop's sleep or the step's next call (blocking_wait),
		// the Ruby samples nearest in time across the thread's context
		// switches (most of the 4 ms runs of the step hold no rbspy
		// sample at 99 Hz).
		hot, _ := under(cpu, rustHot)
		idle, _ := under(cpu, "idle_until", rustHot)
		wait, _ := under(cpu, "blocking_wait", rustHot)
		t.Logf("cpu: %d samples of %s: %d under process_step, %d under idle_until, %d under blocking_wait", hot, rustHot, n, idle, wait)
		if (hot-n)*10 > hot {
			t.Errorf("cpu: %d of %d samples of %s not under handle_step → process_step (%d under idle_until, %d under blocking_wait)", hot-n, hot, rustHot, idle, wait)
		}
		if top := pprofTop(t, filepath.Join(out, meta.Path)); !strings.Contains(top, rustHot) || !strings.Contains(top, "handle_step") {
			t.Errorf("pprof -top:\n%s", top)
		}
		_, off := profileOf(t, m, out, "worker-ruby-1", bundle.OffCPU)
		if n, _ := under(off, "handle_step", rustBlock); n == 0 {
			t.Error("offcpu: no handle_step → wait_for_io")
		}
		if !has(off, "[idle: waiting for work]") {
			t.Error("offcpu: no idle")
		}
		_, wall := profileOf(t, m, out, "worker-ruby-1", bundle.Wall)
		// rbspy samples on a fixed schedule (start + n/rate) and the
		// worker steps on one too (20 a second): at rbspy's own 100 Hz the
		// two locked in phase, and in some runs no Ruby sample ever fell
		// in process_step (a 4 ms part of each 50 ms step). At the 99 Hz
		// the collector asks for, the sample points drift across the step
		// in a second, so some 8% of the window's samples are there.
		// The native frames come from a perf cpu sample near in time, at
		// 99 Hz, so only steps that one fell in get them (about 40% of
		// 4 ms steps); none may get a sleeping thread's frames.
		inStep, _ := under(wall, "handle_step", "process_step")
		joined, _ := under(wall, "handle_step", "process_step", rustHot)
		var asleep int64
		for _, s := range wall.Sample {
			st := strings.Join(names(s), ";")
			if strings.Contains(st, "process_step") && (strings.Contains(st, "nanosleep") || strings.Contains(st, "ppoll")) {
				asleep += s.Value[0]
			}
		}
		t.Logf("wall: %d of rbspy's samples in process_step, %d of them joined to %s, %d to a sleep", inStep, joined, rustHot, asleep)
		if inStep == 0 {
			t.Error("wall: no rbspy sample in handle_step → process_step in 10 s: the sampling locked in phase with the worker's steps")
		}
		if inStep >= 20 && joined == 0 {
			t.Errorf("wall: none of %d samples in handle_step → process_step joined to %s", inStep, rustHot)
		}
		if asleep*10 > inStep {
			t.Errorf("wall: %d of %d samples in process_step joined to a sleeping thread's frames", asleep, inStep)
		}
		if n, _ := under(wall, "[idle: waiting for work]", "idle_until"); n == 0 {
			t.Error("wall: idle_until is not under the idle frame")
		}
	})

	t.Run("typescript", func(t *testing.T) {
		m, out := record(t, dir, "--target", "worker-ts-1", "--duration", "10s", "--profiles", "cpu,offcpu")
		meta, cpu := profileOf(t, m, out, "worker-ts-1", bundle.CPU)
		if !strings.Contains(meta.Note, "JIT frames named from") {
			t.Errorf("cpu note %q", meta.Note)
		}
		n, total := under(cpu, "handle_step (JS)", "JSC-Thunk: FFI invoke", rustHot)
		t.Logf("cpu: %d of %d samples run from handle_step (JS) through the FFI thunk into %s", n, total, rustHot)
		if n == 0 || n*4 < total {
			t.Errorf("cpu: %d of %d samples under handle_step (JS) → FFI → %s, want at least a quarter", n, total, rustHot)
		}
		if top := pprofTop(t, filepath.Join(out, meta.Path)); !strings.Contains(top, rustHot) || !strings.Contains(top, "(JS)") {
			t.Errorf("pprof -top:\n%s", top)
		}
		_, off := profileOf(t, m, out, "worker-ts-1", bundle.OffCPU)
		if n, _ := under(off, "handle_step (JS)", rustBlock); n == 0 {
			t.Error("offcpu: no handle_step (JS) → wait_for_io")
		}
		if !has(off, "[idle: waiting for work]") {
			t.Error("offcpu: no idle")
		}
		pid, _ := os.ReadFile(filepath.Join(dir, ".pids", "worker-ts-1.pid"))
		if _, err := os.Stat("/tmp/perf-" + strings.TrimSpace(string(pid)) + ".map"); err == nil {
			t.Error("the perf map profcap wrote was left behind")
		}
	})

	t.Run("all", func(t *testing.T) {
		m, _ := record(t, dir, "--all", "--duration", "10s")
		if m.Status != bundle.StatusOK {
			t.Errorf("bundle status %s", m.Status)
		}
		var got []string
		for _, tg := range m.Targets {
			got = append(got, tg.Name)
			for _, p := range tg.Profiles {
				if p.Status == bundle.StatusUnsupported {
					continue
				}
				if p.Status != bundle.StatusOK {
					t.Errorf("%s %s (%s): %s: %s", tg.Name, p.Kind, p.Collector, p.Status, p.Error)
				}
				t.Logf("%s %s from %s: %d samples, coverage %v", tg.Name, p.Kind, p.Collector, p.Samples, p.Coverage)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{"worker-python-1", "worker-ruby-1", "worker-ts-1"}) {
			t.Errorf("targets %v", got)
		}
	})
}
