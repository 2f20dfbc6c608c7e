package collectors

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/profcap/profcap/internal/testreq"
)

// TestToolDiesWithProfcap: a tool outlives no profcap killed with SIGKILL
// (which it cannot catch to stop its tools): the kernel sends the tool
// SIGTERM (Pdeathsig).
func TestToolDiesWithProfcap(t *testing.T) {
	testreq.Command(t, "sh")
	dir := t.TempDir()
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), "PROFCAP_TEST_ORPHAN="+dir)
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "pid")
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(pidFile); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	tool := readPID(t, pidFile)
	if !processExists(tool) {
		t.Fatalf("the tool (pid %d) is not running", tool)
	}
	helper.Process.Kill()
	helper.Wait()
	for i := 0; i < 250 && processExists(tool); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if processExists(tool) {
		syscall.Kill(tool, syscall.SIGKILL)
		t.Fatalf("the tool (pid %d) outlived the profcap that ran it by 5s", tool)
	}
}
