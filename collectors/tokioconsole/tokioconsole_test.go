package tokioconsole

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/internal/consoleapi"
	pb "github.com/profcap/profcap/internal/consolepb"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/targets"
)

// startConsole serves a consoleapi.Server on a loopback port (real gRPC,
// h2c) and returns it with a target pointing at it.
func startConsole(t testing.TB, interval time.Duration) (*consoleapi.Server, *targets.Target) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := consoleapi.NewServer(consoleapi.Options{PublishInterval: interval})
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return srv, &targets.Target{Name: "svc-1", TokioConsole: l.Addr().String()}
}

// truth is what a workload did, measured by the workload itself on the
// server's clock: busy and scheduled intervals and the task's lifetime.
type truth struct {
	mu               sync.Mutex
	busy, sched      [][2]time.Time
	created, dropped time.Time
}

func (tr *truth) add(busy bool, a, b time.Time) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if busy {
		tr.busy = append(tr.busy, [2]time.Time{a, b})
	} else {
		tr.sched = append(tr.sched, [2]time.Time{a, b})
	}
}

func overlap(a, b, t1, t2 time.Time) time.Duration {
	if a.Before(t1) {
		a = t1
	}
	if b.IsZero() || b.After(t2) {
		b = t2
	}
	return nonNeg(b.Sub(a))
}

// in returns busy, scheduled and idle within [t1, t2].
func (tr *truth) in(t1, t2 time.Time) (busy, sched, idle time.Duration) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, iv := range tr.busy {
		busy += overlap(iv[0], iv[1], t1, t2)
	}
	for _, iv := range tr.sched {
		sched += overlap(iv[0], iv[1], t1, t2)
	}
	alive := overlap(tr.created, tr.dropped, t1, t2)
	return busy, sched, alive - busy - sched
}

// worker runs a task that is woken (the first time: spawned, which makes a
// tokio task runnable without a wake), waits sched to be polled, is busy for
// busy and idle for idle, until stop is closed or n iterations (n > 0) ran;
// then it completes.
func worker(srv *consoleapi.Server, name string, busy, sched, idle time.Duration, n int, stop <-chan struct{}, wg *sync.WaitGroup) *truth {
	tr := &truth{created: srv.Now()}
	task := srv.Spawn(name, consoleapi.Location{File: "src/" + name + ".rs", Line: 10, Column: 5}, consoleapi.KindTask)
	task.CloneWaker() // the waker the first Wake consumes
	wg.Add(1)
	go func() {
		defer wg.Done()
	loop:
		for i := 0; n <= 0 || i < n; i++ {
			select {
			case <-stop:
				break loop
			default:
			}
			s0 := tr.created // spawned: runnable, with no wake, until its first poll
			if i > 0 {
				s0 = srv.Now()
				task.Wake()
			}
			time.Sleep(sched)
			p0 := srv.Now()
			task.Poll(func() {
				task.CloneWaker() // register interest: someone can wake it again
				time.Sleep(busy)
			})
			p1 := srv.Now()
			tr.add(false, s0, p0)
			tr.add(true, p0, p1)
			time.Sleep(idle)
		}
		task.Done()
		tr.mu.Lock()
		tr.dropped = srv.Now()
		tr.mu.Unlock()
	}()
	return tr
}

func findSample(t *testing.T, p *profile.Profile, name string) *profile.Sample {
	t.Helper()
	for _, s := range p.Sample {
		if s.Location[0].Line[0].Function.Name == name {
			return s
		}
	}
	t.Fatalf("no sample for task %q in\n%v", name, p)
	return nil
}

// within: got is want within 10%, or within 1% of the task's whole time in
// the window (floor), so a component of a few milliseconds is not held to a
// tolerance below the scheduler's own noise.
func within(got, want, alive time.Duration) bool {
	tol := want / 10
	if floor := max(alive/100, 2*time.Millisecond); tol < floor {
		tol = floor
	}
	d := got - want
	return d <= tol && d >= -tol
}

