package firefox

import (
	"bufio"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func bufioWriter(w io.Writer) *bufio.Writer { return bufio.NewWriterSize(w, 256<<10) }

// BenchmarkParseLarge parses a generated profile of repeated stacks streamed
// through a pipe (never held in memory), 1 GB by default
// (PROFCAP_BENCH_MB overrides), and reports MB/s and the peak heap seen by
// a sampler every 10 ms.
func BenchmarkParseLarge(b *testing.B) {
	mb := 1024
	if s := os.Getenv("PROFCAP_BENCH_MB"); s != "" {
		mb, _ = strconv.Atoi(s)
	}
	// One thread with n samples is about 12 bytes a sample (stack, time,
	// CPU delta); 64 threads.
	const threads = 64
	n := mb << 20 / threads / 12
	for b.Loop() {
		var peak atomic.Uint64
		stop := make(chan struct{})
		done := make(chan struct{})
		runtime.GC()
		go func() {
			defer close(done)
			var ms runtime.MemStats
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > peak.Load() {
					peak.Store(ms.HeapAlloc)
				}
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		cr := &countingReader{r: genProfile(threads, n)}
		start := time.Now()
		p, err := Parse(cr, Options{})
		el := time.Since(start)
		close(stop)
		<-done
		if err != nil {
			b.Fatal(err)
		}
		if len(p.Sample) != 4*threads {
			b.Fatalf("%d samples", len(p.Sample))
		}
		b.ReportMetric(float64(cr.n)/1e6/el.Seconds(), "MB/s")
		b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(cr.n)/(1<<20), "input-MiB")
	}
}
