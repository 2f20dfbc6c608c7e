// Package consoleapi is a small runtime-instrumentation library that serves
// the tokio-console wire protocol (rs.tokio.console.instrument.Instrument,
// h2c gRPC) from a Go program. Work is modelled as tasks: Spawn registers a
// task, Poll measures one poll of it, Wake and the waker methods record what
// a Tokio waker would. The server keeps the same cumulative per-task
// statistics as console-subscriber and publishes them the same way: one full
// Update to each new watcher, then one Update per publish interval carrying
// only the tasks that changed, each stamped with the server's own clock.
//
// It exists so that profcap can be tested against a real peer over real gRPC
// (the Rust console-subscriber cannot be built here) and so that Go services,
// such as the demo cluster, can show their request steps as async tasks:
//
//	srv := consoleapi.NewServer(consoleapi.Options{})
//	go srv.Serve(listener) // e.g. net.Listen("tcp", "127.0.0.1:6669")
//	defer srv.Stop()
//	...
//	srv.Run("step:fetch", consoleapi.KindTask, func() { fetch() })
//
// Accounting and publishing follow console-subscriber 0.5.0
// (console-subscriber/src/stats.rs and aggregator/): scheduled_time grows at
// each poll start by poll_start − max(last_wake, last_poll_ended), and by
// nothing for a first poll that was never woken (the time from spawn to the
// first poll is not scheduled time); last_wake is the latest wake; busy_time
// grows at each poll end by the length of that poll, so a poll in progress
// is not in busy_time; waking a waker by value also counts as dropping it.
// A new watcher's first update is the whole state, its `now` taken before
// the state is read; while that is MaxMessageSize or more the retention of
// completed tasks is halved for good, and once it is down to the publish
// interval the watcher gets no first update at all. Updates go out only
// while some watcher is subscribed, and carry the tasks never sent to any
// watcher and the stats changed since the last update sent to any; a first
// update clears neither. dropped_events is one counter for all watchers,
// reset by every update (a first one too). With Options.ReuseSpanIDs a
// completed task's id goes to the next task spawned, as tracing's registry
// does. What it does not reproduce: the subscriber reads a task's stats
// under two locks while the task is polled on other threads, so a snapshot
// can be torn; here one mutex guards everything.
package consoleapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/profcap/profcap/internal/consolepb"
)

// Kind is the value of a task's "kind" field, as Tokio records it.
type Kind string

const (
	KindTask     Kind = "task"     // tokio::spawn
	KindBlocking Kind = "blocking" // spawn_blocking
	KindBlockOn  Kind = "block_on" // Runtime::block_on
	KindLocal    Kind = "local"    // spawn_local
)

// Location is where a task was spawned.
type Location struct {
	File   string
	Line   uint32
	Column uint32
}

func (l Location) String() string { return fmt.Sprintf("%s:%d:%d", l.File, l.Line, l.Column) }

// Caller returns the location of the caller of the function calling Caller,
// skipping skip more frames (Caller(0) in f is the line that called f).
func Caller(skip int) Location {
	_, file, line, ok := runtime.Caller(skip + 2)
	if !ok {
		return Location{File: "unknown"}
	}
	return Location{File: file, Line: uint32(line), Column: 1}
}

// Field is an extra key-value pair recorded on a task. Value may be a
// string, a bool, any integer type or anything else (sent as its %v text,
// like a Rust Debug value).
type Field struct {
	Name  string
	Value any
}

// Options configure a Server. The zero value gives console-subscriber's
// defaults.
type Options struct {
	// PublishInterval between updates (TOKIO_CONSOLE_PUBLISH_INTERVAL,
	// default 1 s).
	PublishInterval time.Duration
	// Retention of completed tasks (TOKIO_CONSOLE_RETENTION, default 1 h).
	Retention time.Duration
	// Target is the tracing target of the task spans (default "tokio::task").
	Target string
	// WatcherBuffer is how many updates may queue for one watcher before it
	// is dropped as too slow (default 1024).
	WatcherBuffer int
	// ReuseSpanIDs gives a completed task's span id to the next task
	// spawned (most recently freed first), as tracing's registry reuses the
	// slot of a closed span; the new task replaces the old one in the
	// server's state at once, even when its final stats were never sent.
	ReuseSpanIDs bool
}

