//go:build linux && amd64

package main

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// BenchmarkMallocHeavy runs the measurement once (about a minute) and
// reports its figures as metrics; make bench runs it.
func BenchmarkMallocHeavy(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		b.Skip("gcc is not on PATH")
	}
	r, err := run(4*time.Second, Levels, Periods)
	if err != nil {
		b.Fatal(err)
	}
	b.Log("\n" + r.String())
	for _, l := range r.Levels {
		b.ReportMetric(100*l.Kept, "kept-%/work="+itoa(l.Work))
	}
	for _, l := range r.Defaults {
		b.ReportMetric(100*l.Kept, "default-kept-%/work="+itoa(l.Work))
	}
	b.ReportMetric(float64(r.Levels[0].PerCall.Nanoseconds()), "ns/probed-call")
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
