//go:build linux && amd64

package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// BenchmarkPingPong runs the measurement once (it takes about 40 s) and
// reports its figures as metrics; make bench runs it.
func BenchmarkPingPong(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	for _, tool := range []string{"gcc", "perf"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skip(tool + " is not on PATH")
		}
	}
	r, err := run(8 * time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Log("\n" + r.String())
	for _, x := range r.Rows {
		name := strings.NewReplacer(" ", "-", "+", "-", ",", "").Replace(x.Name) + "-" + x.Place
		b.ReportMetric(100*x.Kept, name+"-rate-kept-%")
		b.ReportMetric(float64(x.CPU.Microseconds())/1000/r.Window.Seconds(), name+"-cpu-ms/window-s")
	}
}

// BenchmarkNginxNoFramePointers runs the nginx table once (about 40 s).
func BenchmarkNginxNoFramePointers(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	for _, tool := range []string{"perf", "wrk", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skip(tool + " is not on PATH")
		}
	}
	r, err := runNginx(8 * time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Log("\n" + r.String())
	for _, x := range r.Rows {
		name := strings.NewReplacer(" ", "-", "+", "-", "(", "", ")", "").Replace(x.Name)
		b.ReportMetric(100*x.Kept, name+"-rate-kept-%")
		b.ReportMetric(float64(x.CPU.Microseconds())/1000/r.Window.Seconds(), name+"-cpu-ms/window-s")
	}
}