// MaxMessageSize is the size the full first update is kept under by
// halving the retention of completed tasks, as console-subscriber does.
const MaxMessageSize = 4 << 20

const metaID = 1 // the one metadata id every task span uses

// Server records tasks and serves them over the console-api protocol.
type Server struct {
	opts   Options
	base   time.Time // wall clock at start, read with the monotonic offset
	grpc   *grpc.Server
	stopCh chan struct{}

	mu          sync.Mutex
	nextID      uint64
	freeIDs     []uint64         // ids of completed tasks, with ReuseSpanIDs
	tasks       map[uint64]*Task // live and retained completed tasks, by span id
	metaSent    bool             // the metadata went out in an incremental update
	dropped     uint64           // spawn events lost since the last update
	retention   time.Duration    // cut by too-large first updates, for good
	paused      bool
	watchers    map[*watcher]struct{}
	states      map[chan bool]struct{} // WatchState streams
	watchCalls  int                    // WatchUpdates streams ever opened
	started     bool
	stopped     bool
	publishDone chan struct{}
}

// service is the gRPC face of a Server (kept apart so that Server's own
// Pause and Resume take no request messages).
type service struct {
	pb.UnimplementedInstrumentServer
	s *Server
}

type watcher struct {
	ch     chan *pb.Update
	closed chan struct{} // closed when the watcher is dropped as too slow
}

var _ pb.InstrumentServer = (*service)(nil)

// NewServer returns a server with no tasks. Call Serve to publish.
func NewServer(opts Options) *Server {
	if opts.PublishInterval <= 0 {
		opts.PublishInterval = time.Second
	}
	if opts.Retention <= 0 {
		opts.Retention = time.Hour
	}
	if opts.Target == "" {
		opts.Target = "tokio::task"
	}
	if opts.WatcherBuffer <= 0 {
		opts.WatcherBuffer = 1024
	}
	s := &Server{
		opts:      opts,
		base:      time.Now(),
		stopCh:    make(chan struct{}),
		tasks:     map[uint64]*Task{},
		retention: opts.Retention,
		watchers:  map[*watcher]struct{}{},
		states:    map[chan bool]struct{}{},
	}
	s.grpc = grpc.NewServer()
	pb.RegisterInstrumentServer(s.grpc, &service{s: s})
	return s
}

// Now is the server's clock: the wall time at NewServer plus the monotonic
// time since, like console-subscriber's SystemTime anchor plus Instant.
// Every timestamp the server publishes comes from it.
func (s *Server) Now() time.Time {
	return s.base.Round(0).Add(time.Since(s.base))
}

// Serve serves the Instrument service on l (h2c) and publishes updates
// until Stop. It returns nil after Stop.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		l.Close()
		return errors.New("consoleapi: server stopped")
	}
	if !s.started {
		s.started = true
		s.publishDone = make(chan struct{})
		go s.publishLoop()
	}
	s.mu.Unlock()
	err := s.grpc.Serve(l)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop closes every connection at once (watchers see the stream break, as
// when the process exits) and stops publishing. It is safe to call twice.
func (s *Server) Stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	close(s.stopCh)
	done := s.publishDone
	s.mu.Unlock()
	s.grpc.Stop()
	if done != nil {
		<-done
	}
}

func (s *Server) publishLoop() {
	defer close(s.publishDone)
	tick := time.NewTicker(s.opts.PublishInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stopCh:
			return
		case <-tick.C:
			s.Flush()
		}
	}
}

