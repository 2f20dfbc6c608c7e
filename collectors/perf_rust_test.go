package collectors

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/rusttest"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/targets"
)

// The work functions of refsvc's /truth cpu_work, by the names perf gives
// them (every one is #[inline(never)]).
var refsvcWork = map[string]string{
	"hash_payload":      "refsvc::work::hash_payload",
	"render_template":   "refsvc::work::render_template",
	"compress_result":   "refsvc::work::compress_result",
	"merge_results":     "refsvc::work::merge_results",
	"blocking_checksum": "refsvc::work::blocking_checksum",
	"spin_cpu":          "refsvc::work::spin_cpu",
	"hog_worker_thread": "refsvc::work::hog_worker_thread",
	"compact_results":   "refsvc::work::compact_results",
}

// refsvcHz is the sampling rate of the tests against refsvc: a worker
// uses about a fifth of a core, so 99 Hz gives some 150 samples in 8 s, too
// few to rank work functions 30% apart; 499 Hz gives five times that.
const refsvcHz = 499

// stackHas reports whether a sample's stack has a function named name.
func stackHas(s *profile.Sample, name string) bool {
	for _, l := range s.Location {
		for _, ln := range l.Line {
			if ln.Function != nil && ln.Function.Name == name {
				return true
			}
		}
	}
	return false
}

// stackHasPrefix reports whether a sample's stack has a function whose
// name starts with prefix.
func stackHasPrefix(s *profile.Sample, prefix string) bool {
	for _, l := range s.Location {
		for _, ln := range l.Line {
			if ln.Function != nil && strings.HasPrefix(ln.Function.Name, prefix) {
				return true
			}
		}
	}
	return false
}

// byOutermostWork attributes each sample's value vi to the outermost
// refsvc work function on its stack, as /truth attributes thread CPU time
// (blocking_checksum calls hash_payload; the truth counts that time under
// blocking_checksum only). A function is known by its path
// (refsvc::work::spin_cpu) or, in perf script's DWARF stacks, by the short
// name perf 6.1 prints instead where the address has inline information
// ("spin_cpu (inlined)": the line tables' name for the function itself).
func byOutermostWork(p *profile.Profile, vi int) map[string]int64 {
	full := map[string]string{}
	for short, f := range refsvcWork {
		full[f] = short
		full[short] = short
	}
	out := map[string]int64{}
	for _, s := range p.Sample {
		for i := len(s.Location) - 1; i >= 0; i-- { // root first
			found := ""
			for _, ln := range s.Location[i].Line {
				if short, ok := full[ln.Function.Name]; ok {
					found = short
				}
			}
			if found != "" {
				out[found] += s.Value[vi]
				break
			}
		}
	}
	return out
}

// ranked returns the names of m by value, highest first.
func ranked(m map[string]int64) []string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return m[names[i]] > m[names[j]] || m[names[i]] == m[names[j]] && names[i] < names[j]
	})
	return names
}

// checkTopWork compares a profile's CPU per work function with /truth's
// over the window: its heaviest must be the truth's heaviest, or, where the
// truth's first two are within 20% of each other (a tie a few hundred
// samples cannot settle), one of them; with exact (perf, whose profile
// covers the window the truth was read at) every function's time too.
func checkTopWork(t *testing.T, p *profile.Profile, truth map[string]int64, exact bool) {
	t.Helper()
	got := byOutermostWork(p, 1)
	tr, pr := ranked(truth), ranked(got)
	var lines []string
	for _, n := range tr {
		lines = append(lines, fmt.Sprintf("%s truth %v perf %v", n, time.Duration(truth[n]).Round(time.Millisecond), time.Duration(got[n]).Round(time.Millisecond)))
	}
	t.Logf("cpu by work function over the window:\n  %s", strings.Join(lines, "\n  "))
	if len(pr) == 0 || got[pr[0]] == 0 {
		t.Fatalf("no samples in any work function")
	}
	ok := pr[0] == tr[0] || len(tr) > 1 && pr[0] == tr[1] && float64(truth[tr[1]]) >= 0.8*float64(truth[tr[0]])
	if !exact && !ok {
		// A sparse profile (pprof-rs: 100 Hz, some 35 samples per 350 ms,
		// a standard deviation of 17%): the heaviest by the profile did
		// at least 60% of /truth's heaviest's work, and /truth's
		// heaviest has at least 60% of the profile's heaviest's samples.
		// (Seen: truth spin_cpu 490 ms, hog_worker_thread 345 ms;
		// pprof-rs 343 ms each.)
		ok = float64(truth[pr[0]]) >= 0.6*float64(truth[tr[0]]) && float64(got[tr[0]]) >= 0.6*float64(got[pr[0]])
	}
	if !ok {
		t.Errorf("perf's heaviest work function is %s, /truth's is %s", pr[0], tr[0])
	}
	if !exact {
		return
	}
	// Every function with a tenth of the work or more, within 30% (a
	// tenth of ~1 s at 499 Hz is some 50 samples: 3 standard deviations).
	var sum int64
	for _, v := range truth {
		sum += v
	}
	for _, n := range tr {
		if 10*truth[n] < sum {
			continue
		}
		if r := float64(got[n]) / float64(truth[n]); r < 0.7 || r > 1.3 {
			t.Errorf("%s: perf %v, /truth %v: want within 30%%", n, time.Duration(got[n]), time.Duration(truth[n]))
		}
	}
}

