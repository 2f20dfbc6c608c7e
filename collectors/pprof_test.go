package collectors

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/testsvc"
	"github.com/profcap/profcap/targets"
)

// collect runs c over a fresh window and returns the results by kind.
func collect(t *testing.T, c Collector, tg *targets.Target, d time.Duration, kinds []bundle.Kind) map[bundle.Kind]Result {
	t.Helper()
	w := NewWindow(d, 2*time.Second)
	var mu sync.Mutex
	got := map[bundle.Kind]Result{}
	c.Collect(context.Background(), w, tg, kinds, func(r Result) {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := got[r.Kind]; dup {
			t.Errorf("two results for %s", r.Kind)
		}
		got[r.Kind] = r
	})
	for _, k := range kinds {
		if _, ok := got[k]; !ok {
			t.Errorf("no result for %s", k)
		}
	}
	return got
}

func topFunction(p *profile.Profile, idx int) string {
	self := map[string]int64{}
	for _, s := range p.Sample {
		if len(s.Location) > 0 && len(s.Location[0].Line) > 0 {
			self[s.Location[0].Line[0].Function.Name] += s.Value[idx]
		}
	}
	best, bv := "", int64(-1)
	for f, v := range self {
		if v > bv {
			best, bv = f, v
		}
	}
	return best
}

func hasFunction(p *profile.Profile, substr string) bool {
	for _, f := range p.Function {
		if strings.Contains(f.Name, substr) {
			return true
		}
	}
	return false
}

func TestPprofCollectsEveryKind(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testsvc.Work(ctx)
	srv := httptest.NewServer(testsvc.Handler(testsvc.Normal, true))
	defer srv.Close()
	tg := &targets.Target{Name: "svc", Pprof: srv.URL + "/debug/pprof"}

	c := NewPprof(PprofOptions{})
	kinds := c.Kinds(tg)
	got := collect(t, c, tg, 3*time.Second, kinds)
	for _, k := range kinds {
		r := got[k]
		if r.Status != bundle.StatusOK || r.Profile == nil {
			t.Fatalf("%s: status %s, err %v", k, r.Status, r.Err)
		}
		if err := r.Profile.CheckValid(); err != nil {
			t.Errorf("%s: invalid profile: %v", k, err)
		}
		if r.End.Before(r.Start) {
			t.Errorf("%s: end %v before start %v", k, r.End, r.Start)
		}
	}
	cpu := got[bundle.CPU].Profile
	if top := topFunction(cpu, 1); !strings.Contains(top, "hotLoopForProfcapTests") {
		t.Errorf("cpu: top function %q, want the service's hot loop", top)
	}
	if !hasFunction(cpu, "hotLoopForProfcapTests") {
		t.Errorf("cpu profile lacks hotLoopForProfcapTests")
	}
	// Two slices (2s + 1s) merged into one profile covering the window.
	if d := time.Duration(cpu.DurationNanos); d < 2500*time.Millisecond || d > 4*time.Second {
		t.Errorf("cpu profile covers %v, want about 3s", d)
	}
	if !hasFunction(got[bundle.Allocs].Profile, "allocateForProfcapTests") {
		t.Errorf("allocs delta lacks allocateForProfcapTests")
	}
	if len(got[bundle.Mutex].Profile.Sample) == 0 {
		t.Errorf("mutex delta has no samples; the service contends all the time")
	}
	if len(got[bundle.Goroutine].Profile.Sample) == 0 {
		t.Errorf("goroutine profile is empty")
	}
	if !hasFunction(got[bundle.Wall].Profile, "hotLoopForProfcapTests") {
		t.Errorf("fgprof wall profile lacks the hot loop")
	}
}

func TestPprofMissingEndpointsAreUnsupported(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debug/pprof/" {
			http.NotFound(w, r)
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tg := &targets.Target{Name: "svc", Pprof: srv.URL + "/debug/pprof"}
	got := collect(t, NewPprof(PprofOptions{}), tg, time.Second, []bundle.Kind{bundle.Wall, bundle.Mutex, bundle.Heap})
	for k, r := range got {
		if r.Status != bundle.StatusUnsupported {
			t.Errorf("%s: status %s (%v), want unsupported", k, r.Status, r.Err)
		}
	}
}

func TestPprofTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	tg := &targets.Target{Name: "down", Pprof: "http://" + addr + "/debug/pprof"}
	start := time.Now()
	got := collect(t, NewPprof(PprofOptions{}), tg, 30*time.Second, []bundle.Kind{bundle.CPU, bundle.Heap})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a target that is down took %v to fail", d)
	}
	for k, r := range got {
		if r.Status != bundle.StatusFailed || r.Err == nil || !strings.Contains(r.Err.Error(), "connection refused") {
			t.Errorf("%s: status %s, err %v; want failed with connection refused", k, r.Status, r.Err)
		}
	}
}

func TestPprofGarbageOversizedAndHanging(t *testing.T) {
	garbage := httptest.NewServer(testsvc.Handler(testsvc.Garbage, false))
	defer garbage.Close()
	huge := httptest.NewServer(testsvc.Handler(testsvc.Huge, false))
	defer huge.Close()
	hang := httptest.NewServer(testsvc.Handler(testsvc.Hang, false))
	defer hang.Close()

	c := NewPprof(PprofOptions{MaxProfileSize: 1 << 20})
	cases := []struct {
		url, want string
	}{
		{garbage.URL, "not a pprof profile"},
		{huge.URL, "larger than the 1 MiB limit"},
		{hang.URL, "no response"},
	}
	for _, tc := range cases {
		tg := &targets.Target{Name: "bad", Pprof: tc.url + "/debug/pprof"}
		got := collect(t, c, tg, time.Second, []bundle.Kind{bundle.Heap})
		r := got[bundle.Heap]
		if r.Status != bundle.StatusFailed || r.Err == nil || !strings.Contains(r.Err.Error(), tc.want) {
			t.Errorf("%s: status %s, err %v; want failed with %q", tc.url, r.Status, r.Err, tc.want)
		}
	}
}

func TestPprofWindowEndedEarlyKeepsFinishedSlices(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testsvc.Work(ctx)
	srv := httptest.NewServer(testsvc.Handler(testsvc.Normal, false))
	defer srv.Close()
	tg := &targets.Target{Name: "svc", Pprof: srv.URL + "/debug/pprof"}
	c := NewPprof(PprofOptions{})
	w := NewWindow(60*time.Second, time.Second)
	time.AfterFunc(2500*time.Millisecond, func() { w.End("interrupted") })
	var got []Result
	var mu sync.Mutex
	start := time.Now()
	c.Collect(context.Background(), w, tg, []bundle.Kind{bundle.CPU, bundle.Allocs}, func(r Result) { mu.Lock(); got = append(got, r); mu.Unlock() })
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("collect returned %v after start; the window ended at 2.5s", d)
	}
	if len(got) != 2 || got[0].Kind == got[1].Kind {
		t.Fatalf("results %+v, want one for cpu and one for allocs", got)
	}
	for _, r := range got {
		if r.Status != bundle.StatusOK {
			t.Errorf("%s: %s %v", r.Kind, r.Status, r.Err)
		}
		if r.Kind == bundle.CPU {
			if d := time.Duration(r.Profile.DurationNanos); d < 1500*time.Millisecond || d > 2500*time.Millisecond {
				t.Errorf("cpu kept %v of slices, want the two finished 1s slices", d)
			}
		}
	}
}

// Sliced cpu profiles say when in the window each slice was taken, for the
// report's timeline.
func TestPprofSlicesCarryWindowSeconds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testsvc.Work(ctx)
	srv := httptest.NewServer(testsvc.Handler(testsvc.Normal, false))
	defer srv.Close()
	tg := &targets.Target{Name: "svc", Pprof: srv.URL + "/debug/pprof"}
	w := NewWindow(3*time.Second, time.Second)
	var got Result
	NewPprof(PprofOptions{}).Collect(context.Background(), w, tg, []bundle.Kind{bundle.CPU}, func(r Result) { got = r })
	if got.Status != bundle.StatusOK || got.Profile == nil {
		t.Fatalf("%+v", got)
	}
	seconds := map[int64]bool{}
	for _, s := range got.Profile.Sample {
		v := s.NumLabel[bundle.SecondLabel]
		if len(v) != 1 || len(s.NumLabel[bundle.SecondsLabel]) != 1 || s.NumUnit[bundle.SecondLabel][0] != bundle.SecondUnit {
			t.Fatalf("sample without its window second: %v %v", s.NumLabel, s.NumUnit)
		}
		seconds[v[0]] = true
	}
	if len(seconds) < 2 {
		t.Errorf("slices of a 3 s window fall in seconds %v, want at least two", seconds)
	}
}