func checkTruth(t *testing.T, p *profile.Profile, r collectors.Result, name string, tr *truth) {
	t.Helper()
	s := findSample(t, p, name)
	wb, ws, wi := tr.in(r.Start, r.End)
	gb, gs, gi := time.Duration(s.Value[0]), time.Duration(s.Value[1]), time.Duration(s.Value[2])
	t.Logf("%-10s busy %v (truth %v)  scheduled %v (truth %v)  idle %v (truth %v)", name, gb, wb, gs, ws, gi, wi)
	alive := wb + ws + wi
	if !within(gb, wb, alive) || !within(gs, ws, alive) || !within(gi, wi, alive) {
		t.Errorf("%s: busy/scheduled/idle = %v/%v/%v, want %v/%v/%v within 10%%", name, gb, gs, gi, wb, ws, wi)
	}
}

func collectOne(t *testing.T, ctx context.Context, c *Collector, w *collectors.Window, tg *targets.Target, kinds ...bundle.Kind) map[bundle.Kind]collectors.Result {
	t.Helper()
	var mu sync.Mutex
	got := map[bundle.Kind]collectors.Result{}
	n := 0
	c.Collect(ctx, w, tg, kinds, func(r collectors.Result) {
		mu.Lock()
		defer mu.Unlock()
		got[r.Kind] = r
		n++
	})
	if n != len(kinds) {
		t.Fatalf("Collect emitted %d results for %d kinds", n, len(kinds))
	}
	return got
}