// offcpuUnder sums the off-CPU time of stacks with every one of the
// functions: voluntary waits only (state not R), or with preempted too.
func offcpuUnder(p *profile.Profile, preempted bool, funcs ...string) int64 {
	var n int64
	for _, s := range p.Sample {
		if !preempted && s.Label["state"][0] == "R" {
			continue
		}
		all := true
		for _, f := range funcs {
			all = all && stackHas(s, f)
		}
		if all {
			n += s.Value[0]
		}
	}
	return n
}

// recordRefsvc records cpu and offcpu of svc over d with perf, and reads
// the service's truth when the window opens (perf is set up) and when it
// ends, so both cover the same time.
func recordRefsvc(t *testing.T, c *Perf, svc *rusttest.Service, d time.Duration) (cpu, off Result, before, after *rusttest.Truth) {
	t.Helper()
	tg := &targets.Target{Name: svc.Name, PID: svc.PID}
	w := NewPendingWindow(d, 0)
	ctx := WithReady(context.Background(), func() {
		before = svc.GetTruth(t)
		w.Open()
	})
	truthDone := make(chan struct{})
	go func() {
		defer close(truthDone)
		<-w.Done()
		if before != nil {
			after = svc.GetTruth(t)
		}
	}()
	res := map[bundle.Kind]Result{}
	var mu sync.Mutex
	c.Collect(ctx, w, tg, []bundle.Kind{bundle.CPU, bundle.OffCPU}, func(r Result) {
		mu.Lock()
		res[r.Kind] = r
		mu.Unlock()
	})
	<-truthDone
	cpu, off = res[bundle.CPU], res[bundle.OffCPU]
	for _, r := range []Result{cpu, off} {
		if r.Status != bundle.StatusOK || r.Profile == nil {
			t.Fatalf("%s: %s: %v", r.Kind, r.Status, r.Err)
		}
		if err := r.Profile.CheckValid(); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d samples over %v; note: %s; %s", r.Kind, len(r.Profile.Sample), r.End.Sub(r.Start).Round(time.Millisecond), r.Note, strings.Join(r.Profile.Comments, "; "))
	}
	if before == nil || after == nil {
		t.Fatal("the window never opened")
	}
	var total int64
	for _, s := range cpu.Profile.Sample {
		total += s.Value[1]
	}
	t.Logf("process CPU over the window %v (truth), in the cpu profile %v", time.Duration(after.Service.ProcessCPUNS-before.Service.ProcessCPUNS), time.Duration(total))
	return cpu, off, before, after
}

