package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/testsvc"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// profcapBinary builds the profcap command once per test run.
func profcapBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "profcap-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "profcap")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = err
			binPath = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building profcap: %v\n%s", buildErr, binPath)
	}
	return binPath
}

func startRecord(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(profcapBinary(t), append([]string{"record"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, &out
}

func waitExit(t *testing.T, cmd *exec.Cmd, within time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(within + 20*time.Second):
		t.Fatalf("profcap still running %v after the signal", within+20*time.Second)
	}
	return cmd.ProcessState.ExitCode(), time.Since(start)
}

// A 60 s capture of several targets interrupted after 3 s exits within 2 s
// with cpu data from every target and a valid manifest; so does SIGTERM.
func TestInterruptKeepsEverythingCaptured(t *testing.T) {
	var svcs []*testsvc.Process
	var args []string
	for i := 0; i < 3; i++ {
		s := testsvc.Start(t, testsvc.Normal, false)
		svcs = append(svcs, s)
		args = append(args, "--url", s.URL())
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		dir := filepath.Join(t.TempDir(), "cap")
		cmd, out := startRecord(t, append(args, "--duration", "60s", "--out", dir)...)
		time.Sleep(3 * time.Second)
		_ = cmd.Process.Signal(sig)
		code, took := waitExit(t, cmd, 2*time.Second)
		if took > 2*time.Second {
			t.Errorf("%v: exited %v after the signal, want within 2s", sig, took)
		}
		if code != 3 {
			t.Errorf("%v: exit %d, want 3\n%s", sig, code, out)
		}
		m, err := bundle.Read(dir)
		if err != nil {
			t.Fatalf("%v: %v\n%s", sig, err, out)
		}
		if m.Status != "partial" || m.Reason != "interrupted" {
			t.Errorf("%v: status %q reason %q", sig, m.Status, m.Reason)
		}
		for _, tg := range m.Targets {
			ok := false
			for _, p := range tg.Profiles {
				// Kept, and partial where the slice in flight at the
				// interrupt was dropped (its coverage says how much).
				if p.Kind == "cpu" && p.Status.Kept() && p.Samples > 0 {
					if _, err := bundle.LoadProfile(dir, p.Path); err == nil {
						ok = true
					}
				}
			}
			if !ok {
				t.Errorf("%v: %s has no cpu data after the interrupt\n%s", sig, tg.Name, out)
			}
		}
		if !strings.Contains(out.String(), "interrupted") {
			t.Errorf("%v: output does not say it was interrupted:\n%s", sig, out)
		}
	}
}

// A second Ctrl-C stops at once, and the manifest is still valid.
func TestSecondInterruptStopsAtOnce(t *testing.T) {
	s := testsvc.Start(t, testsvc.Normal, false)
	hang := testsvc.Start(t, testsvc.Hang, false) // keeps a request in flight
	dir := filepath.Join(t.TempDir(), "cap")
	cmd, out := startRecord(t, "--url", s.URL(), "--url", hang.URL(), "--duration", "60s", "--out", dir)
	time.Sleep(2500 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGINT)
	time.Sleep(100 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGINT)
	code, took := waitExit(t, cmd, 3*time.Second)
	if took > 3*time.Second {
		t.Errorf("exited %v after the second signal", took)
	}
	if code == 0 {
		t.Errorf("exit 0 after an interrupt\n%s", out)
	}
	m, err := bundle.Read(dir)
	if err != nil {
		t.Fatalf("manifest after a second interrupt: %v\n%s", err, out)
	}
	if m.Status == "capturing" {
		t.Errorf("manifest still says capturing")
	}
	for _, tg := range m.Targets {
		for _, p := range tg.Profiles {
			if p.Status == "pending" {
				t.Errorf("%s %s still pending", tg.Name, p.Kind)
			}
		}
	}
}