// TestTokioConsoleWindow runs every kind of task the issue names against a
// real server over loopback gRPC and checks the window arithmetic against
// what the tasks did.
func TestTokioConsoleWindow(t *testing.T) {
	t.Parallel()
	srv, tg := startConsole(t, 50*time.Millisecond)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	// Spans the whole window.
	steady := worker(srv, "steady", 20*time.Millisecond, 10*time.Millisecond, 30*time.Millisecond, 0, stop, &wg)

	// A task busy in one long poll that started before the window.
	long := &truth{created: srv.Now()}
	longTask := srv.Spawn("long-poll", consoleapi.Location{File: "src/long.rs", Line: 3, Column: 1}, consoleapi.KindTask)
	p0 := srv.Now()
	longTask.StartPoll()
	defer longTask.EndPoll()

	// A task that keeps waking itself (yield_now in a loop).
	self := &truth{created: srv.Now()}
	selfTask := srv.Spawn("yielder", consoleapi.Location{File: "src/yield.rs", Line: 7, Column: 9}, consoleapi.KindTask)
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := srv.Now()
		for {
			select {
			case <-stop:
				return
			default:
			}
			a := srv.Now()
			selfTask.Poll(func() {
				time.Sleep(5 * time.Millisecond)
				selfTask.SelfWake()
			})
			b := srv.Now()
			// scheduled runs from the end of the poll (it woke itself
			// during it) to the next poll
			self.add(false, last, a)
			self.add(true, a, b)
			last = b
			time.Sleep(5 * time.Millisecond)
		}
	}()

	// A task that dropped its only waker while waiting: it can never run.
	lost := srv.Spawn("forgotten", consoleapi.Location{File: "src/lost.rs", Line: 1, Column: 1}, consoleapi.KindTask)
	lost.Poll(func() { lost.CloneWaker() })
	lost.DropWaker()

	// A task with a large future.
	srv.Spawn("big", consoleapi.Location{File: "src/big.rs", Line: 2, Column: 2}, consoleapi.KindTask, consoleapi.Field{Name: "size.bytes", Value: uint64(4096)})

	// A blocking task (no lints apply to it).
	blk := srv.Spawn("", consoleapi.Location{File: "src/blk.rs", Line: 4, Column: 4}, consoleapi.KindBlocking)
	blk.Poll(func() { time.Sleep(time.Millisecond) })

	time.Sleep(300 * time.Millisecond) // let the long poll age past one second by the window's end

	w := collectors.NewWindow(time.Second, 0)
	c := New(Options{})
	var short []*truth
	var shortMu sync.Mutex
	go func() {
		// Spawned and completed inside the window, three of them at one
		// location: they aggregate into one sample. Seven more whose spawn
		// events the subscriber dropped: no one sees them.
		time.Sleep(200 * time.Millisecond)
		for i := 0; i < 7; i++ {
			srv.SpawnLost("lost", consoleapi.Location{File: "src/lost.rs", Line: 9, Column: 9}, consoleapi.KindTask)
		}
		for i := 0; i < 3; i++ {
			tr := worker(srv, "short", 10*time.Millisecond, 5*time.Millisecond, 5*time.Millisecond, 4, nil, &wg)
			shortMu.Lock()
			short = append(short, tr)
			shortMu.Unlock()
		}
	}()
	res := collectOne(t, context.Background(), c, w, tg, bundle.Async, bundle.CPU)
	if r := res[bundle.CPU]; r.Status != bundle.StatusUnsupported {
		t.Errorf("cpu: status %s, want unsupported", r.Status)
	}
	r := res[bundle.Async]
	// Partial: seven tasks are missing, and the result says so.
	if r.Status != bundle.StatusPartial || r.Err == nil || !strings.Contains(r.Err.Error(), "lost 7 spawn events during the window") {
		t.Fatalf("status %s: %v", r.Status, r.Err)
	}
	if n := srv.WatchUpdatesCalls(); n != 1 {
		t.Errorf("the capture opened %d WatchUpdates streams, want exactly 1", n)
	}
	p := r.Profile
	if err := p.CheckValid(); err != nil {
		t.Fatal(err)
	}
	t.Logf("window %v .. %v (%v)\n%s", r.Start.Format(time.StampMicro), r.End.Format(time.StampMicro), r.End.Sub(r.Start), r.Note)
	if !r.Start.Before(r.End) {
		t.Fatalf("empty window %v .. %v", r.Start, r.End)
	}

	var types []string
	for _, st := range p.SampleType {
		types = append(types, st.Type+"/"+st.Unit)
	}
	if got := strings.Join(types, " "); got != "busy/nanoseconds scheduled/nanoseconds idle/nanoseconds polls/count first_poll_delay/nanoseconds" {
		t.Errorf("sample types %s", got)
	}

	// Stack, root first: target, kind, location, name.
	s := findSample(t, p, "steady")
	var stack []string
	for i := len(s.Location) - 1; i >= 0; i-- {
		stack = append(stack, s.Location[i].Line[0].Function.Name)
	}
	if got := strings.Join(stack, ";"); got != "svc-1;task;src/steady.rs:10:5;steady" {
		t.Errorf("stack %q", got)
	}
	if s.Label["task.id"] == nil || s.NumLabel["tasks"][0] != 1 || s.Label["tracing.target"][0] != "tokio::task" {
		t.Errorf("labels %v %v", s.Label, s.NumLabel)
	}
	if s.Value[3] == 0 {
		t.Errorf("steady: no polls in the window")
	}

	// Workloads record an interval when it ends: stop them so that the
	// intervals in progress at the window's end are in the truth.
	close(stop)
	wg.Wait()
	checkTruth(t, p, r, "steady", steady)
	long.add(true, p0, r.End.Add(time.Hour))
	checkTruth(t, p, r, "long-poll", long)
	checkTruth(t, p, r, "yielder", self)

	// The three short tasks aggregate; compare their sums.
	ss := findSample(t, p, "short")
	if n := ss.NumLabel["tasks"]; len(n) != 1 || n[0] != 3 {
		t.Errorf("short: tasks label %v, want 3", n)
	}
	if _, ok := ss.Label["task.id"]; ok {
		t.Errorf("short: task.id differs between the aggregated tasks but is a label")
	}
	var wb, ws time.Duration
	shortMu.Lock()
	for _, tr := range short {
		b, s, _ := tr.in(r.Start, r.End)
		wb += b
		ws += s
	}
	shortMu.Unlock()
	t.Logf("short x3  busy %v (truth %v)  scheduled %v (truth %v)", time.Duration(ss.Value[0]), wb, time.Duration(ss.Value[1]), ws)
	if !within(time.Duration(ss.Value[0]), wb, wb+ws) || !within(time.Duration(ss.Value[1]), ws, wb+ws) {
		t.Errorf("short: busy/scheduled %v/%v, want %v/%v", time.Duration(ss.Value[0]), time.Duration(ss.Value[1]), wb, ws)
	}
	if ss.Value[3] != 12 {
		t.Errorf("short: %d polls, want 12", ss.Value[3])
	}

	// Warnings, in the note and as profile comments.
	want := []string{
		"warning: never-yielded: task long-poll at src/long.rs:3:1: ",
		"warning: self-wakes: task yielder at src/yield.rs:7:9: ",
		"warning: lost-waker: task forgotten at src/lost.rs:1:1: ",
		"warning: large-future: task big at src/big.rs:2:2: ",
		"warning: dropped-events: the subscriber lost 7 spawn events during the window",
	}
	for _, wnt := range want {
		found := false
		for _, c := range p.Comments {
			found = found || strings.HasPrefix(c, wnt)
		}
		if !found {
			t.Errorf("no comment starting %q in %q", wnt, p.Comments)
		}
		if !strings.Contains(r.Note, strings.TrimPrefix(wnt, bundle.WarningPrefix)) {
			t.Errorf("note lacks %q", wnt)
		}
	}
	for _, s := range p.Sample {
		if s.Location[0].Line[0].Function.Name == "lost" {
			t.Errorf("a task whose spawn event was dropped is in the profile")
		}
	}
	for _, c := range p.Comments {
		if strings.Contains(c, "steady") || strings.Contains(c, "unnamed") {
			t.Errorf("unexpected warning %q", c)
		}
	}
	if findSample(t, p, "unnamed").Location[2].Line[0].Function.Name != "blocking" {
		t.Errorf("blocking task has the wrong kind frame")
	}

	checkPprofTop(t, p)
}

