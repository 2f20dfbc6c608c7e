package procstat

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/profcap/profcap/internal/testreq"
)

// TestCPUTimeOfSpinningChild checks CPUTime against a child that spins
// (a shell counting to 600 000, a few hundred ms of CPU). The child is
// read once it has exited but before it is reaped, so its time is final,
// and the reading is compared with the kernel's account of the same
// process given to the parent by wait4 (rusage): /proc/PID/stat counts in
// ticks of 10 ms, so the two agree within two ticks.
func TestCPUTimeOfSpinningChild(t *testing.T) {
	sh := testreq.Command(t, "sh")
	cmd := exec.Command(sh, "-c", "i=0; while [ $i -lt 600000 ]; do i=$((i+1)); done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	early, err := CPUTime(pid)
	if err != nil {
		cmd.Wait()
		t.Fatal(err)
	}
	// Wait for the exit, leaving the child a zombie whose stat stays.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		cmd.Wait()
		t.Fatal(err)
	}
	got, err := CPUTime(pid)
	if werr := cmd.Wait(); werr != nil {
		t.Fatalf("the spinner failed: %v", werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Fatalf("no rusage: %T", cmd.ProcessState.SysUsage())
	}
	truth := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	t.Logf("CPUTime %v at the start, %v at the exit; wait4 says %v", early, got, truth)
	if truth < 100*time.Millisecond {
		t.Fatalf("the spinner used only %v of CPU: no test of the reading", truth)
	}
	if diff := got - truth; diff < -20*time.Millisecond || diff > 20*time.Millisecond {
		t.Errorf("CPUTime = %v, want the child's %v within 20ms (2 ticks)", got, truth)
	}
	if early > truth/2 {
		t.Errorf("CPUTime at the child's start = %v, more than half of what it used in all (%v)", early, truth)
	}
}
