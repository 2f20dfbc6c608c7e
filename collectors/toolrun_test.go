package collectors

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/testreq"
)

// TestMain doubles as the profcap that dies in TestToolDiesWithProfcap.
func TestMain(m *testing.M) {
	if dir := os.Getenv("PROFCAP_TEST_ORPHAN"); dir != "" {
		os.Exit(orphanTool(dir))
	}
	if lib := os.Getenv("PROFCAP_TEST_MAP_LIB"); lib != "" {
		os.Exit(mapLibAndSleep(lib))
	}
	os.Exit(m.Run())
}

// orphanTool runs a tool (sh writing its pid into dir, then sleeping) for a
// minute; TestToolDiesWithProfcap kills this process meanwhile.
func orphanTool(dir string) int {
	tool := &Tool{Name: "sh"}
	_, err := tool.Run(context.Background(), NewWindow(time.Minute, 0), RunOptions{
		Args: []string{"-c", `echo $$ > "$0/pid.tmp" && mv "$0/pid.tmp" "$0/pid" && exec sleep 60`, dir},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return 0
}

// mapLibAndSleep maps the file lib (as a program embedding an interpreter
// maps its library) and sleeps, so a test has a process that is no
// interpreter but maps, say, libruby.so.
func mapLibAndSleep(lib string) int {
	f, err := os.Open(lib)
	if err != nil {
		return 2
	}
	if _, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ, syscall.MAP_SHARED); err != nil {
		return 2
	}
	time.Sleep(time.Minute)
	return 0
}

// embedding starts a process (this test binary) that maps a file named
// like the interpreter library lib ("libruby.so.3.1").
func embedding(t *testing.T, lib string) *exec.Cmd {
	t.Helper()
	path := filepath.Join(t.TempDir(), lib)
	if err := os.WriteFile(path, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PROFCAP_TEST_MAP_LIB="+path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid)); strings.Contains(string(maps), lib) {
			return cmd
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the helper process never mapped %s", lib)
	return nil
}

// fakeTool is a stand-in for a profiler, driven by $FAKE_MODE:
//
//	flush   on SIGINT, print "flushed" and exit 0 (as perf and samply do)
//	stubborn ignore SIGINT; start a child (its pid in $FAKE_DIR/child) and wait
//	fail    print a burst of output, then "fatal: no luck", and exit 3
//	quick   exit 0 at once, printing nothing
//
// It writes its own pid to $FAKE_DIR/pid first.
const fakeTool = `
echo $$ > "$FAKE_DIR/pid"
case "$FAKE_MODE" in
flush)
	trap 'echo flushed; exit 0' INT
	while :; do sleep 0.05; done ;;
stubborn)
	trap '' INT
	sleep 300 &
	echo $! > "$FAKE_DIR/child"
	while :; do sleep 0.05; done ;;
fail)
	i=0
	while [ $i -lt 2000 ]; do echo "noise line $i of the tool's chatter" >&2; i=$((i+1)); done
	echo "fatal: no luck" >&2
	exit 3 ;;
quick)
	exit 0 ;;
esac
`

// installFakeTool writes the fake tool as NAME in a directory of its own
// and returns a Tool for it and that directory.
func installFakeTool(t *testing.T, name, mode string) (*Tool, string) {
	t.Helper()
	sh := testreq.Command(t, "sh")
	dir := t.TempDir()
	bin := filepath.Join(dir, name)
	if err := os.WriteFile(bin, []byte("#!"+sh+"\n"+fakeTool), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_DIR", dir)
	t.Setenv("FAKE_MODE", mode)
	return &Tool{Name: name, Path: bin, Access: PerfEvents}, dir
}

func readPID(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// startProcess starts a process for a test to record. It is reaped as soon
// as it exits (so its exit shows at once) and killed when the test ends.
func startProcess(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return cmd
}

// target starts a process that sleeps for d.
func target(t *testing.T, d time.Duration) *exec.Cmd {
	t.Helper()
	return startProcess(t, "sleep", strconv.FormatFloat(d.Seconds(), 'f', 2, 64))
}

// TestToolRunStopsAtWindowEnd: the tool gets SIGINT at the window's end,
// flushes and exits; that stop is not a failure, and the run spans the
// window.
func TestToolRunStopsAtWindowEnd(t *testing.T) {
	tool, _ := installFakeTool(t, "faketool", "flush")
	tg := target(t, time.Minute)
	w := NewWindow(500*time.Millisecond, 0)
	run, err := tool.Run(context.Background(), w, RunOptions{Args: []string{"record"}, PID: tg.Process.Pid, Kind: bundle.CPU})
	if err != nil {
		t.Fatal(err)
	}
	if run.Failed() || run.Exited || run.TargetGone || run.TargetExit() != nil {
		t.Errorf("failed %v (%v), exited %v, target gone %v: want a clean stop", run.Failed(), run.Err, run.Exited, run.TargetGone)
	}
	if run.Output() != "flushed" {
		t.Errorf("output %q: the tool did not get SIGINT", run.Output())
	}
	if d := run.End.Sub(w.Start); d < 450*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("the run ended %v after the window started, want at its end (500ms)", d)
	}
	if !run.Start.Before(run.End) || run.Start.Before(w.Start) {
		t.Errorf("run %v..%v in a window from %v", run.Start, run.End, w.Start)
	}
}

// TestToolRunKillsStubbornTool: a tool that ignores SIGINT is killed after
// StopTimeout, with the processes it started.
func TestToolRunKillsStubbornTool(t *testing.T) {
	tool, dir := installFakeTool(t, "faketool", "stubborn")
	w := NewWindow(300*time.Millisecond, 0)
	t0 := time.Now()
	run, err := tool.Run(context.Background(), w, RunOptions{Args: []string{"record"}, StopTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 750*time.Millisecond || d > 5*time.Second {
		t.Errorf("Run returned after %v, want the window (300ms) plus the stop timeout (500ms)", d)
	}
	if !run.Failed() || !strings.Contains(run.Err.Error(), "killed") {
		t.Errorf("exit %v: want killed", run.Err)
	}
	child := readPID(t, filepath.Join(dir, "child"))
	for i := 0; i < 50 && processExists(child); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if processExists(child) {
		syscall.Kill(child, syscall.SIGKILL)
		t.Errorf("the tool's child (pid %d) outlived it: the process group was not killed", child)
	}
}

// TestToolRunAbandoned: ctx done kills the tool at once, whatever its
// StopTimeout.
func TestToolRunAbandoned(t *testing.T) {
	tool, _ := installFakeTool(t, "faketool", "stubborn")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	run, err := tool.Run(ctx, NewWindow(time.Hour, 0), RunOptions{Args: []string{"record"}, StopTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("Run returned %v after the start, the context ended after 300ms", d)
	}
	if run.Err == nil || run.Exited {
		t.Errorf("exit %v, exited by itself %v: want killed", run.Err, run.Exited)
	}
}

// TestToolRunToolFails: a tool that fails on its own ends the run before
// the window; Failure says what it printed last, and the output kept is
// its bounded tail.
func TestToolRunToolFails(t *testing.T) {
	tool, _ := installFakeTool(t, "faketool", "fail")
	tg := target(t, time.Minute)
	w := NewWindow(time.Minute, 0)
	run, err := tool.Run(context.Background(), w, RunOptions{Args: []string{"record"}, PID: tg.Process.Pid, Kind: bundle.CPU})
	if err != nil {
		t.Fatal(err)
	}
	if !run.Exited || !run.Failed() || run.End.Sub(run.Start) > 30*time.Second {
		t.Errorf("exited %v, failed %v after %v: want the tool's own early failure", run.Exited, run.Failed(), run.End.Sub(run.Start))
	}
	if out := run.Output(); len(out) > tailSize || !strings.HasSuffix(out, "fatal: no luck") || strings.Contains(out, "line 0 ") {
		t.Errorf("output of %d bytes ending %q: want the last 8 KB", len(out), out[max(0, len(out)-40):])
	}
	if err := run.Failure(); err.Error() != "faketool record failed: fatal: no luck" {
		t.Errorf("failure %q", err)
	}
}

// TestToolRunTargetExits: the target's exit ends the run and is reported.
func TestToolRunTargetExits(t *testing.T) {
	tool, _ := installFakeTool(t, "faketool", "flush")
	tg := target(t, 300*time.Millisecond)
	pid := tg.Process.Pid
	run, err := tool.Run(context.Background(), NewWindow(time.Minute, 0), RunOptions{Args: []string{"record"}, PID: pid, Kind: bundle.CPU})
	if err != nil {
		t.Fatal(err)
	}
	if !run.TargetGone || run.TargetGoneAt.IsZero() || run.End.Sub(run.Start) > 10*time.Second {
		t.Fatalf("target gone %v at %v, run %v: want the run to end with the target", run.TargetGone, run.TargetGoneAt, run.End.Sub(run.Start))
	}
	exit := run.TargetExit()
	if exit == nil || !strings.Contains(exit.Error(), "pid "+strconv.Itoa(pid)+") exited after") {
		t.Errorf("target exit %v", exit)
	}
	if f := run.Failure(); !strings.HasPrefix(f.Error(), exit.Error()) || !strings.Contains(f.Error(), "faketool record wrote no profile") {
		t.Errorf("failure %v: want the target's exit first, then the tool's", f)
	}
}

// TestToolRunTicksAndReady: Ready runs before sampling counts as started,
// Tick while the target lives and never after Run returns.
func TestToolRunTicksAndReady(t *testing.T) {
	tool, _ := installFakeTool(t, "faketool", "flush")
	tg := target(t, time.Minute)
	var ticks []int
	var readyAt time.Time
	readyErr := errors.New("not ready")
	run, err := tool.Run(context.Background(), NewWindow(450*time.Millisecond, 0), RunOptions{
		Args: []string{"record"}, PID: tg.Process.Pid,
		Tick:  func(n int) { ticks = append(ticks, n) },
		Ready: func(context.Context, <-chan struct{}) error { readyAt = time.Now(); return readyErr },
	})
	if err != nil {
		t.Fatal(err)
	}
	n := len(ticks)
	time.Sleep(250 * time.Millisecond)
	if len(ticks) != n {
		t.Errorf("Tick called after Run returned")
	}
	if n < 2 || n > 5 || ticks[0] != 1 || ticks[n-1] != n {
		t.Errorf("ticks %v over 450ms, want 1, 2, 3, 4 (every 100ms)", ticks)
	}
	if readyAt.IsZero() || run.Start.Before(readyAt) || run.ReadyErr != readyErr {
		t.Errorf("ready at %v, run started %v, ready error %v", readyAt, run.Start, run.ReadyErr)
	}
}

func TestToolMissing(t *testing.T) {
	errMissing := errors.New("nothere is not installed: install it with a spell")
	tool := &Tool{Name: "nothere", Path: filepath.Join(t.TempDir(), "nothere"), Missing: errMissing}
	if _, err := tool.Find(); !errors.Is(err, errMissing) || !isLack(err) {
		t.Errorf("Find: %v, want the Missing error, as a lack of this machine", err)
	}
	if _, err := tool.Run(context.Background(), NewWindow(time.Second, 0), RunOptions{Args: []string{"record"}}); !errors.Is(err, errMissing) {
		t.Errorf("Run: %v", err)
	}
	if _, err := (&Tool{Name: "profcap-no-such-tool"}).Find(); err == nil || err.Error() != "profcap-no-such-tool is not installed" {
		t.Errorf("Find without Missing: %v", err)
	}
}

// TestToolFailureMessages: the one classifier, on what perf, samply,
// py-spy and rbspy print.
func TestToolFailureMessages(t *testing.T) {
	errMissing := errors.New("py-spy is not installed: pip install py-spy")
	perf := &Tool{Name: "perf", Access: PerfEvents}
	pyspy := &Tool{Name: "py-spy", Access: Ptrace, Missing: errMissing}
	exit := errors.New("exit status 1")
	for _, tc := range []struct {
		tool   *Tool
		kind   bundle.Kind
		output string
		exit   error
		want   string
	}{
		{perf, bundle.CPU, "Error:\nAccess to performance monitoring and observability operations is limited.", exit,
			"perf has no permission to record cpu of pid 42 (kernel.perf_event_paranoid="},
		{perf, bundle.CPU, "Permission denied", exit, "(sysctl -w kernel.perf_event_paranoid=1)"},
		{perf, bundle.OffCPU, "Permission denied", exit, "(sysctl -w kernel.perf_event_paranoid=-1)"},
		{pyspy, bundle.CPU, "Error: Permission Denied: Try running again with elevated permissions", exit,
			"py-spy has no permission to read pid 42's memory: run profcap as root or with CAP_SYS_PTRACE (Error: Permission Denied: Try running again with elevated permissions)"},
		{pyspy, bundle.CPU, "Error: Failed to open process 42 - No such process (os error 3)", exit, "pid 42 exited before py-spy could attach"},
		{perf, bundle.CPU, "couldn't find pid 42", exit, "pid 42 exited before perf could attach"},
		{pyspy, bundle.CPU, "/home/u/.pyenv/shims/py-spy: line 21: py-spy: command not found", exit,
			"py-spy is not installed: pip install py-spy (/home/u/.pyenv/shims/py-spy: line 21: py-spy: command not found)"},
		{perf, bundle.OffCPU, "event syntax error: 'sched:sched_switch'\n  \\___ unknown tracepoint", exit, "mount -t tracefs"},
		{perf, bundle.CPU, "", exit, "perf record failed: exit status 1"},
		{perf, bundle.CPU, "one\nlast words", exit, "perf record failed: last words"},
		{perf, bundle.CPU, "", nil, "perf record wrote no profile"},
		{pyspy, bundle.CPU, "Stopped sampling\n", nil, "py-spy record wrote no profile: Stopped sampling"},
	} {
		err := tc.tool.classify([]string{"record", "-p", "42"}, 42, tc.kind, tc.output, tc.exit)
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: %q, want it to say %q", tc.tool.Name, tc.output, err, tc.want)
		}
		if strings.Contains(tc.output, "not found") && !errors.Is(err, errMissing) {
			t.Errorf("%q: %v does not wrap the Missing error", tc.output, err)
		}
	}
}

// TestPermitted: the privilege checks by access, as an unprivileged user
// would meet them; root passes both.
func TestPermitted(t *testing.T) {
	self := os.Getpid()
	for _, a := range []Access{PerfEvents, Ptrace} {
		err := (&Tool{Name: "x", Access: a}).Permitted(self, bundle.CPU)
		if os.Geteuid() == 0 && err != nil {
			t.Errorf("access %d: root refused: %v", a, err)
		}
		if err != nil && !isLack(err) {
			t.Errorf("access %d: %v is not a lack of this machine", a, err)
		}
	}
	if why := otherUser(1); os.Geteuid() != 0 && !hasCap(capSysPtrace) && !strings.Contains(why, "pid 1 belongs to uid 0") {
		t.Errorf("otherUser(1) = %q", why)
	}
	if why := otherUser(self); why != "" {
		t.Errorf("otherUser(self) = %q", why)
	}
}
