package taskdump

import (
	"context"
	"debug/elf"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/capture"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/internal/testsvc"
	"github.com/profcap/profcap/targets"
)

// fakeDump serves task dumps with faults: the one place a fake is right,
// because the faults (slow, garbage, gone) are what the real service does
// not do on demand. serve gets the request number (from 1) and writes the
// answer.
type fakeDump struct {
	srv   *http.Server
	l     net.Listener
	n     atomic.Int64
	mu    sync.Mutex
	times []time.Time // when each request arrived
}

func startFake(t testing.TB, serve func(n int64, w http.ResponseWriter, r *http.Request)) *fakeDump {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDump{l: l}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/tokio/dump", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.times = append(f.times, time.Now())
		f.mu.Unlock()
		serve(f.n.Add(1), w, r)
	})
	f.srv = &http.Server{Handler: mux}
	go f.srv.Serve(l)
	t.Cleanup(func() { f.srv.Close() })
	return f
}

func (f *fakeDump) url() string  { return "http://" + f.l.Addr().String() + "/debug/tokio/dump" }
func (f *fakeDump) base() string { return "http://" + f.l.Addr().String() + "/debug/pprof" }

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func collectOne(t testing.TB, c *Collector, tg *targets.Target, window time.Duration) collectors.Result {
	t.Helper()
	w := collectors.NewWindow(window, window)
	var got []collectors.Result
	c.Collect(context.Background(), w, tg, []bundle.Kind{bundle.Await}, func(r collectors.Result) { got = append(got, r) })
	if len(got) != 1 {
		t.Fatalf("%d results", len(got))
	}
	return got[0]
}

func sum(p *profile.Profile, keep func(*profile.Sample) bool) int64 {
	var n int64
	for _, s := range p.Sample {
		if keep == nil || keep(s) {
			n += s.Value[0]
		}
	}
	return n
}

func TestCollectWeights(t *testing.T) {
	dump := readTestdata(t, "refsvc-0.1.0-profiling-worker.txt")
	f := startFake(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("timeout_ms") != "1000" {
			http.Error(w, "no timeout_ms", 400)
			return
		}
		w.Write(dump)
	})
	c := New(Options{Interval: 200 * time.Millisecond, Timeout: time.Second})
	const window = 2 * time.Second
	r := collectOne(t, c, &targets.Target{Name: "svc", TokioTaskdump: f.url()}, window)
	if r.Status != bundle.StatusOK || r.Profile == nil {
		t.Fatalf("%s: %v", r.Status, r.Err)
	}
	p := r.Profile
	if err := p.CheckValid(); err != nil {
		t.Fatal(err)
	}
	if len(p.SampleType) != 1 || p.SampleType[0].Type != "task-time" || p.SampleType[0].Unit != "nanoseconds" ||
		p.PeriodType == nil || p.PeriodType.Type != "task-time" || p.Period != int64(200*time.Millisecond) || p.DefaultSampleType != "task-time" {
		t.Fatalf("types: %v period %v %d", p.SampleType, p.PeriodType, p.Period)
	}
	// Every dump holds the same 16 tasks, so the profile holds 16 tasks
	// for the time the dumps stand for: from the window's start (the first
	// dump is at once) to its end.
	cover := r.End.Sub(r.Start)
	if cover < window*95/100 || cover > window+50*time.Millisecond {
		t.Errorf("dumps stand for %v of a %v window", cover, window)
	}
	if got, want := sum(p, nil), 16*int64(cover); got != want {
		t.Errorf("total %d task-ns, want 16 × %v = %d", got, cover, want)
	}
	// One task's time is the time covered, whatever its traces.
	for _, id := range []string{"8", "16", "21245"} {
		if got := sum(p, func(s *profile.Sample) bool { return s.Label[LabelID][0] == id }); got != int64(cover) {
			t.Errorf("task %s: %d ns, want %d", id, got, cover)
		}
	}
	db := sum(p, func(s *profile.Sample) bool {
		return s.Label[LabelName] != nil && s.Label[LabelName][0] == "truth-db-waiter" && s.Label[LabelOn][0] == "sleep" && s.Label[LabelAt][0] == "refsvc::db::db_query::{{closure}}"
	})
	if db != int64(cover) {
		t.Errorf("truth-db-waiter in db_query: %d, want %d", db, cover)
	}
	// One per 150–250 ms (the interval ± a quarter, at random).
	if n := len(f.times); n < 8 || n > 14 {
		t.Errorf("%d dumps in 2 s at one per 200 ms", n)
	}
	if !strings.Contains(r.Note, "task dumps, one per 200ms") {
		t.Errorf("note: %s", r.Note)
	}
}

