package procstat

import (
	"os"
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

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("4242 (demo) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0"))
	f.Fuzz(func(t *testing.T, data []byte) { _, _ = parseStat(data) })
}
