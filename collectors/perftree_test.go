package collectors

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
)

// TestPerfProcessTree: perf -p is given the target and the descendants it
// has when perf starts (a pre-forking server's workers), and the note names
// them and says that later forks are missed.
func TestPerfProcessTree(t *testing.T) {
	sh := exec.Command("sh", "-c", "sleep 30 & sleep 30 & wait")
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sh.Process.Kill(); sh.Wait() }()
	pid := sh.Process.Pid
	var kids []int
	for deadline := time.Now().Add(5 * time.Second); len(kids) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		kids = children(pid)
	}
	if len(kids) != 2 {
		t.Fatalf("sh %d has children %v, want 2", pid, kids)
	}
	defer func() {
		for _, k := range kids {
			exec.Command("kill", fmt.Sprint(k)).Run()
		}
	}()
	tree, note := processTree(pid)
	if len(tree) != 3 || tree[0] != pid || !slices.Contains(tree, kids[0]) || !slices.Contains(tree, kids[1]) {
		t.Errorf("tree %v, want %d then %v", tree, pid, kids)
	}
	if !strings.Contains(note, "2 descendants") || !strings.Contains(note, "(sleep)") || !strings.Contains(note, "not followed") {
		t.Errorf("note %q", note)
	}
	c := NewPerf(PerfOptions{})
	for _, k := range []bundle.Kind{bundle.CPU, bundle.OffCPU} {
		args := strings.Join(c.recordTreeArgs(k, tree, "x.data", "fp"), " ")
		if !strings.Contains(args, "-p "+pidList(tree)) || strings.Count(pidList(tree), ",") != 2 {
			t.Errorf("%s args %q, want -p with the tree", k, args)
		}
	}
	if tree, note := processTree(kids[0]); len(tree) != 1 || note != "" {
		t.Errorf("a process without children: %v %q", tree, note)
	}
}
