package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/profcap/profcap/targets"
)

// demoBinary builds profcap into a temporary directory: the demo re-executes
// it for its services, so the tests need the real binary, not the test
// binary. The build cache makes every build after the first a link.
func demoBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "profcap")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestDemoUsage(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		args []string
		code int
		want string // in the error, or in stdout on success
	}{
		{[]string{"demo", "--help"}, 0, "profcap demo --stop --dir /tmp/demo"},
		{[]string{"demo", "--bogus"}, 2, "unknown flag"},
		{[]string{"demo", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"demo", "--stop", "--detach"}, 2, "--stop cannot be combined with --detach"},
		{[]string{"demo", "--free-ports", "--port-offset", "5"}, 2, "cannot be combined"},
		{[]string{"demo", "--rate", "0"}, 2, "--rate"},
		{[]string{"demo-service", "--help"}, 0, "Run one service of the demo cluster"},
		{[]string{"demo-service", "--role", "worker", "--port", "1"}, 2, "--name is required"},
		{[]string{"demo-service", "--name", "a", "--role", "boss", "--port", "1"}, 2, `unknown role "boss"`},
		{[]string{"demo-service", "--name", "a", "--role", "worker"}, 2, "--port"},
		{[]string{"demo-service", "--name", "a", "--role", "orchestration", "--port", "1"}, 2, "--peers"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(ctx, tc.args, &stdout, &stderr)
		if got := exitCode(err); got != tc.code {
			t.Errorf("%q: exit %d (%v), want %d", tc.args, got, err, tc.code)
			continue
		}
		text := stdout.String()
		if err != nil {
			text = err.Error()
		}
		if !strings.Contains(text, tc.want) {
			t.Errorf("%q: output %q does not contain %q", tc.args, text, tc.want)
		}
	}
	// With no cluster in the directory, --stop says so and succeeds.
	var stdout bytes.Buffer
	dir := t.TempDir()
	if err := run(ctx, []string{"demo", "--stop", "--dir", dir}, &stdout, io.Discard); err != nil {
		t.Fatalf("demo --stop on an empty directory: %v", err)
	}
	if !strings.Contains(stdout.String(), "no demo cluster running") {
		t.Errorf("demo --stop on an empty directory printed %q", stdout.String())
	}
}

// servicePIDs reads the PID files the demo wrote.
func demoServicePIDs(t *testing.T, dir string) map[string]int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, ".pids"))
	if err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, ".pids", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		pids[strings.TrimSuffix(e.Name(), ".pid")] = pid
	}
	return pids
}

// running reports whether pid is a live process (zombies are not).
func demoRunning(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !os.IsNotExist(err)
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// waitGone waits until none of pids runs (a bound on a hang, not a timing
// assertion).
func demoWaitGone(t *testing.T, pids map[string]int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for name, pid := range pids {
		for demoRunning(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("%s (pid %d) still running after %v", name, pid, limit)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func demoCheckHealthy(t *testing.T, dir string) {
	t.Helper()
	cfg, err := targets.Load(filepath.Join(dir, "profcap.yaml"))
	if err != nil {
		t.Fatalf("profcap.yaml: %v", err)
	}
	if len(cfg.Targets) != 5 {
		t.Fatalf("profcap.yaml has %d targets, want 5", len(cfg.Targets))
	}
	for _, tg := range cfg.Targets {
		base := strings.TrimSuffix(tg.Pprof, "/debug/pprof")
		resp, err := http.Get(base + "/health")
		if err != nil {
			t.Fatalf("%s: %v", tg.Name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s /health: %s", tg.Name, resp.Status)
		}
	}
}

func demoAssertNoPIDFiles(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(dir, ".pids"))
	for _, e := range ents {
		t.Errorf("left behind: .pids/%s", e.Name())
	}
}

// TestDemoCluster runs the real binary, built once for its subtests.
func TestDemoCluster(t *testing.T) {
	bin := demoBinary(t)
	t.Run("DetachAndStop", func(t *testing.T) { testDemoDetachAndStop(t, bin) })
	t.Run("ForegroundInterrupt", func(t *testing.T) { testDemoForegroundInterrupt(t, bin) })
	t.Run("ServicesExitWithManager", func(t *testing.T) { testDemoServicesExitWithManager(t, bin) })
}

func testDemoDetachAndStop(t *testing.T, bin string) {
	dir := t.TempDir()
	out, err := exec.Command(bin, "demo", "--detach", "--dir", dir, "--free-ports", "--rate", "10", "--work", "0.3").CombinedOutput()
	if err != nil {
		t.Fatalf("demo --detach: %v\n%s", err, out)
	}
	pids := demoServicePIDs(t, dir)
	t.Cleanup(func() { exec.Command(bin, "demo", "--stop", "--dir", dir).Run() })
	for _, name := range []string{"orchestration-1", "orchestration-2", "worker-rust-1", "worker-ruby-1", "worker-python-1"} {
		if !strings.Contains(string(out), name) {
			t.Errorf("demo --detach output lacks %s:\n%s", name, out)
		}
		if pids[name] == 0 {
			t.Errorf("no pid file for %s", name)
		}
	}
	demoCheckHealthy(t, dir)

	out, err = exec.Command(bin, "demo", "--stop", "--dir", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("demo --stop: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), ": stopped"); n != 5 {
		t.Errorf("demo --stop stopped %d services, want 5:\n%s", n, out)
	}
	demoWaitGone(t, pids, 10*time.Second)
	demoAssertNoPIDFiles(t, dir)
}

// startForeground runs `profcap demo` in the foreground and waits until it
// says it is running.
func demoStartForeground(t *testing.T, bin, dir string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, "demo", "--dir", dir, "--free-ports", "--rate", "10", "--work", "0.3")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		exec.Command(bin, "demo", "--stop", "--dir", dir).Run()
	})
	sc := bufio.NewScanner(stdout)
	var seen strings.Builder
	for sc.Scan() {
		seen.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "press Ctrl-C to stop") {
			go io.Copy(io.Discard, stdout)
			return cmd, &stderr
		}
	}
	cmd.Wait()
	t.Fatalf("profcap demo exited before it was running:\n%s%s", seen.String(), stderr.String())
	return nil, nil
}

func testDemoForegroundInterrupt(t *testing.T, bin string) {
	dir := t.TempDir()
	cmd, stderr := demoStartForeground(t, bin, dir)
	demoCheckHealthy(t, dir)
	pids := demoServicePIDs(t, dir)

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("profcap demo after Ctrl-C: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "demo cluster stopped") {
		t.Errorf("stderr lacks 'demo cluster stopped':\n%s", stderr)
	}
	demoWaitGone(t, pids, 10*time.Second)
	demoAssertNoPIDFiles(t, dir)
}

// testDemoServicesExitWithManager: if the foreground manager dies without
// stopping its services (SIGKILL), they exit by themselves.
func testDemoServicesExitWithManager(t *testing.T, bin string) {
	dir := t.TempDir()
	cmd, _ := demoStartForeground(t, bin, dir)
	pids := demoServicePIDs(t, dir)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	demoWaitGone(t, pids, 10*time.Second)

	// Their PID files are stale now; --stop clears them and signals nothing.
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"demo", "--stop", "--dir", dir}, &stdout, io.Discard); err != nil {
		t.Fatalf("demo --stop: %v", err)
	}
	if n := strings.Count(stdout.String(), ": not running"); n != 5 {
		t.Errorf("demo --stop after the services exited:\n%s", stdout.String())
	}
	demoAssertNoPIDFiles(t, dir)
}