// Flush publishes the changes since the last update now, without waiting
// for the next tick. Like console-subscriber it publishes only while some
// watcher is subscribed and not paused (the state watchers hear every tick),
// and then drops completed tasks older than the retention that have been
// sent.
func (s *Server) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	for ch := range s.states {
		select {
		case ch <- s.paused:
		default:
		}
	}
	if !s.paused && len(s.watchers) > 0 {
		upd := s.update(false)
		for w := range s.watchers {
			select {
			case w.ch <- upd:
			default: // too slow: drop it, as console-subscriber does
				delete(s.watchers, w)
				close(w.closed)
			}
		}
	}
	s.cleanup(s.Now())
}

// update builds an Update of everything (a first update) or of what was
// not sent yet (clearing the dirty flags). Called with s.mu held.
func (s *Server) update(all bool) *pb.Update {
	now := s.Now() // before the state is read, as the subscriber does for a first update
	upd := &pb.Update{
		Now:        timestamppb.New(now),
		TaskUpdate: &pb.TaskUpdate{StatsUpdate: map[uint64]*pb.Stats{}, DroppedEvents: s.dropped},
	}
	s.dropped = 0 // one counter for every watcher, reset by every update
	if all || !s.metaSent {
		upd.NewMetadata = &pb.RegisterMetadata{Metadata: []*pb.RegisterMetadata_NewMetadata{{Id: &pb.MetaId{Id: metaID}, Metadata: s.metadata()}}}
		s.metaSent = s.metaSent || !all
	}
	ids := make([]uint64, 0, len(s.tasks))
	for id := range s.tasks {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		t := s.tasks[id]
		if all || t.unsent {
			upd.TaskUpdate.NewTasks = append(upd.TaskUpdate.NewTasks, t.protoTask())
		}
		if all || t.dirty {
			upd.TaskUpdate.StatsUpdate[id] = t.protoStats()
		}
		if !all {
			t.unsent, t.dirty = false, false
		}
	}
	if !all {
		upd.Now = timestamppb.New(s.Now()) // an incremental update's now is taken after
	}
	return upd
}

// cleanup drops completed tasks older than the retention, but keeps those
// not yet sent while there are watchers. Called with s.mu held.
func (s *Server) cleanup(now time.Time) {
	for id, t := range s.tasks {
		if !t.droppedAt.IsZero() && now.Sub(t.droppedAt) > s.retention && !(t.dirty && len(s.watchers) > 0) {
			delete(s.tasks, id)
		}
	}
}

// Pause stops publishing; changes accumulate and the first update after
// Resume carries them all.
func (s *Server) Pause() {
	s.mu.Lock()
	s.paused = true
	s.mu.Unlock()
}

// Resume undoes Pause.
func (s *Server) Resume() {
	s.mu.Lock()
	s.paused = false
	s.mu.Unlock()
}

// Retention is the retention of completed tasks now: Options.Retention, or
// less once a too-large first update has cut it.
func (s *Server) Retention() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retention
}

// WatchUpdatesCalls is how many WatchUpdates streams were ever opened: each
// costs the subscriber a whole first update, so clients should open few.
func (s *Server) WatchUpdatesCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watchCalls
}

// AddDroppedEvents records n spawn events as lost, as console-subscriber
// counts them when its event buffer is full. They are reported in the next
// update's dropped_events. See SpawnLost for a task that is really missing.
func (s *Server) AddDroppedEvents(n uint64) {
	s.mu.Lock()
	s.dropped += n
	s.mu.Unlock()
}

// firstUpdate is a new watcher's first update: every task, all stats, the
// metadata; nil when it stays MaxMessageSize or more even with the
// retention cut to the publish interval. Each try that is too large halves
// the retention for good and drops the completed tasks it no longer covers,
// as console-subscriber does. Called with s.mu held.
func (s *Server) firstUpdate() *pb.Update {
	for {
		upd := s.update(true) // resets dropped_events, sent or not, as the subscriber does
		if proto.Size(upd) < MaxMessageSize {
			return upd
		}
		s.retention /= 2
		s.cleanup(s.Now())
		if s.retention <= s.opts.PublishInterval {
			s.retention = s.opts.PublishInterval
			return nil
		}
	}
}

