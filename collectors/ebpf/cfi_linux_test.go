//go:build linux && amd64

package ebpf

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/internal/testreq"
)

// buildNoFrame compiles testdata/noframe.c as distributions build C:
// optimised, without frame pointers, with .eh_frame.
func buildNoFrame(t *testing.T) string {
	t.Helper()
	gcc := testreq.Command(t, "gcc")
	bin := filepath.Join(t.TempDir(), "noframe")
	if out, err := exec.Command(gcc, "-O2", "-fomit-frame-pointer", "-g", "-pthread", "testdata/noframe.c", "-o", bin).CombinedOutput(); err != nil {
		t.Fatalf("building noframe: %v\n%s", err, out)
	}
	if fp := collectors.FramePointersOf(bin); !fp.Known || fp.Present {
		t.Fatalf("noframe: %s, want a verdict of no frame pointers", fp)
	}
	return bin
}

// TestCFIWholeStacks: a program without frame pointers gets whole stacks
// from eBPF, walked by its .eh_frame, on both stack paths: the spinning
// thread's cpu under main → serve → handle_request → parse_body →
// hash_block; the napping thread's off-CPU time under nap_thread →
// nap_outer → nap_inner (stacks taken as it returns to user space); the
// blocked one's under block_thread → block_outer → block_inner (taken by
// the task iterator at the window's end). The target's call structure and
// its threads' waiting all the time are the ground truth; frame pointers
// would give the leaf and garbage.
func TestCFIWholeStacks(t *testing.T) {
	needEBPF(t)
	bin := buildNoFrame(t)
	cmd := exec.Command(bin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.Sleep(200 * time.Millisecond)
	pid := cmd.Process.Pid
	for _, tc := range stackPaths {
		t.Run(tc.name, func(t *testing.T) {
			res, w := record(t, New(tc.opt), pid, 3*time.Second, bundle.CPU, bundle.OffCPU)
			win := w.Ended().Sub(w.Start)

			cpu := res[bundle.CPU].Profile
			top(t, cpu, 0, 4)
			for _, tc := range []struct{ leaf, chain string }{
				{"hash_block", "main;serve;handle_request;parse_body;hash_block"},
				{"stamp_request", "main;serve;handle_request;stamp_request"},
			} {
				var in, whole, vdso int64
				for _, s := range cpu.Sample {
					if s.NumLabel["tid"][0] != int64(pid) || !hasFunc(s, tc.leaf) {
						continue
					}
					in += s.Value[0]
					if strings.Contains(stackString(s), tc.chain) {
						whole += s.Value[0]
						if strings.Contains(stackString(s), "vdso") {
							vdso += s.Value[0]
						}
					}
				}
				t.Logf("cpu: %d samples in %s on the main thread, %d (%.1f%%) with the whole chain from main (%d in the vDSO)", in, tc.leaf, whole, pct(whole, in), vdso)
				if in < 30 || pct(whole, in) < 95 {
					t.Errorf("cpu: %d of %d samples in %s have the chain %s, want at least 95%%", whole, in, tc.leaf, tc.chain)
				}
				if tc.leaf == "stamp_request" && vdso == 0 {
					t.Errorf("cpu: no sample walked from the vDSO to %s", tc.chain)
				}
			}
			// Whole walks are not marked cut; a walk through the
			// assembly function without CFI is, at its root.
			var cutSpin, marked, wrongly int64
			for _, s := range cpu.Sample {
				st := stackString(s)
				switch {
				case hasFunc(s, "cut_spin"):
					cutSpin += s.Value[0]
					if strings.HasPrefix(st, cutFrame+";nocfi_call;cut_spin") {
						marked += s.Value[0]
					}
				case strings.Contains(st, cutFrame) && strings.Contains(st, "main;serve"):
					wrongly += s.Value[0]
				}
			}
			t.Logf("cpu: %d samples in cut_spin, %d of them under %s then nocfi_call; %d whole stacks marked cut", cutSpin, marked, cutFrame, wrongly)
			if cutSpin < 20 || pct(marked, cutSpin) < 95 || wrongly > 0 {
				t.Errorf("cpu: %d of %d cut_spin samples marked cut after nocfi_call (want 95%%), %d stacks from main marked cut (want none)", marked, cutSpin, wrongly)
			}
			if c := strings.Join(cpu.Comments, "\n"); !strings.Contains(c, "stopped before the outermost frame") {
				t.Errorf("cpu comments do not count the cut walks:\n%s", c)
			}
			if c := strings.Join(cpu.Comments, "\n"); !strings.Contains(c, "walked by .eh_frame CFI") {
				t.Errorf("cpu comments do not say the stacks were walked by CFI:\n%s", c)
			}

			off := res[bundle.OffCPU].Profile
			top(t, off, 0, 4)
			for _, chain := range []string{"nap_thread;nap_outer;nap_inner", "block_thread;block_outer;block_inner"} {
				got := time.Duration(sum(off, 0, func(s *profile.Sample) bool { return strings.Contains(stackString(s), chain) }))
				t.Logf("offcpu: %s of %s under %s (%.1f%%)", got, win, chain, 100*got.Seconds()/win.Seconds())
				if r := got.Seconds() / win.Seconds(); r < 0.9 || r > 1.1 {
					t.Errorf("offcpu: %.1f%% of the window under %s, want 90-110%% (the thread waits there all the time)", 100*r, chain)
				}
			}
		})
	}
}

func pct(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}
