package testsvc

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Process is a running copy of the test binary serving as a test service.
type Process struct {
	Cmd  *exec.Cmd
	Addr string // host:port
}

// URL is the service's pprof base URL.
func (p *Process) URL() string { return "http://" + p.Addr + "/debug/pprof" }

// Kill stops the process at once.
func (p *Process) Kill() { _ = p.Cmd.Process.Kill(); _ = p.Cmd.Wait() }

// Start runs the current test binary as a service in mode and waits until it
// listens. The process is killed when the test ends.
func Start(t testing.TB, mode Mode, withFgprof bool) *Process {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PROFCAP_TESTSVC="+string(mode))
	if withFgprof {
		cmd.Env = append(cmd.Env, "PROFCAP_TESTSVC_FGPROF=1")
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Process{Cmd: cmd}
	t.Cleanup(p.Kill)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				lines <- addr
				return
			}
		}
		close(lines)
	}()
	select {
	case addr, ok := <-lines:
		if !ok {
			t.Fatalf("test service exited before listening")
		}
		p.Addr = addr
	case <-time.After(20 * time.Second):
		t.Fatalf("test service did not start within 20s")
	}
	return p
}

// String describes the process.
func (p *Process) String() string {
	return fmt.Sprintf("testsvc pid %d at %s", p.Cmd.Process.Pid, p.Addr)
}
