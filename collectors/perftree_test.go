package collectors

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/targets"
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

// TestPerfMissedForks: of a parent that forked two CPU-burning children
// before the window and a third in it (the eBPF collector's fork target),
// perf records the first three and names the third, which perf -p does
// not follow, in a warning of the note.
func TestPerfMissedForks(t *testing.T) {
	needPerf(t)
	gcc := testreq.Command(t, "gcc")
	bin := filepath.Join(t.TempDir(), "target")
	if out, err := exec.Command(gcc, "-O1", "-fno-omit-frame-pointer", "-pthread", "ebpf/testdata/target.c", "-o", bin).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "fork", "300")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer func() {
		for _, k := range children(pid) {
			exec.Command("kill", fmt.Sprint(k)).Run()
		}
		cmd.Process.Kill()
		cmd.Wait()
	}()
	line := make([]byte, 64)
	if n, _ := out.Read(line); !strings.Contains(string(line[:n]), "forked 2") {
		t.Fatalf("target said %q, want forked 2", line[:n])
	}
	before := children(pid)
	w := NewWindow(2*time.Second, 0)
	go func() {
		time.Sleep(200 * time.Millisecond) // the third fork comes 300 ms later, in the window
		fmt.Fprintln(in, "go")
	}()
	cpu := perfCollect(t, NewPerf(PerfOptions{}), w, &targets.Target{Name: "fork", PID: pid}, bundle.CPU)[bundle.CPU]
	var late []int
	for _, k := range children(pid) {
		if !slices.Contains(before, k) {
			late = append(late, k)
		}
	}
	if len(before) != 2 || len(late) != 1 {
		t.Fatalf("children before %v, forked in the window %v: want 2 and 1", before, late)
	}
	t.Logf("note: %s", cpu.Note)
	i := strings.Index(cpu.Note, "1 process forked during the window was not recorded")
	if i < 0 || !strings.Contains(cpu.Note[i:], fmt.Sprintf("%d (", late[0])) {
		t.Fatalf("note %q, want the warning naming %d", cpu.Note, late[0])
	}
	warn := cpu.Note[i:]
	if j := strings.Index(warn, "; "); j >= 0 {
		warn = warn[:j]
	}
	for _, b := range before {
		if strings.Contains(warn, fmt.Sprintf("%d (", b)) {
			t.Errorf("the warning %q names %d, which perf was given", warn, b)
		}
	}
}
