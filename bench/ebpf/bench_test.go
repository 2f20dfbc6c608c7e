//go:build linux && amd64

package main

import (
	"os"
	"os/exec"
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
	b.ReportMetric(float64(r.EBPFCPU.Milliseconds())/r.Window.Seconds(), "ebpf-cpu-ms/window-s")
	b.ReportMetric(float64(r.PerfCPU.Milliseconds())/r.Window.Seconds(), "perf-cpu-ms/window-s")
	b.ReportMetric(100*r.EBPFRate, "ebpf-rate-kept-%")
	b.ReportMetric(100*r.PerfRate, "perf-rate-kept-%")
	b.ReportMetric(r.EBPFToProfile.Seconds(), "ebpf-end-to-profile-s")
	b.ReportMetric(r.PerfToProf.Seconds(), "perf-end-to-profile-s")
}