// TestPerfRefsvcProfiling records the profiling build (frame pointers) of
// the reference service: fp stacks reach from the tokio worker thread to
// the step functions, the heaviest work function is /truth's, and the
// off-CPU profile shows the std::sync::Mutex wait under merge_locked and
// the blocking pool's I/O wait under blocking_checksum, each close to what
// the service measured itself.
func TestPerfRefsvcProfiling(t *testing.T) {
	needPerf(t)
	svc := rusttest.Start(t, rusttest.Profiling, "worker")
	svc.WaitContended(t)
	c := NewPerf(PerfOptions{Frequency: refsvcHz})
	for _, a := range c.Probe(context.Background(), &targets.Target{Name: svc.Name, PID: svc.PID}) {
		if !a.Available || strings.Contains(a.Reason, "dwarf") {
			t.Errorf("probe %s: %v %q: want available, with frame pointers", a.Kind, a.Available, a.Reason)
		}
	}
	cpu, off, before, after := recordRefsvc(t, c, svc, 8*time.Second)
	if !strings.Contains(strings.Join(cpu.Profile.Comments, " "), "--call-graph fp") {
		t.Errorf("cpu recorded with %q, want --call-graph fp", cpu.Profile.Comments)
	}
	short, total := shortStackShare(cpu.Profile)
	t.Logf("cpu: %d of %d samples with a user stack of at most %d frames", short, total, shortStack)
	if float64(short) > 0.05*float64(total) {
		t.Errorf("%d of %d samples have short user stacks: frame pointers should give whole stacks", short, total)
	}
	if strings.Contains(cpu.Note, "frame pointers") {
		t.Errorf("cpu note %q: the profiling build has frame pointers", cpu.Note)
	}
	top, _ := perfTopSelf(cpu.Profile, 1, nil)
	if top != "worker_core::compute::checksum_block" && top != refsvcWork["hash_payload"] {
		t.Errorf("cpu: top self function %q, want checksum_block (hash_payload's)", top)
	}
	// hash_payload's samples reach from the tokio worker thread (or the
	// blocking pool, under blocking_checksum) down to checksum_block.
	var hash, whole int64
	for _, s := range cpu.Profile.Sample {
		if !stackHas(s, refsvcWork["hash_payload"]) {
			continue
		}
		hash += s.Value[0]
		if stackHas(s, "start_thread") && (stackHasPrefix(s, "tokio::runtime::scheduler::multi_thread::worker::") || stackHasPrefix(s, "tokio::runtime::blocking::pool::")) {
			whole += s.Value[0]
		}
	}
	if hash == 0 || float64(whole) < 0.9*float64(hash) {
		t.Errorf("%d of %d hash_payload samples reach start_thread through tokio's worker or blocking pool", whole, hash)
	}
	checkTopWork(t, cpu.Profile, rusttest.CPUDelta(before, after), true)
	checkOffCPU(t, off.Profile, before, after)
}

// checkOffCPU compares the off-CPU profile's two thread waits with the
// service's own measurements over the window.
func checkOffCPU(t *testing.T, off *profile.Profile, before, after *rusttest.Truth) {
	t.Helper()
	// The step tasks' std::sync::Mutex wait: the futex under merge_locked.
	mutex := offcpuUnder(off, false, "refsvc::work::merge_locked")
	truthMutex := after.StdMutex.WaitNS - before.StdMutex.WaitNS
	// blocking_checksum's wait_for_io: std::thread::sleep of 3 ms a call;
	// its wall time less its CPU time is that sleep plus the time the
	// thread waited for a CPU (state R, preempted).
	sleep := offcpuUnder(off, false, "refsvc::work::blocking_checksum", "worker_core::io::wait_for_io")
	waited := offcpuUnder(off, true, "refsvc::work::blocking_checksum")
	bc, bc0 := after.CPUWork["blocking_checksum"], before.CPUWork["blocking_checksum"]
	calls := bc.Calls - bc0.Calls
	truthOff := (bc.WallNS - bc0.WallNS) - (bc.CPUNS - bc0.CPUNS)
	t.Logf("offcpu: std mutex wait under merge_locked %v (truth %v over %d locks); under blocking_checksum: asleep in wait_for_io %v, off CPU in all %v (truth wall - cpu %v over %d calls of 3 ms sleep)",
		time.Duration(mutex), time.Duration(truthMutex), after.StdMutex.Locks-before.StdMutex.Locks, time.Duration(sleep), time.Duration(waited), time.Duration(truthOff), calls)
	if truthMutex <= 0 || math.Abs(float64(mutex)/float64(truthMutex)-1) > 0.25 {
		t.Errorf("off-CPU under merge_locked %v, want the service's std mutex wait %v within 25%%", time.Duration(mutex), time.Duration(truthMutex))
	}
	if minSleep := calls * 3 * int64(time.Millisecond); sleep < minSleep*9/10 {
		t.Errorf("asleep in wait_for_io %v, want at least the %d calls' 3 ms (%v)", time.Duration(sleep), calls, time.Duration(minSleep))
	}
	if truthOff <= 0 || math.Abs(float64(waited)/float64(truthOff)-1) > 0.2 {
		t.Errorf("off-CPU under blocking_checksum %v, want the service's wall - cpu %v within 20%%", time.Duration(waited), time.Duration(truthOff))
	}
	// The database wait is a tokio timer (or a socket, with --pg) awaited
	// by a task: no thread blocks in db_query, so perf cannot show it
	// there (the async kind and task dumps do).
	if n := offcpuUnder(off, true, "refsvc::db::db_query::{{closure}}"); n != 0 {
		t.Logf("db_query under an off-CPU stack: %v", time.Duration(n))
	}
}