// checkPprofTop renders the profile with `go tool pprof -top` as a user would.
func checkPprofTop(t *testing.T, p *profile.Profile) {
	goBin := testreq.Command(t, "go")
	file := filepath.Join(t.TempDir(), "async.pb.gz")
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(goBin, "tool", "pprof", "-sample_index=busy", "-top", file).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof: %v\n%s", err, out)
	}
	t.Logf("go tool pprof -sample_index=busy -top:\n%s", out)
	if !strings.Contains(string(out), "long-poll") || !strings.Contains(string(out), "flat%") {
		t.Errorf("pprof -top output lacks the tasks:\n%s", out)
	}
}

// TestTokioConsoleServerGoesAway: the server stops mid-window; what was
// received is kept and the result is partial.
func TestTokioConsoleServerGoesAway(t *testing.T) {
	t.Parallel()
	srv, tg := startConsole(t, 50*time.Millisecond)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	worker(srv, "steady", 10*time.Millisecond, 5*time.Millisecond, 5*time.Millisecond, 0, stop, &wg)

	w := collectors.NewWindow(5*time.Second, 0)
	go func() {
		time.Sleep(400 * time.Millisecond)
		srv.Stop()
	}()
	r := collectOne(t, context.Background(), New(Options{}), w, tg, bundle.Async)[bundle.Async]
	if r.Status != bundle.StatusPartial {
		t.Fatalf("status %s, want partial (err %v)", r.Status, r.Err)
	}
	if r.Err == nil || !strings.Contains(r.Err.Error(), "stream closed mid-window") {
		t.Errorf("err %v, want one saying the stream closed", r.Err)
	}
	if w.EndedEarly() != "" || w.Remaining() == 0 {
		t.Errorf("the collector should not end the shared window")
	}
	s := findSample(t, r.Profile, "steady")
	if s.Value[0] == 0 || s.Value[3] == 0 {
		t.Errorf("what was received before the stream closed is lost: %v", s.Value)
	}
	t.Logf("%v", r.Err)
}

func refusedTarget(t testing.TB) *targets.Target {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return &targets.Target{Name: "gone", TokioConsole: addr}
}

func TestTokioConsoleConnectionRefused(t *testing.T) {
	t.Parallel()
	tg := refusedTarget(t)
	c := New(Options{})
	start := time.Now()
	av := c.Probe(context.Background(), tg)
	t.Logf("probe answered in %v: %s", time.Since(start), av[0].Reason)
	if len(av) != 1 || av[0].Available || av[0].Kind != bundle.Async || !strings.Contains(av[0].Reason, "connection refused") {
		t.Errorf("probe: %+v", av)
	}
	w := collectors.NewWindow(5*time.Second, 0)
	r := collectOne(t, context.Background(), c, w, tg, bundle.Async)[bundle.Async]
	if r.Status != bundle.StatusFailed || r.Err == nil || !strings.Contains(r.Err.Error(), "connection refused") {
		t.Errorf("collect: %s %v", r.Status, r.Err)
	}
}

