package collectors

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/rusttest"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/targets"
)

// goPprofTop runs `go tool pprof -top` on p written to a file.
func goPprofTop(t *testing.T, p *profile.Profile) string {
	t.Helper()
	goBin := testreq.Command(t, "go")
	file := filepath.Join(t.TempDir(), "p.pb.gz")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Write(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command(goBin, "tool", "pprof", "-top", file).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof -top: %v\n%s", err, out)
	}
	return string(out)
}

// TestPprofRefsvc takes cpu from pprof-rs and heap from jemalloc_pprof,
// both served by the reference service (profiling build), through the
// collector as --url gives it: Rust names in both, the CPU where /truth
// says it went, the heap's stacks ending at the program's allocation
// sites rather than in jemalloc's sampler, and go tool pprof reads each.
func TestPprofRefsvc(t *testing.T) {
	svc := rusttest.Start(t, rusttest.Profiling, "worker")
	svc.WarmPprof(t)
	tg := &targets.Target{Name: "refsvc", Pprof: svc.PprofURL()}
	c := NewPprof(PprofOptions{})
	av := map[bundle.Kind]Availability{}
	for _, a := range c.Probe(context.Background(), tg) {
		av[a.Kind] = a
	}
	if !av[bundle.CPU].Available || !av[bundle.Heap].Available {
		t.Errorf("probe: cpu %+v, heap %+v: want both available", av[bundle.CPU], av[bundle.Heap])
	}
	for _, k := range []bundle.Kind{bundle.Allocs, bundle.Goroutine, bundle.Mutex, bundle.Block} {
		if av[k].Available || !strings.Contains(av[k].Reason, "HTTP 404") {
			t.Errorf("probe %s: %+v, want unavailable (HTTP 404)", k, av[k])
		}
	}
	before := svc.GetTruth(t)
	res := collect(t, c, tg, 6*time.Second, []bundle.Kind{bundle.CPU, bundle.Heap})
	after := svc.GetTruth(t)

	cpu := res[bundle.CPU]
	if cpu.Status != bundle.StatusOK || cpu.Profile == nil {
		t.Fatalf("cpu: %s %v", cpu.Status, cpu.Err)
	}
	var total int64
	for _, s := range cpu.Profile.Sample {
		total += s.Value[1]
	}
	t.Logf("pprof-rs: %v of CPU in the profile; the process used %v (truth, over the capture and its requests); note %q", time.Duration(total), time.Duration(after.Service.ProcessCPUNS-before.Service.ProcessCPUNS), cpu.Note)
	if !hasFunction(cpu.Profile, "refsvc::work::hash_payload") || !hasFunction(cpu.Profile, "worker_core::compute::checksum_block") {
		t.Errorf("cpu: no refsvc::work::hash_payload / worker_core::compute::checksum_block in the profile")
	}
	checkTopWork(t, cpu.Profile, rusttest.CPUDelta(before, after), false)
	top := goPprofTop(t, cpu.Profile)
	if !strings.Contains(top, "Type: cpu") || !strings.Contains(top, "checksum_block") {
		t.Errorf("go tool pprof -top of the cpu profile:\n%s", top)
	}

	heap := res[bundle.Heap]
	if heap.Status != bundle.StatusOK || heap.Profile == nil {
		t.Fatalf("heap: %s %v", heap.Status, heap.Err)
	}
	t.Logf("heap note: %s", heap.Note)
	if !strings.Contains(heap.Note, "jemalloc") {
		t.Errorf("heap note %q: want the trimmed allocator frames said", heap.Note)
	}
	if err := heap.Profile.CheckValid(); err != nil {
		t.Fatal(err)
	}
	for _, s := range heap.Profile.Sample {
		if leaf := s.Location[0].Line; len(leaf) > 0 && jemallocFrame.MatchString(leaf[0].Function.Name) && len(s.Location) > 1 {
			t.Errorf("heap stack still starts in the allocator: %s", leaf[0].Function.Name)
			break
		}
	}
	if !hasFunction(heap.Profile, "refsvc::work::render_template") {
		t.Errorf("heap: the kept renders (refsvc::work::render_template) are not in the profile")
	}
	top = goPprofTop(t, heap.Profile)
	t.Logf("go tool pprof -top (heap):\n%s", firstLines(top, 12))
	if !strings.Contains(top, "Type: inuse_space") || strings.Contains(firstLines(top, 8), "prof_backtrace_impl") {
		t.Errorf("go tool pprof -top of the heap profile:\n%s", top)
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