// TestPerfRefsvcRelease records the release build (symbols, no frame
// pointers) with the default --call-graph auto: profcap sees that the
// executable sets up no frame pointers, unwinds with DWARF and says so and
// what it cost, and the answers are the profiling build's. With
// --call-graph fp forced, the note measures the cut stacks and names the
// flag.
func TestPerfRefsvcRelease(t *testing.T) {
	needPerf(t)
	svc := rusttest.Start(t, rusttest.Release, "worker")
	tg := &targets.Target{Name: svc.Name, PID: svc.PID}
	svc.WaitContended(t)

	fp := NewPerf(PerfOptions{CallGraph: "fp", Frequency: refsvcHz})
	for _, a := range fp.Probe(context.Background(), tg) {
		if !strings.Contains(a.Reason, "no frame pointers") || !strings.Contains(a.Reason, "--call-graph dwarf") {
			t.Errorf("probe %s with fp: %q, want the missing frame pointers and the flag", a.Kind, a.Reason)
		}
	}
	res := perfCollect(t, fp, NewWindow(4*time.Second, 0), tg, bundle.CPU)[bundle.CPU]
	if res.Status != bundle.StatusOK {
		t.Fatalf("cpu with fp: %s %v", res.Status, res.Err)
	}
	short, total := shortStackShare(res.Profile)
	t.Logf("fp: %d of %d samples with at most %d user frames; note %q", short, total, shortStack, res.Note)
	if float64(short) < 0.5*float64(total) {
		t.Errorf("fp on the release build: only %d of %d samples have short stacks", short, total)
	}
	if !strings.Contains(res.Note, "measured: ") || !strings.Contains(res.Note, "had a user stack of at most 2 frames") || !strings.Contains(res.Note, "--call-graph dwarf") {
		t.Errorf("fp note %q: want the measured share and the flag", res.Note)
	}

	auto := NewPerf(PerfOptions{Frequency: refsvcHz})
	for _, a := range auto.Probe(context.Background(), tg) {
		if !a.Available || !strings.Contains(a.Reason, "unwinding with --call-graph dwarf") {
			t.Errorf("probe %s: %q, want dwarf announced", a.Kind, a.Reason)
		}
	}
	cpu, off, before, after := recordRefsvc(t, auto, svc, 8*time.Second)
	if !strings.Contains(strings.Join(cpu.Profile.Comments, " "), "--call-graph dwarf") {
		t.Errorf("cpu recorded with %q, want --call-graph dwarf", cpu.Profile.Comments)
	}
	for _, r := range []Result{cpu, off} {
		if !strings.Contains(r.Note, "unwinding with --call-graph dwarf") || !strings.Contains(r.Note, "DWARF unwinding cost perf.data") {
			t.Errorf("%s note %q: want why DWARF and what it cost", r.Kind, r.Note)
		}
	}
	short, total = shortStackShare(cpu.Profile)
	if float64(short) > 0.1*float64(total) {
		t.Errorf("dwarf: %d of %d samples still have short stacks", short, total)
	}
	var hash, whole int64
	for _, s := range cpu.Profile.Sample {
		if stackHas(s, refsvcWork["hash_payload"]) {
			hash += s.Value[0]
			if stackHasPrefix(s, "tokio::runtime::scheduler::multi_thread::worker::") || stackHasPrefix(s, "tokio::runtime::blocking::pool::") {
				whole += s.Value[0]
			}
		}
	}
	if hash == 0 || float64(whole) < 0.8*float64(hash) {
		t.Errorf("dwarf: %d of %d hash_payload samples reach tokio's worker or blocking pool", whole, hash)
	}
	checkTopWork(t, cpu.Profile, rusttest.CPUDelta(before, after), true)
	checkOffCPU(t, off.Profile, before, after)
}

// TestPerfRefsvcStripped: the stripped build is announced in the probe and
// the result with its fix (the profiling profile), unwound with DWARF
// (.eh_frame survives strip), and its frames stay refsvc-stripped+0x….
func TestPerfRefsvcStripped(t *testing.T) {
	needPerf(t)
	svc := rusttest.Start(t, rusttest.Stripped, "worker")
	tg := &targets.Target{Name: svc.Name, PID: svc.PID}
	c := NewPerf(PerfOptions{})
	for _, a := range c.Probe(context.Background(), tg) {
		if !strings.Contains(a.Reason, "is stripped") || !strings.Contains(a.Reason, "cargo build --profile profiling") {
			t.Errorf("probe %s: %q, want the stripped binary and its fix", a.Kind, a.Reason)
		}
	}
	r := perfCollect(t, c, NewWindow(4*time.Second, 0), tg, bundle.CPU)[bundle.CPU]
	if r.Status != bundle.StatusOK {
		t.Fatalf("cpu: %s %v", r.Status, r.Err)
	}
	t.Logf("note: %s", r.Note)
	if !strings.Contains(r.Note, "is stripped") || !strings.Contains(r.Note, "debug = true") || !strings.Contains(r.Note, "--call-graph dwarf") {
		t.Errorf("note %q: want the stripped warning with its fix, and DWARF", r.Note)
	}
	base := "refsvc-stripped+0x"
	n := 0
	for _, f := range r.Profile.Function {
		if strings.HasPrefix(f.Name, base) {
			n++
		}
	}
	if n == 0 {
		t.Errorf("no %s… frames", base)
	}
}