func BenchmarkTokioConsoleProbeRefused(b *testing.B) {
	tg := refusedTarget(b)
	c := New(Options{})
	for b.Loop() {
		c.Probe(context.Background(), tg)
	}
}

// TestTokioConsoleProbeLargeState: the probe of a service whose state is
// over 4 MiB opens no WatchUpdates stream, so it costs the service no first
// update and does not cut its retention.
func TestTokioConsoleProbeLargeState(t *testing.T) {
	t.Parallel()
	srv, tg := startConsole(t, time.Hour)
	pad := strings.Repeat("x", 2048)
	for i := 0; i < 3000; i++ {
		srv.Spawn("t", consoleapi.Location{File: "src/many.rs", Line: 1, Column: 1}, consoleapi.KindTask, consoleapi.Field{Name: "pad", Value: pad}).Done()
	}
	before := srv.Retention()
	av := New(Options{}).Probe(context.Background(), tg)
	if !av[0].Available || !strings.Contains(av[0].Reason, "answers: live") {
		t.Errorf("probe: %+v", av[0])
	}
	if n, r := srv.WatchUpdatesCalls(), srv.Retention(); n != 0 || r != before {
		t.Errorf("the probe opened %d WatchUpdates streams and the retention went from %v to %v", n, before, r)
	}
	srv.Pause()
	if av := New(Options{}).Probe(context.Background(), tg); !av[0].Available || !strings.Contains(av[0].Reason, "paused") {
		t.Errorf("probe of a paused console: %+v", av[0])
	}
}

