package procstat

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain doubles as the spinner of TestCPUTimeOfSpinningChild: with
// $PROFCAP_TEST_SPIN set to a duration, the test binary burns that much
// CPU, prints the CPU time it used as the kernel counts it for getrusage
// (nanoseconds), and waits for its standard input to close.
func TestMain(m *testing.M) {
	if s := os.Getenv("PROFCAP_TEST_SPIN"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			os.Exit(2)
		}
		x := 0
		for used := time.Duration(0); used < d; used = rusage() {
			for i := 0; i < 1_000_000; i++ {
				x += i ^ x
			}
		}
		fmt.Println(int64(rusage()), x&1)
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// rusage is this process's user+system CPU time from getrusage(2): the
// kernel's own account, read by another interface than /proc/PID/stat.
func rusage() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestParseStat(t *testing.T) {
	line := []byte("4242 (uv run (py)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0")
	d, err := parseStat(line)
	if err != nil || d != 3*time.Second {
		t.Errorf("parseStat = %v, %v; want 3s (250+50 ticks)", d, err)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 a b c"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

// TestCPUTimeOfSpinningChild checks CPUTime against a child that burns a
// known amount of CPU and reports it from getrusage: /proc/PID/stat counts
// in ticks of 10 ms, so the two agree within a few ticks. The child is
// measured while it waits, so the tests' own CPU use cannot be mistaken for
// it.
func TestCPUTimeOfSpinningChild(t *testing.T) {
	const spin = 400 * time.Millisecond
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PROFCAP_TEST_SPIN="+spin.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	before, err := CPUTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("the spinner said nothing: %v", err)
	}
	f := strings.Fields(line)
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		t.Fatalf("spinner: %q", line)
	}
	truth := time.Duration(ns)
	got, err := CPUTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CPUTime %v at start, %v after spinning; getrusage says %v", before, got, truth)
	if truth < spin {
		t.Fatalf("the spinner reports %v, less than the %v it burns", truth, spin)
	}
	if diff := got - truth; diff < -30*time.Millisecond || diff > 30*time.Millisecond {
		t.Errorf("CPUTime = %v, want the child's %v within 30ms (3 ticks)", got, truth)
	}
	if before > truth/2 {
		t.Errorf("CPUTime at the child's start = %v, more than half of what it burnt in all", before)
	}
}

// TestCPUTimeOfSleepingChild: a process that only sleeps has used next to
// no CPU, however long it has lived.
func TestCPUTimeOfSleepingChild(t *testing.T) {
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	time.Sleep(300 * time.Millisecond)
	got, err := CPUTime(cmd.Process.Pid)
	if err != nil || got > 20*time.Millisecond {
		t.Errorf("CPUTime of a sleeping child = %v, %v; want at most 2 ticks", got, err)
	}
	if _, err := CPUTime(-1); err == nil {
		t.Errorf("CPUTime(-1) found a process")
	}
}

func TestCPUTimeOfThisProcessGrows(t *testing.T) {
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for t0 := time.Now(); time.Since(t0) < 200*time.Millisecond; {
		x++
	}
	after, err := CPUTime(os.Getpid())
	if err != nil || after <= before {
		t.Errorf("CPU time %v then %v (%v)", before, after, err)
	}
}

// FuzzParseStat checks, for any line, what must hold of every reading:
// the command name (everything up to the last ')') does not change it, a
// reading is whole ticks and not negative, and one more tick of utime or of
// stime reads as exactly 10 ms more.
func FuzzParseStat(f *testing.F) {
	f.Add([]byte("4242 (demo) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0"))
	f.Add([]byte("1 (a) b) R 0 1 1 0 -1 0 0 0 0 0 18446744073709551615 1 0 0"))
	f.Add([]byte("7 (x) S 1 2 3 4 5 6 7 8 9 10 +3 04"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := parseStat(data)
		i := bytes.LastIndexByte(data, ')')
		if i >= 0 {
			other := append([]byte("99 (another (name)"), data[i:]...)
			d2, err2 := parseStat(other)
			if d2 != d || (err == nil) != (err2 == nil) {
				t.Fatalf("the command name changed the reading: %v, %v and %v, %v", d, err, d2, err2)
			}
		}
		if err != nil {
			return
		}
		if i < 0 {
			t.Fatalf("read %v from a line without ')'", d)
		}
		if d < 0 || d%(time.Second/clockTicks) != 0 {
			t.Fatalf("reading %v is not whole ticks", d)
		}
		f := bytes.Fields(data[i+1:])
		ut, _ := strconv.ParseUint(string(f[11]), 10, 64)
		st, _ := strconv.ParseUint(string(f[12]), 10, 64)
		if ut >= 1<<40 || st >= 1<<40 {
			return // near the range's end: no room for one more
		}
		for _, field := range []int{11, 12} { // utime, stime
			n, err := strconv.ParseUint(string(f[field]), 10, 64)
			if err != nil || strconv.FormatUint(n, 10) != string(f[field]) {
				continue // "+3" or "007": written back differently
			}
			g := append([][]byte(nil), f...)
			g[field] = []byte(strconv.FormatUint(n+1, 10))
			more, err := parseStat(append(append([]byte(nil), data[:i+1]...), append([]byte(" "), bytes.Join(g, []byte(" "))...)...))
			if err != nil || more-d != time.Second/clockTicks {
				t.Fatalf("one more tick in field %d reads %v more (%v), want 10ms", field+3, more-d, err)
			}
		}
	})
}