func (s *Server) metadata() *pb.Metadata {
	return &pb.Metadata{
		Name:       "runtime.spawn",
		Target:     s.opts.Target,
		ModulePath: "tokio::task",
		Kind:       pb.Metadata_SPAN,
		Level:      pb.Metadata_TRACE,
		FieldNames: []string{"kind", "task.name", "task.id"},
	}
}

// WatchUpdates implements the Instrument service.
func (svc *service) WatchUpdates(_ *pb.InstrumentRequest, stream grpc.ServerStreamingServer[pb.Update]) error {
	s := svc.s
	w := &watcher{ch: make(chan *pb.Update, s.opts.WatcherBuffer), closed: make(chan struct{})}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return errors.New("server stopped")
	}
	s.watchCalls++
	first := s.firstUpdate()
	s.watchers[w] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watchers, w)
		s.mu.Unlock()
	}()
	if first != nil {
		if err := stream.Send(first); err != nil {
			return err
		}
	}
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopCh:
			// Stop breaks the connection (grpc.Stop, which cancels ctx):
			// ending the stream here would end it cleanly first, and the
			// watcher would see an orderly close, not a process gone.
			<-ctx.Done()
			return ctx.Err()
		case upd := <-w.ch:
			if err := stream.Send(upd); err != nil {
				return err
			}
		case <-w.closed:
			// Drain what was queued, then end the stream.
			for {
				select {
				case upd := <-w.ch:
					if err := stream.Send(upd); err != nil {
						return err
					}
				default:
					return errors.New("watcher too slow: updates were dropped")
				}
			}
		}
	}
}

// WatchState implements the Instrument service: the state now, then at
// every tick.
func (svc *service) WatchState(_ *pb.StateRequest, stream grpc.ServerStreamingServer[pb.State]) error {
	s := svc.s
	ch := make(chan bool, 1)
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return errors.New("server stopped")
	}
	ch <- s.paused
	s.states[ch] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.states, ch)
		s.mu.Unlock()
	}()
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopCh:
			<-ctx.Done()
			return ctx.Err()
		case paused := <-ch:
			t := pb.Temporality_LIVE
			if paused {
				t = pb.Temporality_PAUSED
			}
			if err := stream.Send(&pb.State{Temporality: t}); err != nil {
				return err
			}
		}
	}
}

// WatchTaskDetails implements the Instrument service as far as profcap
// uses it: NotFound for an id no task has (and for id 0 InvalidArgument, as
// console-subscriber 0.5.0 answers); for a task, one message and then
// nothing until the client goes.
func (svc *service) WatchTaskDetails(req *pb.TaskDetailsRequest, stream grpc.ServerStreamingServer[pb.TaskDetails]) error {
	s := svc.s
	id := req.GetId().GetId()
	if req.GetId() == nil || id == 0 {
		return status.Error(codes.InvalidArgument, "task_id cannot be 0")
	}
	s.mu.Lock()
	_, ok := s.tasks[id]
	now := s.Now()
	s.mu.Unlock()
	if !ok {
		return status.Error(codes.NotFound, "task not found")
	}
	if err := stream.Send(&pb.TaskDetails{TaskId: &pb.Id{Id: id}, Now: timestamppb.New(now)}); err != nil {
		return err
	}
	select {
	case <-stream.Context().Done():
	case <-s.stopCh:
	}
	return nil
}

// Pause implements the Instrument service.
func (svc *service) Pause(context.Context, *pb.PauseRequest) (*pb.PauseResponse, error) {
	svc.s.Pause()
	return &pb.PauseResponse{}, nil
}

// Resume implements the Instrument service.
func (svc *service) Resume(context.Context, *pb.ResumeRequest) (*pb.ResumeResponse, error) {
	svc.s.Resume()
	return &pb.ResumeResponse{}, nil
}