// A dump that takes long makes the next wait: at most MaxDuty of the time
// is spent dumping.
func TestCollectDutyCap(t *testing.T) {
	dump := readTestdata(t, "refsvc-0.1.0-profiling-worker.txt")
	f := startFake(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		time.Sleep(150 * time.Millisecond)
		w.Write(dump)
	})
	c := New(Options{Interval: 100 * time.Millisecond, Timeout: time.Second})
	r := collectOne(t, c, &targets.Target{Name: "svc", TokioTaskdump: f.url()}, 3*time.Second)
	if r.Status != bundle.StatusOK {
		t.Fatalf("%s: %v", r.Status, r.Err)
	}
	// 150 ms dumps at a 10% duty: the first two 100 ms apart (the first
	// dump may be slow for a reason of its own), then one every 1.5 s:
	// 3 in 3 s.
	if n := len(f.times); n != 3 {
		t.Errorf("%d dumps, want 3", n)
	}
	if !strings.Contains(r.Note, "gaps lengthened") {
		t.Errorf("note: %s", r.Note)
	}
}

// The symbolizer names "?? at 0xADDR" frames of a live local process
// from its memory map: a native program's function by its address, and the
// same in a stripped copy from a debug file found by build id.
func TestProcSymbolizer(t *testing.T) {
	testreq.Command(t, "gcc")
	strip := testreq.Command(t, "strip")
	bin := testsvc.BuildNative(t, false)
	stripped := bin + "-stripped"
	if out, err := exec.Command(strip, "-o", stripped, bin).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	id := buildID(f)
	syms, _ := f.Symbols()
	var burn uint64
	for _, s := range syms {
		if s.Name == "burn_cpu" {
			burn = s.Value
		}
	}
	f.Close()
	if burn == 0 || id == "" {
		t.Fatalf("burn_cpu at %#x, build id %q", burn, id)
	}
	debug := t.TempDir()
	if err := os.MkdirAll(filepath.Join(debug, ".build-id", id[:2]), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(debug, ".build-id", id[:2], id[2:]+".debug")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		exe  string
		dirs []string
		want string
	}{{bin, nil, "burn_cpu"}, {stripped, []string{debug}, "burn_cpu"}, {stripped, nil, ""}} {
		cmd := exec.Command(c.exe, "10")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		s, err := newProcSymbolizer(cmd.Process.Pid, c.dirs)
		if err != nil {
			t.Fatal(err)
		}
		// The runtime address of burn_cpu+4: its file offset in the
		// executable mapping's segment.
		var addr uint64
		ef := s.file(c.exe)
		for _, m := range s.maps {
			if m.path != c.exe {
				continue
			}
			for _, p := range ef.progs {
				off := burn - p.Vaddr + p.Off
				if burn >= p.Vaddr && burn < p.Vaddr+p.Filesz && off >= m.off && off < m.off+(m.end-m.start) {
					addr = m.start + off - m.off + 4
				}
			}
		}
		sym, ok := s.Symbolize(addr)
		cmd.Process.Kill()
		cmd.Wait()
		if addr == 0 || sym.Func != c.want || ok != (c.want != "") || sym.Mapping == nil || sym.Mapping.BuildID != id || sym.Mapping.File != c.exe {
			t.Errorf("%s (debug dirs %v): Symbolize(%#x) = %+v (%+v), %v; want %q", filepath.Base(c.exe), c.dirs, addr, sym, sym.Mapping, ok, c.want)
		}
	}
}

