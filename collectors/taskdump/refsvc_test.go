package taskdump

import (
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/collectors/tokioconsole"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/targets"
)

// The reference service (rust/, built by scripts/rust-build.sh into
// $PROFCAP_CACHE/rust/bin) is the real part these tests need.

func refsvcBin(t testing.TB, variant string) string {
	t.Helper()
	cache := os.Getenv("PROFCAP_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "profcap")
	}
	bin := filepath.Join(cache, "rust", "bin", "refsvc-"+variant)
	if _, err := os.Stat(bin); err != nil {
		testreq.Missing(t, "the reference service %s (scripts/rust-build.sh builds it)", bin)
	}
	return bin
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type refsvc struct {
	cmd  *exec.Cmd
	base string // http://127.0.0.1:PORT
}

// startRefsvc runs the reference service with --taskdump and waits for
// /health.
func startRefsvc(t testing.TB, variant string, args ...string) *refsvc {
	t.Helper()
	bin := refsvcBin(t, variant)
	port := freePort(t)
	args = append([]string{"--name", "await-test", "--port", fmt.Sprint(port), "--taskdump"}, args...)
	cmd := exec.Command(bin, args...)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r := &refsvc{cmd: cmd, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(r.base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("refsvc did not answer /health within 20 s: %v\n%s", err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// truthTask is a task of /truth (rust/README.md).
type truthTask struct {
	Name              string `json:"name"`
	TaskID            string `json:"task_id"`
	TotalNs           int64  `json:"total_ns"`
	DBWaitNs          int64  `json:"db_wait_ns"`
	AsyncMutexWaitNs  int64  `json:"async_mutex_wait_ns"`
	AsyncMutexHoldNs  int64  `json:"async_mutex_hold_ns"`
	SleepNs           int64  `json:"sleep_ns"`
	Instances         int    `json:"instances"`
	ChannelWaitNs     int64  `json:"channel_wait_ns"`
	SpawnedAtUnixNano int64  `json:"spawned_at_unix_ns"`
}

type truth struct {
	Service struct {
		NowUnixNs int64 `json:"now_unix_ns"`
	} `json:"service"`
	Tasks []truthTask `json:"tasks"`
}

func (r *refsvc) truth(t testing.TB) truth {
	t.Helper()
	resp, err := http.Get(r.base + "/truth")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var tr truth
	if err := json.Unmarshal(b, &tr); err != nil {
		t.Fatalf("/truth: %v", err)
	}
	return tr
}

func (tr truth) task(t testing.TB, name string) truthTask {
	t.Helper()
	for _, tk := range tr.Tasks {
		if tk.Name == name {
			return tk
		}
	}
	t.Fatalf("/truth has no task %q", name)
	return truthTask{}
}

// stackHas reports whether s's stack (leaf first) has the frames of want
// in order from the leaf outwards, each directly outside the one before.
func stackHas(s *profile.Sample, want ...string) bool {
	names := stackNames(s)
	for i := range names {
		if i+len(want) > len(names) {
			return false
		}
		ok := true
		for j, w := range want {
			if names[i+j] != w {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func stackNames(s *profile.Sample) []string {
	var names []string
	for _, l := range s.Location {
		for _, ln := range l.Line {
			names = append(names, ln.Function.Name)
		}
		if len(l.Line) == 0 {
			names = append(names, fmt.Sprintf("%#x", l.Address))
		}
	}
	return names
}

func hasLabel(s *profile.Sample, k, v string) bool {
	return len(s.Label[k]) == 1 && s.Label[k][0] == v
}

// The await profile of a 10 s window against the real service: the
// database waiter's stack ends in db_query under its handler, the async
// mutex waiter's in the lock, and each one's share of its task-seconds is
// within 15 points of what the service measured itself (/truth, differenced
// over the window).
//
// The tolerance is in points of the task's time, not relative: a dump is a
// sample, so the share measured from n dumps has a binomial error of
// sqrt(p(1-p)/n). The mutex waiter waits p ≈ 0.1–0.3 of its time; with the
// n ≥ 40 dumps this test requires, that error is at most 7 points, so 15
// points fails by chance about once in 400 runs, while a profile that puts
// the wait in the wrong place or weighs tasks wrongly is off by far more.
// Relative to the share, 15% would need ~1,000 dumps of the task in 10 s.
func TestAwaitMatchesTruth(t *testing.T) {
	svc := startRefsvc(t, "profiling", "--role", "orchestration", "--no-console")
	// One dump first: the service loads its DWARF for the first one (seconds
	// in the profiling build), which is not what this test measures.
	if resp, err := http.Get(svc.base + "/debug/tokio/dump"); err == nil {
		resp.Body.Close()
	}
	c := New(Options{Interval: 100 * time.Millisecond, MaxDuty: 0.5})
	tg := &targets.Target{Name: "refsvc", TokioTaskdump: svc.base + "/debug/tokio/dump"}
	t0 := svc.truth(t)
	r := collectOne(t, c, tg, 10*time.Second)
	t1 := svc.truth(t)
	if r.Status != bundle.StatusOK {
		t.Fatalf("%s: %v (%s)", r.Status, r.Err, r.Note)
	}
	t.Logf("note: %s", r.Note)
	p := r.Profile
	var dumps int
	fmt.Sscanf(r.Note, "%d task dumps", &dumps)
	if dumps < 40 {
		t.Fatalf("only %d dumps in the 10 s window (want 40 for the shares to mean something): %s", dumps, r.Note)
	}
	for _, c := range []struct {
		task  string
		stack []string // leaf first, each directly outside the one before
		wait  func(truthTask) int64
		on    string
	}{
		{"truth-db-waiter", []string{"refsvc::db::db_query::{{closure}}", "refsvc::pipeline::truth_db_waiter::{{closure}}"},
			func(t truthTask) int64 { return t.DBWaitNs }, "sleep"},
		{"truth-mutex-waiter", []string{"<tokio::sync::batch_semaphore::Acquire as core::future::future::Future>::poll", "tokio::sync::mutex::Mutex<T>::acquire::{{closure}}"},
			func(t truthTask) int64 { return t.AsyncMutexWaitNs }, "mutex"},
	} {
		a, b := t0.task(t, c.task), t1.task(t, c.task)
		if a.TaskID != b.TaskID {
			t.Fatalf("%s restarted", c.task)
		}
		truthShare := float64(c.wait(b)-c.wait(a)) / float64(b.TotalNs-a.TotalNs)
		var all, waiting int64
		for _, s := range p.Sample {
			if !hasLabel(s, LabelID, a.TaskID) {
				continue
			}
			if !hasLabel(s, LabelName, c.task) {
				t.Errorf("%s: sample labelled %v", c.task, s.Label)
			}
			all += s.Value[0]
			if stackHas(s, c.stack...) && stackHas(s, "refsvc::pipeline::"+strings.ReplaceAll(c.task, "-", "_")+"::{{closure}}") {
				waiting += s.Value[0]
				if !hasLabel(s, LabelOn, c.on) {
					t.Errorf("%s: await.on %v, want %s", c.task, s.Label[LabelOn], c.on)
				}
			}
		}
		if all == 0 {
			t.Fatalf("%s (task %s) is not in the profile", c.task, a.TaskID)
		}
		// The task is alive the whole window: its task-time is the time
		// the dumps stand for, but for a first or last dump that left it
		// out (scheduled then), which no later dump can make up: at most
		// two dumps' weight, 2% at 10 dumps a second.
		if d := r.End.Sub(r.Start); math.Abs(float64(all-int64(d))) > float64(d)/50+float64(time.Millisecond) {
			t.Errorf("%s: %v of task-time in a profile covering %v", c.task, time.Duration(all), d)
		}
		share := float64(waiting) / float64(all)
		t.Logf("%s: profile %.1f%% of %.2f task-s waiting in %s; /truth %.1f%% (difference %.1f points, %.0f%% relative)",
			c.task, 100*share, float64(all)/1e9, c.stack[0], 100*truthShare, 100*(share-truthShare), 100*math.Abs(share-truthShare)/truthShare)
		if math.Abs(share-truthShare) > 0.15 {
			t.Errorf("%s: %.1f%% of its time waiting in the profile, %.1f%% by /truth", c.task, 100*share, 100*truthShare)
		}
		if c.task == "truth-db-waiter" && math.Abs(share-truthShare) > 0.15*truthShare {
			t.Errorf("%s: %.1f%% waiting in the profile, %.1f%% by /truth: more than 15%% apart", c.task, 100*share, 100*truthShare)
		}
	}
}

// A stripped binary's dump is addresses only ("?? at 0xADDR"); with a
// debug file of the same build id (the release build is the stripped one
// before strip) the frames get the release build's symbol names.
func TestStrippedSymbolised(t *testing.T) {
	release := refsvcBin(t, "release")
	svc := startRefsvc(t, "stripped", "--no-console")
	ef, err := elf.Open(release)
	if err != nil {
		t.Fatal(err)
	}
	id := buildID(ef)
	ef.Close()
	debug := t.TempDir()
	os.MkdirAll(filepath.Join(debug, ".build-id", id[:2]), 0o755)
	if err := os.Symlink(release, filepath.Join(debug, ".build-id", id[:2], id[2:]+".debug")); err != nil {
		t.Fatal(err)
	}
	for _, dirs := range [][]string{{debug}, {t.TempDir()}} {
		c := New(Options{Interval: 500 * time.Millisecond, DebugDirs: dirs})
		r := collectOne(t, c, &targets.Target{Name: "stripped", TokioTaskdump: svc.base + "/debug/tokio/dump"}, 2*time.Second)
		// What is checked is the naming of the frames: a dump that timed
		// out on a busy machine (partial) leaves the others to check.
		if r.Profile == nil {
			t.Fatalf("%s: %v", r.Status, r.Err)
		}
		var named, addrs int
		var db, tracked []string
		for _, s := range r.Profile.Sample {
			for _, l := range s.Location {
				if l.Address == 0 {
					continue
				}
				addrs++
				if len(l.Line) > 0 {
					named++
				}
				if l.Mapping == nil || l.Mapping.BuildID != id || !strings.HasSuffix(l.Mapping.File, "refsvc-stripped") {
					t.Fatalf("location %#x mapping %+v", l.Address, l.Mapping)
				}
			}
			names := stackNames(s)
			if hasLabel(s, LabelName, "truth-db-waiter") {
				db = names
			}
			if strings.Contains(strings.Join(names, "\n"), "refsvc::truth::Tracked") {
				tracked = names
			}
		}
		t.Logf("debug dirs %v: %d of %d address frames named; truth-db-waiter: %s", dirs, named, addrs, strings.Join(db, " ← "))
		// Any truth task's stack will do: one of them may be scheduled
		// (not parked, so not traced) at every dump of the window.
		if dirs[0] == debug && (named == 0 || tracked == nil) {
			t.Errorf("with the debug file: %d of %d named", named, addrs)
		}
		if dirs[0] != debug && named != 0 {
			t.Errorf("without a debug file %d frames named", named)
		}
	}
}

// JoinConsole against the real service with its console: the tasks of the
// await profile get the console's spawn location and busy/scheduled/idle.
func TestJoinConsoleReal(t *testing.T) {
	cport := freePort(t)
	svc := startRefsvc(t, "profiling", "--role", "worker", "--console", fmt.Sprintf("127.0.0.1:%d", cport))
	if resp, err := http.Get(svc.base + "/debug/tokio/dump"); err == nil {
		resp.Body.Close()
	}
	tg := &targets.Target{Name: "refsvc", TokioTaskdump: svc.base + "/debug/tokio/dump", TokioConsole: fmt.Sprintf("127.0.0.1:%d", cport)}
	w := collectors.NewWindow(3*time.Second, time.Second)
	res := map[bundle.Kind]collectors.Result{}
	done := make(chan struct{})
	var emitMu sync.Mutex
	emit := func(r collectors.Result) { res[r.Kind] = r }
	go func() {
		tokioconsole.New(tokioconsole.Options{}).Collect(context.Background(), w, tg, []bundle.Kind{bundle.Async}, func(r collectors.Result) {
			emitMu.Lock()
			emit(r)
			emitMu.Unlock()
		})
		close(done)
	}()
	New(Options{Interval: 250 * time.Millisecond}).Collect(context.Background(), w, tg, []bundle.Kind{bundle.Await}, func(r collectors.Result) {
		emitMu.Lock()
		emit(r)
		emitMu.Unlock()
	})
	<-done
	aw, as := res[bundle.Await], res[bundle.Async]
	if aw.Profile == nil || as.Profile == nil {
		t.Fatalf("await %s %v; async %s %v", aw.Status, aw.Err, as.Status, as.Err)
	}
	n, err := JoinConsole(aw.Profile, as.Profile)
	if err != nil {
		t.Fatal(err)
	}
	if err := aw.Profile.CheckValid(); err != nil {
		t.Fatal(err)
	}
	var db *profile.Sample
	for _, s := range aw.Profile.Sample {
		if hasLabel(s, LabelName, "truth-db-waiter") {
			db = s
		}
	}
	t.Logf("%d of %d samples joined; truth-db-waiter: %v %v", n, len(aw.Profile.Sample), db.Label, db.NumLabel)
	if db == nil {
		t.Fatal("truth-db-waiter is not in the await profile")
	}
	// Its console numbers are the console's sample of that task.
	var cs *profile.Sample
	for _, s := range as.Profile.Sample {
		if label(s, LabelID) == label(db, LabelID) {
			cs = s
		}
	}
	if cs == nil || !strings.Contains(label(db, LabelSpawn), "refsvc/src/") || label(db, LabelState) != "idle" || label(db, LabelKind) != "task" ||
		db.NumLabel[NumLabelBusy][0] != cs.Value[0] || db.NumLabel[NumLabelScheduled][0] != cs.Value[1] || db.NumLabel[NumLabelIdle][0] != cs.Value[2] ||
		db.NumUnit[NumLabelIdle][0] != "nanoseconds" {
		t.Errorf("truth-db-waiter not joined: %v %v (console: %v)", db.Label, db.NumLabel, cs)
	}
	// Every task the console names joins: by id where the console's
	// sample is that one task, else by name.
	names := map[string]bool{}
	for _, s := range as.Profile.Sample {
		names[frameName(s.Location[0])] = true
	}
	for _, s := range aw.Profile.Sample {
		if names[label(s, LabelName)] && label(s, LabelState) == "" {
			t.Errorf("a sample of %s did not join: %v", label(s, LabelName), s.Label)
		}
	}
}