// TestTokioConsoleAbandon: ctx done abandons the capture at once, with a
// failed result.
func TestTokioConsoleAbandon(t *testing.T) {
	t.Parallel()
	_, tg := startConsole(t, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	w := collectors.NewWindow(time.Hour, 0)
	go func() {
		time.Sleep(200 * time.Millisecond)
		cancel()
	}()
	r := collectOne(t, ctx, New(Options{}), w, tg, bundle.Async)[bundle.Async]
	if r.Status != bundle.StatusFailed || !errors.Is(r.Err, context.Canceled) {
		t.Errorf("%s %v", r.Status, r.Err)
	}
}

// TestTokioConsolePaused: a console paused by another client sends only the
// first update; the result says so, and the collector does not resume it.
func TestTokioConsolePaused(t *testing.T) {
	t.Parallel()
	srv, tg := startConsole(t, 20*time.Millisecond)
	srv.Pause()
	w := collectors.NewWindow(300*time.Millisecond, 0)
	r := collectOne(t, context.Background(), New(Options{}), w, tg, bundle.Async)[bundle.Async]
	if r.Status != bundle.StatusPartial || r.Err == nil || !strings.Contains(r.Err.Error(), "paused") {
		t.Errorf("%s %v", r.Status, r.Err)
	}
}

func TestTokioConsoleKinds(t *testing.T) {
	c := New(Options{})
	if c.Name() != "tokio-console" {
		t.Errorf("name %q", c.Name())
	}
	if k := c.Kinds(&targets.Target{Name: "a", Pprof: "http://x"}); len(k) != 0 {
		t.Errorf("kinds without console: %v", k)
	}
	if k := c.Kinds(&targets.Target{Name: "a", TokioConsole: "127.0.0.1:6669"}); len(k) != 1 || k[0] != bundle.Async {
		t.Errorf("kinds: %v", k)
	}
}

// Synthetic updates, to check the arithmetic exactly.

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(ms int) *timestamppb.Timestamp {
	return timestamppb.New(t0.Add(time.Duration(ms) * time.Millisecond))
}
func dur(ms int) *durationpb.Duration { return durationpb.New(time.Duration(ms) * time.Millisecond) }

func newTask(id uint64, name string) *pb.Task {
	return &pb.Task{
		Id:       &pb.Id{Id: id},
		Metadata: &pb.MetaId{Id: 1},
		Fields: []*pb.Field{
			{Name: &pb.Field_StrName{StrName: "task.name"}, Value: &pb.Field_DebugVal{DebugVal: name}, MetadataId: &pb.MetaId{Id: 1}},
			// a field by index into the metadata's field names (which console-subscriber does not use, but the protocol has)
			{Name: &pb.Field_NameIdx{NameIdx: 0}, Value: &pb.Field_U64Val{U64Val: id}, MetadataId: &pb.MetaId{Id: 1}},
		},
	}
}

// FuzzConsoleUpdates feeds arbitrary bytes, framed as length-prefixed
// Update messages, through the state, the window and the profile: none may
// panic or produce an invalid profile.
func FuzzConsoleUpdates(f *testing.F) {
	frame := func(us ...*pb.Update) []byte {
		var b []byte
		for _, u := range us {
			m, _ := proto.Marshal(u)
			b = binary.AppendUvarint(b, uint64(len(m)))
			b = append(b, m...)
		}
		return b
	}
	f.Add(frame(&pb.Update{Now: at(0)}))
	f.Add(frame(
		&pb.Update{Now: at(1000), TaskUpdate: &pb.TaskUpdate{NewTasks: []*pb.Task{newTask(1, "a")}, StatsUpdate: map[uint64]*pb.Stats{
			1: {CreatedAt: at(0), PollStats: &pb.PollStats{Polls: 3, LastPollStarted: at(900), BusyTime: dur(300)}}}}},
		&pb.Update{Now: at(2000), TaskUpdate: &pb.TaskUpdate{NewTasks: []*pb.Task{newTask(1, "a2")}, DroppedEvents: 1 << 63, StatsUpdate: map[uint64]*pb.Stats{
			1: {CreatedAt: at(1500), LastWake: at(1999), SelfWakes: 9, Wakes: 3}}}},
	))
	f.Add(frame(&pb.Update{Now: &timestamppb.Timestamp{Seconds: 1 << 40}, TaskUpdate: &pb.TaskUpdate{StatsUpdate: map[uint64]*pb.Stats{
		7: {ScheduledTime: &durationpb.Duration{Seconds: 1 << 62}}}}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		st := newConsoleState()
		for len(data) > 0 {
			n, k := binary.Uvarint(data)
			if k <= 0 || n > uint64(len(data)-k) {
				break
			}
			msg := data[k : k+int(n)]
			data = data[k+int(n):]
			var u pb.Update
			if proto.Unmarshal(msg, &u) != nil {
				continue
			}
			if st.apply(&u) != nil {
				continue
			}
			if !st.started {
				st.markStart()
			}
		}
		cw := st.window()
		for _, wt := range cw.Tasks {
			if wt.busy < 0 || wt.scheduled < 0 || wt.idle < 0 {
				t.Fatalf("negative time %+v", wt)
			}
		}
		p := cw.asyncProfile("t")
		if err := p.CheckValid(); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := p.Write(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := profile.Parse(&buf); err != nil {
			t.Fatal(err)
		}
	})
}

// collectPrepared runs Collect as a capture does for a Preparer: connected
// before the window, which opens after openAfter.
func collectPrepared(t *testing.T, c *Collector, d, openAfter time.Duration, tg *targets.Target) (*collectors.Window, collectors.Result) {
	t.Helper()
	w := collectors.NewPendingWindow(d, 0)
	go func() {
		time.Sleep(openAfter)
		w.Open()
	}()
	return w, collectOne(t, context.Background(), c, w, tg, bundle.Async)[bundle.Async]
}

// TestTokioConsolePreparedWindow: connected before the window, the
// collector covers exactly the window: each task's figures are interpolated
// at its start and end between the updates around them.
func TestTokioConsolePreparedWindow(t *testing.T) {
	t.Parallel()
	srv, tg := startConsole(t, 100*time.Millisecond)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }); wg.Wait() }
	defer halt()
	steady := worker(srv, "steady", 5*time.Millisecond, 3*time.Millisecond, 2*time.Millisecond, 0, stop, &wg)
	w, r := collectPrepared(t, New(Options{}), time.Second, 350*time.Millisecond, tg)
	if r.Status != bundle.StatusOK {
		t.Fatalf("status %s: %v", r.Status, r.Err)
	}
	if !r.Start.Equal(w.Start) || !r.End.Equal(w.Ended()) {
		t.Errorf("measured %v .. %v, window %v .. %v", r.Start, r.End, w.Start, w.Ended())
	}
	if !strings.Contains(r.Note, "interpolated at its start and end") {
		t.Errorf("note %q", r.Note)
	}
	halt() // the truth has the intervals in progress at the end
	checkTruth(t, r.Profile, r, "steady", steady)
}
