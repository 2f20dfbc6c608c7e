//go:build linux

package main

import (
	"io"
	"testing"
	"time"
)

// BenchmarkTaskDump is one dump of the reference service (ns/op: its
// latency seen by the client), after the first one that loads the symbol
// tables.
func BenchmarkTaskDump(b *testing.B) {
	svc, err := start(options{variant: "release"})
	if err != nil {
		b.Skip(err)
	}
	defer svc.stop()
	time.Sleep(2 * time.Second)
	if _, _, err := dumpOnce(svc.cl, svc.base); err != nil {
		b.Fatal(err)
	}
	var bytes int64
	b.ResetTimer()
	for range b.N {
		n, _, err := dumpOnce(svc.cl, svc.base)
		if err != nil {
			b.Fatal(err)
		}
		bytes += n
		b.StopTimer()
		time.Sleep(100 * time.Millisecond) // let the service run between dumps
		b.StartTimer()
	}
	b.ReportMetric(float64(bytes)/float64(b.N), "dump-bytes/op")
}

// BenchmarkDumpCost compares the service's request latency and step
// latency without dumps and with 1 and 10 dumps a second (one short round
// each; go run ./bench/taskdump takes more rounds for the docs).
func BenchmarkDumpCost(b *testing.B) {
	for range b.N {
		rep, err := run(options{variant: "release", rounds: 1, round: 5 * time.Second, rates: []float64{0, 1, 10}}, io.Discard)
		if err != nil {
			b.Skip(err)
		}
		for _, rate := range []float64{0, 1, 10} {
			m := rep.merged(rate)
			name := map[float64]string{0: "none", 1: "1/s", 10: "10/s"}[rate]
			b.ReportMetric(float64(pct(m.health, 99))/1e6, "health-p99-ms-"+name)
			if m.steps > 0 {
				b.ReportMetric(1000*m.stepLat/m.steps, "step-ms-"+name)
			}
		}
	}
}
