package consoleapi

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/profcap/profcap/internal/consolepb"
)

func serve(t *testing.T, opts Options) (*Server, pb.InstrumentClient) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(opts)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///"+l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return srv, pb.NewInstrumentClient(conn)
}

func watch(t *testing.T, cl pb.InstrumentClient) grpc.ServerStreamingClient[pb.Update] {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := cl.WatchUpdates(ctx, &pb.InstrumentRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func recv(t *testing.T, st grpc.ServerStreamingClient[pb.Update]) *pb.Update {
	t.Helper()
	u, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestProtocol checks the stream shape a console client relies on: a full
// first update with metadata, then only the changed tasks, cumulative stats
// and the subscriber's accounting rules.
func TestProtocol(t *testing.T) {
	srv, cl := serve(t, Options{PublishInterval: time.Hour}) // publish by Flush only
	a := srv.Spawn("a", Location{File: "a.rs", Line: 1, Column: 2}, KindTask, Field{Name: "size.bytes", Value: uint64(64)})
	b := srv.Spawn("b", Location{File: "b.rs", Line: 3, Column: 4}, KindBlocking)
	time.Sleep(2 * time.Millisecond) // a waits for its first poll
	a.CloneWaker()
	a.Poll(func() { time.Sleep(2 * time.Millisecond) })

	st := watch(t, cl)
	first := recv(t, st)
	if first.GetNow() == nil || len(first.GetNewMetadata().GetMetadata()) != 1 {
		t.Fatalf("first update lacks now or metadata: %v", first)
	}
	if n := len(first.GetTaskUpdate().GetNewTasks()); n != 2 || len(first.GetTaskUpdate().GetStatsUpdate()) != 2 {
		t.Fatalf("first update has %d tasks, want both", n)
	}
	sa := first.GetTaskUpdate().GetStatsUpdate()[a.ID()]
	ps := sa.GetPollStats()
	if ps.GetPolls() != 1 || ps.GetBusyTime().AsDuration() < 2*time.Millisecond || sa.GetWakerClones() != 1 {
		t.Errorf("stats of a: %v", sa)
	}
	// First poll, never woken: console-subscriber counts no scheduled time
	// from spawn to the first poll.
	if got := sa.GetScheduledTime().AsDuration(); got != 0 || ps.GetFirstPoll().AsTime().Sub(sa.GetCreatedAt().AsTime()) < 2*time.Millisecond {
		t.Errorf("scheduled %v after a first poll never woken, want 0", got)
	}
	// A first update clears nothing: the next update still has both tasks,
	// never sent in an incremental update.
	srv.Flush()
	if u := recv(t, st); len(u.GetTaskUpdate().GetNewTasks()) != 2 || len(u.GetNewMetadata().GetMetadata()) != 1 {
		t.Errorf("the update after the first: %d new tasks, %d metadata; want both tasks and the metadata again",
			len(u.GetTaskUpdate().GetNewTasks()), len(u.GetNewMetadata().GetMetadata()))
	}

	// Wake a by value twice, then poll: scheduled grows by poll start −
	// the latest wake; each wake consumed a waker.
	a.Wake()
	time.Sleep(3 * time.Millisecond)
	a.Wake()
	time.Sleep(3 * time.Millisecond)
	a.Poll(func() {})
	srv.AddDroppedEvents(3)
	srv.Flush()
	u := recv(t, st)
	if len(u.GetTaskUpdate().GetNewTasks()) != 0 || u.GetNewMetadata() != nil {
		t.Errorf("incremental update repeats tasks or metadata")
	}
	if _, ok := u.GetTaskUpdate().GetStatsUpdate()[b.ID()]; ok {
		t.Errorf("unchanged task b in the update")
	}
	sa2 := u.GetTaskUpdate().GetStatsUpdate()[a.ID()]
	if sa2.GetWakes() != 2 || sa2.GetWakerDrops() != 2 || sa2.GetPollStats().GetPolls() != 2 {
		t.Errorf("stats after wake: %v", sa2)
	}
	grew := sa2.GetScheduledTime().AsDuration() - sa.GetScheduledTime().AsDuration()
	if want := sa2.GetPollStats().GetLastPollStarted().AsTime().Sub(sa2.GetLastWake().AsTime()); grew != want || grew < 3*time.Millisecond || grew > 5*time.Millisecond+want/2 {
		t.Errorf("scheduled grew %v, want %v (from the latest wake)", grew, want)
	}
	if u.GetTaskUpdate().GetDroppedEvents() != 3 {
		t.Errorf("dropped_events %d", u.GetTaskUpdate().GetDroppedEvents())
	}

	// Pause over gRPC: nothing is published; Resume: the next update has it all.
	if _, err := cl.Pause(context.Background(), &pb.PauseRequest{}); err != nil {
		t.Fatal(err)
	}
	b.Done()
	c := srv.Spawn("", Location{}, "")
	srv.Flush()
	if _, err := cl.Resume(context.Background(), &pb.ResumeRequest{}); err != nil {
		t.Fatal(err)
	}
	srv.Flush()
	u = recv(t, st)
	if len(u.GetTaskUpdate().GetNewTasks()) != 1 || u.GetTaskUpdate().GetNewTasks()[0].GetId().GetId() != c.ID() {
		t.Errorf("after resume: new tasks %v", u.GetTaskUpdate().GetNewTasks())
	}
	if u.GetTaskUpdate().GetStatsUpdate()[b.ID()].GetDroppedAt() == nil {
		t.Errorf("after resume: b not completed")
	}
	if !u.GetNow().AsTime().After(first.GetNow().AsTime()) {
		t.Errorf("clock went backwards")
	}
}

// TestNoWatcherNoPublish: with no watcher nothing is published, so tasks
// stay unsent and dropped events accumulate; a new watcher's first update
// takes the count from every watcher.
func TestNoWatcherNoPublish(t *testing.T) {
	srv, cl := serve(t, Options{PublishInterval: time.Hour})
	srv.Spawn("early", Location{}, KindTask)
	srv.AddDroppedEvents(2)
	srv.Flush() // no watcher: nothing sent, nothing cleared
	w1 := watch(t, cl)
	if u := recv(t, w1); u.GetTaskUpdate().GetDroppedEvents() != 2 {
		t.Errorf("first watcher's first update: dropped_events %d, want 2", u.GetTaskUpdate().GetDroppedEvents())
	}
	srv.AddDroppedEvents(5)
	w2 := watch(t, cl)
	if u := recv(t, w2); u.GetTaskUpdate().GetDroppedEvents() != 5 {
		t.Errorf("second watcher's first update: dropped_events %d, want 5", u.GetTaskUpdate().GetDroppedEvents())
	}
	srv.Flush()
	if u := recv(t, w1); u.GetTaskUpdate().GetDroppedEvents() != 0 || len(u.GetTaskUpdate().GetNewTasks()) != 1 {
		t.Errorf("first watcher's next update: dropped_events %d (the second watcher took them), %d new tasks (want the never-sent one)",
			u.GetTaskUpdate().GetDroppedEvents(), len(u.GetTaskUpdate().GetNewTasks()))
	}
	lost := srv.SpawnLost("gone", Location{}, KindTask)
	lost.Poll(func() {})
	srv.Flush()
	u := recv(t, w1)
	if u.GetTaskUpdate().GetDroppedEvents() != 1 || len(u.GetTaskUpdate().GetNewTasks()) != 0 || len(u.GetTaskUpdate().GetStatsUpdate()) != 0 {
		t.Errorf("a lost spawn: %v", u.GetTaskUpdate())
	}
}

// TestWatchStateAndDetails: WatchState answers at once and at each tick;
// WatchTaskDetails answers NotFound for an id no task has.
func TestWatchStateAndDetails(t *testing.T) {
	srv, cl := serve(t, Options{PublishInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws, err := cl.WatchState(ctx, &pb.StateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := ws.Recv(); err != nil || st.GetTemporality() != pb.Temporality_LIVE {
		t.Fatalf("state %v %v", st, err)
	}
	srv.Pause()
	srv.Flush()
	if st, err := ws.Recv(); err != nil || st.GetTemporality() != pb.Temporality_PAUSED {
		t.Fatalf("state after pause %v %v", st, err)
	}
	d, err := cl.WatchTaskDetails(ctx, &pb.TaskDetailsRequest{Id: &pb.Id{Id: 1 << 60}})
	if err == nil {
		_, err = d.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Errorf("details of no task: %v, want NotFound", err)
	}
}

// TestReuseSpanIDs: a completed task's id names the next task at once, and
// the old task's final stats are never sent if no update went out between.
func TestReuseSpanIDs(t *testing.T) {
	srv, cl := serve(t, Options{PublishInterval: time.Hour, ReuseSpanIDs: true})
	st := watch(t, cl)
	old := srv.Spawn("old", Location{}, KindTask)
	old.StartPoll()
	recv(t, st)
	old.EndPoll()
	old.Done()
	nw := srv.Spawn("new", Location{}, KindTask)
	if nw.ID() != old.ID() {
		t.Fatalf("new task id %d, want the reused %d", nw.ID(), old.ID())
	}
	srv.Flush()
	u := recv(t, st)
	s := u.GetTaskUpdate().GetStatsUpdate()[nw.ID()]
	if len(u.GetTaskUpdate().GetNewTasks()) != 1 || s.GetDroppedAt() != nil || s.GetPollStats().GetPolls() != 0 {
		t.Errorf("update after the reuse: %v", u.GetTaskUpdate())
	}
}

// TestStopBreaksStreams: Stop ends every watcher's stream at once, as when
// the process exits (gRPC Unavailable, not a clean end), Serve returns nil,
// a second Stop is harmless and no new stream opens.
func TestStopBreaksStreams(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(Options{PublishInterval: 10 * time.Millisecond})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///"+l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := pb.NewInstrumentClient(conn)
	var streams []grpc.ServerStreamingClient[pb.Update]
	for range 2 {
		st := watch(t, cl)
		recv(t, st)
		streams = append(streams, st)
	}
	recv(t, streams[0]) // publishing: a tick's update arrives

	stopped := time.Now()
	srv.Stop()
	srv.Stop()
	if d := time.Since(stopped); d > 2*time.Second {
		t.Errorf("Stop took %v", d)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve returned %v after Stop, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running 5s after Stop")
	}
	for i, st := range streams {
		broke := make(chan error, 1)
		go func() {
			for {
				if _, err := st.Recv(); err != nil {
					broke <- err
					return
				}
			}
		}()
		select {
		case err := <-broke:
			if status.Code(err) != codes.Unavailable {
				t.Errorf("stream %d ended with %v, want the connection broken (Unavailable)", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d still open 5s after Stop", i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if st, err := cl.WatchUpdates(ctx, &pb.InstrumentRequest{}); err == nil {
		if u, err := st.Recv(); err == nil {
			t.Errorf("a stream opened after Stop got %v", u)
		}
	}
	if err := srv.Serve(l); err == nil {
		t.Errorf("Serve after Stop: nil, want an error")
	}
}

// TestRetention: completed tasks older than the retention leave the state.
func TestRetention(t *testing.T) {
	srv, cl := serve(t, Options{PublishInterval: time.Hour, Retention: time.Millisecond})
	srv.Spawn("gone", Location{}, KindTask).Done()
	srv.Spawn("live", Location{}, KindTask)
	srv.Flush() // sends the dirty completed task once
	time.Sleep(5 * time.Millisecond)
	srv.Flush() // now clean and old: dropped
	u := recv(t, watch(t, cl))
	if n := len(u.GetTaskUpdate().GetNewTasks()); n != 1 {
		t.Errorf("full update has %d tasks, want only the live one", n)
	}
}

// TestHelpers: Run, Go and Handler record tasks at their caller's location.
func TestHelpers(t *testing.T) {
	srv, cl := serve(t, Options{PublishInterval: time.Hour})
	srv.Run("run", KindTask, func() {})
	done := make(chan struct{})
	srv.Go("go", KindLocal, func(t *Task) { t.Poll(func() {}); close(done) })
	<-done
	h := srv.Handler("handler", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil))
	u := recv(t, watch(t, cl))
	if n := len(u.GetTaskUpdate().GetNewTasks()); n != 3 {
		t.Fatalf("%d tasks, want 3", n)
	}
	for _, tk := range u.GetTaskUpdate().GetNewTasks() {
		if !strings.HasSuffix(tk.GetLocation().GetFile(), "server_test.go") {
			t.Errorf("task %v: location %v, want this file", tk.GetFields()[1], tk.GetLocation())
		}
		if u.GetTaskUpdate().GetStatsUpdate()[tk.GetId().GetId()].GetPollStats().GetPolls() != 1 {
			t.Errorf("task %v not polled once", tk.GetFields()[1])
		}
	}
}

// TestFullUpdateShrinks: completed tasks are left out of a first update
// that would exceed MaxMessageSize, by halving the retention for good.
func TestFullUpdateShrinks(t *testing.T) {
	srv, cl := serve(t, Options{PublishInterval: 10 * time.Millisecond, Retention: time.Hour})
	pad := strings.Repeat("x", 2048)
	for i := 0; i < 3000; i++ {
		srv.Spawn("done", Location{}, KindTask, Field{Name: "pad", Value: pad}).Done()
	}
	time.Sleep(50 * time.Millisecond) // the completed tasks age
	srv.Spawn("live", Location{}, KindTask)
	u := recv(t, watch(t, cl))
	n := len(u.GetTaskUpdate().GetNewTasks())
	if size := proto.Size(u); size >= MaxMessageSize || n < 1 || n > 3000 {
		t.Errorf("first update: %d bytes, %d tasks", size, n)
	}
	last := u.GetTaskUpdate().GetNewTasks()[n-1]
	if last.GetFields()[1].GetDebugVal() != "live" {
		t.Errorf("live task missing")
	}
	if r := srv.Retention(); r >= time.Hour || r < 10*time.Millisecond {
		t.Errorf("retention %v after the cut, want less than 1h and at least the publish interval", r)
	}
}

// TestNoFirstUpdate: live tasks of 4 MiB or more get no first update once
// the retention is down to the publish interval; the next update carries
// every task never sent, and a later watcher gets only what changed.
func TestNoFirstUpdate(t *testing.T) {
	srv, cl := serve(t, Options{PublishInterval: time.Hour, Retention: 8 * time.Hour})
	pad := strings.Repeat("x", 2048)
	for i := 0; i < 2500; i++ {
		srv.Spawn("idle", Location{}, KindTask, Field{Name: "pad", Value: pad}).Poll(func() {})
	}
	busy := srv.Spawn("busy", Location{}, KindTask)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := cl.WatchUpdates(ctx, &pb.InstrumentRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *pb.Update, 4)
	go func() {
		for {
			u, err := st.Recv()
			if err != nil {
				return
			}
			got <- u
		}
	}()
	select {
	case u := <-got:
		t.Fatalf("a first update of %d tasks arrived", len(u.GetTaskUpdate().GetNewTasks()))
	case <-time.After(300 * time.Millisecond):
	}
	if r := srv.Retention(); r != time.Hour {
		t.Errorf("retention %v, want the publish interval", r)
	}
	srv.Flush()
	if u := <-got; len(u.GetTaskUpdate().GetNewTasks()) != 2501 {
		t.Errorf("the next update has %d tasks, want every unsent one", len(u.GetTaskUpdate().GetNewTasks()))
	}
	busy.Poll(func() {})
	srv.Flush()
	<-got
	busy.Poll(func() {})
	st2, err := cl.WatchUpdates(ctx, &pb.InstrumentRequest{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	srv.Flush()
	u, err := st2.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(u.GetTaskUpdate().GetNewTasks()) != 0 || len(u.GetTaskUpdate().GetStatsUpdate()) != 1 {
		t.Errorf("second watcher's first message: %d tasks, %d stats; want only busy's stats",
			len(u.GetTaskUpdate().GetNewTasks()), len(u.GetTaskUpdate().GetStatsUpdate()))
	}
}