// rustManglingDemo is a Rust program with one hot generic function, built
// with either mangling scheme.
const rustManglingDemo = `mod work {
    #[inline(never)]
    pub fn hot_loop<T: Copy + Into<u64>>(x: T, n: u64) -> u64 {
        let mut h: u64 = x.into();
        for i in 0..n {
            h = h.wrapping_mul(6364136223846793005).wrapping_add(i ^ (h >> 7));
        }
        h
    }
}
fn main() {
    let t = std::time::Instant::now();
    let mut s = 0u64;
    while t.elapsed().as_secs() < 30 {
        s = s.wrapping_add(work::hot_loop(std::hint::black_box(7u32), std::hint::black_box(1_000_000)));
    }
    println!("{s}");
}
`

// TestPerfRustMangling: perf's cpu profile of Rust code names functions
// demangled, for the legacy scheme (_ZN…17h<hash>E, rustc's default) and
// v0 (_R…, -C symbol-mangling-version=v0), as the same names whichever
// scheme the binary uses.
func TestPerfRustMangling(t *testing.T) {
	needPerf(t)
	rustc := testreq.Command(t, "rustc")
	src := filepath.Join(t.TempDir(), "main.rs")
	if err := os.WriteFile(src, []byte(rustManglingDemo), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ scheme, want string }{
		{"legacy", "main::work::hot_loop"},
		{"v0", "main::work::hot_loop::<u32>"},
	} {
		t.Run(tc.scheme, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "demo-"+tc.scheme)
			args := []string{"-O", "-g", "-C", "force-frame-pointers=yes", "-o", bin, src}
			if tc.scheme == "v0" { // legacy is the default (naming it needs -Z unstable-options)
				args = append(args, "-C", "symbol-mangling-version=v0")
			}
			out, err := exec.Command(rustc, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("rustc: %v\n%s", err, out)
			}
			nm, _ := exec.Command("nm", bin).Output()
			prefix := map[string]string{"legacy": "_ZN4main4work8hot_loop17h", "v0": "_RINvNtCs"}[tc.scheme]
			if !strings.Contains(string(nm), prefix) {
				t.Fatalf("%s has no %s… symbol", bin, prefix)
			}
			cmd := startProcess(t, bin)
			c := NewPerf(PerfOptions{Frequency: refsvcHz})
			r := perfCollect(t, c, NewWindow(2*time.Second, 0), &targets.Target{Name: "demo", PID: cmd.Process.Pid}, bundle.CPU)[bundle.CPU]
			if r.Status != bundle.StatusOK {
				t.Fatalf("cpu: %s %v", r.Status, r.Err)
			}
			top, _ := perfTopSelf(r.Profile, 1, nil)
			if top != tc.want {
				t.Errorf("top function %q, want %q", top, tc.want)
			}
			for _, f := range r.Profile.Function {
				if strings.HasPrefix(f.Name, "_ZN") || strings.HasPrefix(f.Name, "_R") {
					t.Errorf("mangled name left: %s", f.Name)
				}
			}
		})
	}
}

// TestShortStackShare counts user frames (not kernel addresses, not the
// parser's synthetic frames) per sample, weighted by the first value.
func TestShortStackShare(t *testing.T) {
	user := func(a uint64) *profile.Location { return &profile.Location{Address: a} }
	kernel := &profile.Location{Address: 0xffffffff81000130}
	synthetic := &profile.Location{}
	p := &profile.Profile{Sample: []*profile.Sample{
		{Value: []int64{3}, Location: []*profile.Location{kernel, user(1), synthetic}},        // 1 user frame
		{Value: []int64{2}, Location: []*profile.Location{user(1), user(2)}},                  // 2
		{Value: []int64{5}, Location: []*profile.Location{kernel, user(1), user(2), user(3)}}, // 3
	}}
	if short, total := shortStackShare(p); short != 5 || total != 10 {
		t.Errorf("short %d of %d, want 5 of 10", short, total)
	}
}