func TestDumpURL(t *testing.T) {
	for _, c := range []struct {
		t    targets.Target
		want string
		disc bool
	}{
		{targets.Target{TokioTaskdump: "http://h:1/x"}, "http://h:1/x", false},
		{targets.Target{Pprof: "http://u:p@h:8080/debug/pprof"}, "http://u:p@h:8080/debug/tokio/dump", true},
		{targets.Target{Pprof: "https://h/svc/debug/pprof/"}, "https://h/svc/debug/tokio/dump", true},
		{targets.Target{Pprof: "http://h:8080/pprof"}, "", false},
		{targets.Target{PID: 3}, "", false},
	} {
		got, disc := DumpURL(&c.t)
		if got != c.want || disc != c.disc {
			t.Errorf("DumpURL(%+v) = %q, %v; want %q, %v", c.t, got, disc, c.want, c.disc)
		}
	}
	c := New(Options{})
	if k := c.Kinds(&targets.Target{Pprof: "http://h/debug/pprof"}); len(k) != 1 || k[0] != bundle.Await {
		t.Errorf("kinds: %v", k)
	}
}

// Every fault of a dump endpoint costs only the await kind of that target:
// a healthy target in the same capture is captured in full, the faulty
// target's other kinds too, and the manifest says what happened.
func TestFaultsCostOnlyThatKind(t *testing.T) {
	dump := readTestdata(t, "refsvc-0.1.0-profiling-worker.txt")
	healthy := testsvc.Start(t, testsvc.Normal, false)
	good := startFake(t, func(n int64, w http.ResponseWriter, r *http.Request) { w.Write(dump) })
	// Every other dump takes longer than the 1 s budget.
	slow := startFake(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n%2 == 0 {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
				return
			}
		}
		w.Write(dump)
	})
	// Good at first, then garbage: binary, then an HTML error page.
	garbage := startFake(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		switch {
		case n <= 3:
			w.Write(dump)
		case n%2 == 0:
			w.Write([]byte("\x1f\x8b\x08\x00garbage\xff\xfe"))
		default:
			w.Write([]byte("<html><body>502 bad gateway</body></html>\n"))
		}
	})
	// Disappears mid-window: the listener closes after 1.5 s.
	vanish := startFake(t, func(n int64, w http.ResponseWriter, r *http.Request) { w.Write(dump) })
	time.AfterFunc(1500*time.Millisecond, func() { vanish.srv.Close() })
	// Accepts and never answers.
	hang := startFake(t, func(n int64, w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	// A dump far larger than the 64 KiB limit: the tasks before the cut stay.
	var big strings.Builder
	big.WriteString("# tokio task dump service=big pid=1 unix_ns=1 tasks=10000\n")
	for i := range 10000 {
		fmt.Fprintf(&big, "task id=%d name=t%d\n  trace 0\n    tokio::time::sleep::Sleep::poll_elapsed at /x/tokio-1.54.1/src/time/sleep.rs:384:16\n    app::f at /a/src/f.rs:1:1\n\n", i+100, i)
	}
	huge := startFake(t, func(n int64, w http.ResponseWriter, r *http.Request) { w.Write([]byte(big.String())) })

	ts := []targets.Target{
		{Name: "healthy", Pprof: healthy.URL()}, // a Go service: /debug/tokio/dump is 404, so await is unsupported
		{Name: "good", TokioTaskdump: good.url()},
		{Name: "slow", Pprof: healthy.URL(), TokioTaskdump: slow.url()},
		{Name: "garbage", TokioTaskdump: garbage.url()},
		{Name: "vanish", Pprof: vanish.base()}, // discovered beside pprof
		{Name: "hang", TokioTaskdump: hang.url()},
		{Name: "huge", TokioTaskdump: huge.url()},
	}
	const window = 4 * time.Second
	dir := filepath.Join(t.TempDir(), "bundle")
	var mu sync.Mutex
	arrived := map[string]time.Duration{}
	start := time.Now()
	_, err := capture.Run(context.Background(), capture.Options{
		Targets: ts, Duration: window, Slice: time.Second, Out: dir,
		Kinds: []bundle.Kind{bundle.Heap, bundle.Goroutine, bundle.Await},
		Collectors: []collectors.Collector{
			collectors.NewPprof(collectors.PprofOptions{SnapshotTimeout: 3 * time.Second}),
			New(Options{Interval: 250 * time.Millisecond, Timeout: time.Second, MaxDumpSize: 64 << 10}),
		},
		Grace: 10 * time.Second,
		Events: func(e capture.Event) {
			if e.Type == capture.EventResult && e.Kind == bundle.Await {
				mu.Lock()
				arrived[e.Target] = time.Since(start)
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Each await result arrives by the window's end plus one dump's
	// budget (the dump in flight then), whatever the endpoint does.
	mu.Lock()
	for tn, d := range arrived {
		if d > window+time.Second+500*time.Millisecond {
			t.Errorf("%s: the await result came %v after the start of a %v window with a 1 s budget per dump", tn, d, window)
		}
	}
	mu.Unlock()
	m, err := bundle.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[bundle.Kind]string{ // status | error or note substring
		"healthy": {bundle.Heap: "ok|", bundle.Goroutine: "ok|", bundle.Await: "unsupported|not served by this target (HTTP 404)"},
		"good":    {bundle.Await: "ok|task dumps, one per 250ms"},
		// Each slow dump makes the next wait twice its time: fewer dumps.
		"slow":    {bundle.Heap: "ok|", bundle.Goroutine: "ok|", bundle.Await: "partial|2 timeout"},
		"garbage": {bundle.Await: "partial|not a tokio task dump: line 1: "},
		"vanish":  {bundle.Await: "partial|connection refused"},
		"hang":    {bundle.Await: "failed|no answer within the 1s budget"},
		"huge":    {bundle.Await: "ok|cut at the 64.0 KiB size limit"},
	}
	for tn, kinds := range want {
		for k, w := range kinds {
			st, msg, _ := strings.Cut(w, "|")
			p := m.Target(tn).Profile(k)
			if p == nil {
				t.Errorf("%s %s: missing", tn, k)
				continue
			}
			if string(p.Status) != st || !strings.Contains(p.Error+" "+p.Note, msg) {
				t.Errorf("%s %s: status %q error %q note %q; want %q with %q", tn, k, p.Status, p.Error, p.Note, st, msg)
			}
		}
	}
	// The slow endpoint is never asked twice at once, at most once per
	// interval less a quarter (the jitter), and after a dump that timed
	// out (every second one) not before twice the 1 s budget.
	slow.mu.Lock()
	for i := 1; i < len(slow.times); i++ {
		d := slow.times[i].Sub(slow.times[i-1])
		if d < 180*time.Millisecond || (i%2 == 0 && d < 2*time.Second) {
			t.Errorf("slow: requests %d and %d %v apart", i, i+1, d)
		}
	}
	slow.mu.Unlock()
	if p := m.Target("huge").Profile(bundle.Await); p != nil && p.Path != "" {
		pr, err := bundle.LoadProfile(dir, p.Path)
		if err != nil {
			t.Fatal(err)
		}
		var tasks int
		for _, s := range pr.Sample {
			if s.Label[LabelID] != nil {
				tasks++
			}
		}
		if tasks < 100 || tasks >= 10000 {
			t.Errorf("huge: %d tasks kept from a dump cut at 64 KiB", tasks)
		}
	}
}

func TestMain(m *testing.M) {
	testsvc.Main() // serve instead of testing when run as a test service
	os.Exit(m.Run())
}

// Ctrl-C ends the window and drops the dump in flight at once; the dumps
// taken so far are kept.
func TestCollectInterrupted(t *testing.T) {
	dump := readTestdata(t, "refsvc-0.1.0-profiling-worker.txt")
	f := startFake(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n >= 3 {
			<-r.Context().Done() // hangs from the third dump on
			return
		}
		w.Write(dump)
	})
	c := New(Options{Interval: 100 * time.Millisecond, Timeout: 10 * time.Second})
	w := collectors.NewWindow(time.Minute, time.Minute)
	time.AfterFunc(time.Second, func() { w.End(collectors.ReasonInterrupted) })
	var got []collectors.Result
	start := time.Now()
	c.Collect(context.Background(), w, &targets.Target{Name: "svc", TokioTaskdump: f.url()}, []bundle.Kind{bundle.Await}, func(r collectors.Result) { got = append(got, r) })
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("Collect returned %v after the start, %v after Ctrl-C", d, d-time.Second)
	}
	if len(got) != 1 || got[0].Profile == nil {
		t.Fatalf("results: %+v", got)
	}
	if n := len(got[0].Profile.Sample); n == 0 || !strings.Contains(got[0].Note, "2 task dumps") {
		t.Errorf("%d samples; note %s", n, got[0].Note)
	}
	// The two dumps stand for their own time and one interval after, not
	// for the time the third was hanging.
	if d := got[0].End.Sub(got[0].Start); d > 500*time.Millisecond {
		t.Errorf("two dumps 100 ms apart stand for %v", d)
	}
}
