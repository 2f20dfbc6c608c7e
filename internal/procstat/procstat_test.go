package procstat

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

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
