package capture

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/internal/testsvc"
	"github.com/profcap/profcap/targets"
)

// 32 real services (separate processes, loopback) × 4 kinds in one window:
// everything is captured and the capture ends within the window plus 2 s.
func TestScale32Targets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 32 processes")
	}
	const n = 32
	ts := make([]targets.Target, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := testsvc.Start(t, testsvc.Idle, false)
			ts[i] = targets.Target{Name: fmt.Sprintf("worker-%02d", i+1), Pprof: s.URL()}
		}(i)
	}
	wg.Wait()
	const window = 3 * time.Second
	dir := filepath.Join(t.TempDir(), "bundle")
	start := time.Now()
	out, err := Run(context.Background(), Options{
		Targets: ts, Duration: window, Slice: 2 * time.Second, Out: dir,
		Kinds:      []bundle.Kind{bundle.CPU, bundle.Heap, bundle.Goroutine, bundle.Allocs},
		Collectors: []collectors.Collector{collectors.NewPprof(collectors.PprofOptions{})},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The window itself (not the merge and report after it) ends in time.
	m := out.Manifest
	end, _ := time.Parse(bundle.TimeFormat, m.Window.End)
	if overrun := end.Sub(start) - window; overrun > 2*time.Second {
		t.Errorf("window overran its deadline by %v", overrun)
	}
	if out.Captured != n*4 || out.Failed != 0 || m.Status != "ok" {
		t.Errorf("captured %d of %d, failed %d, status %s", out.Captured, n*4, out.Failed, m.Status)
	}
	for _, mg := range m.Merged {
		if len(mg.Targets) != n {
			t.Errorf("merged %s has %d targets", mg.Kind, len(mg.Targets))
		}
	}
	t.Logf("32×4 capture: window %v past start, skew %.3fs", end.Sub(start), m.Skew)
}

// fakeServer serves canned pprof bodies the way net/http/pprof does,
// including sleeping for the duration of a cpu profile.
func fakeServer(cpu, heap []byte) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/debug/pprof/":
			w.Write([]byte("<a href='profile?debug=1'>profile</a>"))
		case "/debug/pprof/profile":
			sec, _ := strconv.Atoi(r.URL.Query().Get("seconds"))
			select {
			case <-time.After(time.Duration(sec) * time.Second):
			case <-r.Context().Done():
				return
			}
			w.Write(cpu)
		default:
			w.Write(heap)
		}
	})
	return mux
}

func cannedProfiles(b *testing.B) (cpu, heap []byte) {
	var buf bytes.Buffer
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(&buf, 0); err != nil {
		b.Fatal(err)
	}
	heap = append([]byte(nil), buf.Bytes()...)
	// A cpu profile of this process's goroutine stacks: realistic frames,
	// built without the CPU profiler so the benchmark can be profiled.
	buf.Reset()
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 0); err != nil {
		b.Fatal(err)
	}
	p, err := profile.Parse(&buf)
	if err != nil {
		b.Fatal(err)
	}
	p.SampleType = []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}}
	p.PeriodType, p.Period = &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}, 10000000
	for i, s := range p.Sample {
		s.Value = []int64{int64(i + 1), int64(i+1) * 10000000}
	}
	buf.Reset()
	if err := p.Write(&buf); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes(), heap
}

// BenchmarkCaptureTargets measures profcap's own cost at 8, 32 and 128
// targets (in-process loopback servers serving real Go profiles): how far
// the window overruns its deadline, and the peak heap of the process.
func BenchmarkCaptureTargets(b *testing.B) {
	cpu, heap := cannedProfiles(b)
	for _, n := range []int{8, 32, 128} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			ts := make([]targets.Target, n)
			for i := range ts {
				srv := httptest.NewServer(fakeServer(cpu, heap))
				b.Cleanup(srv.Close)
				ts[i] = targets.Target{Name: fmt.Sprintf("t%03d", i), Pprof: srv.URL + "/debug/pprof"}
			}
			var peak atomic.Uint64
			stop := make(chan struct{})
			go func() {
				var ms runtime.MemStats
				for {
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}()
			var overrun time.Duration
			for i := 0; i < b.N; i++ {
				const window = 2 * time.Second
				start := time.Now()
				out, err := Run(context.Background(), Options{
					Targets: ts, Duration: window, Slice: 2 * time.Second, Out: filepath.Join(b.TempDir(), "bundle"),
					Kinds:      []bundle.Kind{bundle.CPU, bundle.Heap, bundle.Goroutine, bundle.Allocs},
					Collectors: []collectors.Collector{collectors.NewPprof(collectors.PprofOptions{})},
				})
				if err != nil || out.Failed != 0 {
					b.Fatalf("%v, %d failed", err, out.Failed)
				}
				end, _ := time.Parse(bundle.TimeFormat, out.Manifest.Window.End)
				overrun += end.Sub(start) - window
			}
			close(stop)
			b.ReportMetric(float64(overrun.Milliseconds())/float64(b.N), "overrun-ms")
			b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
		})
	}
}

// BenchmarkMergeTargets merges one kind across N targets' bundle files,
// each a profile of 2,000 distinct stacks (half of them shared by every
// target): the merge's cost per target must stay flat as N grows.
func BenchmarkMergeTargets(b *testing.B) {
	for _, n := range []int{32, 64, 128} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			dir := filepath.Join(b.TempDir(), "bundle")
			m := bundle.NewManifest("bench", time.Now(), time.Second, "bench")
			for i := range n {
				bt := m.AddTarget(fmt.Sprintf("svc-%d", i), nil, 0)
				bt.Plan(bundle.CPU, "fake")
			}
			w, err := bundle.Create(dir, m)
			if err != nil {
				b.Fatal(err)
			}
			w.StartWindow(time.Now())
			for i := range n {
				p := cannedProfile("shared", 0, 0)
				for j := range 2000 {
					name := fmt.Sprintf("svc%d.fn%d", i, j)
					if j%2 == 0 {
						name = fmt.Sprintf("common.fn%d", j)
					}
					f := &profile.Function{ID: uint64(j + 2), Name: name}
					l := &profile.Location{ID: uint64(j + 2), Line: []profile.Line{{Function: f}}}
					p.Function, p.Location = append(p.Function, f), append(p.Location, l)
					p.Sample = append(p.Sample, &profile.Sample{Location: []*profile.Location{l, p.Location[0]}, Value: []int64{1}})
				}
				name := fmt.Sprintf("svc-%d", i)
				w.Record(bundle.ProfilePath(name, bundle.CPU), bundle.Result{Target: name, Kind: bundle.CPU, Collector: "fake", Status: bundle.StatusOK, Profile: p})
			}
			if _, err := w.Finish(bundle.Ending{End: time.Now()}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				mergeAll(context.Background(), w, func(Event) {}, nil)
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N)/float64(n), "ms/target")
		})
	}
}
