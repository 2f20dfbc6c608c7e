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
// Accounting follows console-subscriber (console-subscriber/src/stats.rs):
// scheduled_time grows at each poll start by poll_start − max(last_wake,
// last_poll_ended), or − created_at for a first poll that was never woken;
// busy_time grows at each poll end by the length of that poll, so a poll in
// progress is not in busy_time; waking a waker by value also counts as
// dropping it.
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
	tasks       map[uint64]*Task // live and retained completed tasks, by span id
	newTasks    []*Task          // spawned since the last publish
	dropped     uint64           // events lost since the last publish
	paused      bool
	watchers    map[*watcher]struct{}
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
		opts:     opts,
		base:     time.Now(),
		stopCh:   make(chan struct{}),
		tasks:    map[uint64]*Task{},
		watchers: map[*watcher]struct{}{},
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
// for the next tick. It does nothing while paused.
func (s *Server) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused || s.stopped {
		return
	}
	now := s.Now()
	upd := &pb.Update{
		Now:        timestamppb.New(now),
		TaskUpdate: &pb.TaskUpdate{StatsUpdate: map[uint64]*pb.Stats{}, DroppedEvents: s.dropped},
	}
	s.dropped = 0
	for _, t := range s.newTasks {
		upd.TaskUpdate.NewTasks = append(upd.TaskUpdate.NewTasks, t.protoTask())
	}
	s.newTasks = nil
	for id, t := range s.tasks {
		if t.dirty {
			upd.TaskUpdate.StatsUpdate[id] = t.protoStats()
			t.dirty = false
		}
		if !t.droppedAt.IsZero() && !t.dirty && now.Sub(t.droppedAt) > s.opts.Retention {
			delete(s.tasks, id)
		}
	}
	for w := range s.watchers {
		select {
		case w.ch <- upd:
		default: // too slow: drop it, as console-subscriber does
			delete(s.watchers, w)
			close(w.closed)
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

// AddDroppedEvents records n instrumentation events as lost (what
// console-subscriber reports when its event buffer overflows). They are
// reported in the next update's dropped_events.
func (s *Server) AddDroppedEvents(n uint64) {
	s.mu.Lock()
	s.dropped += n
	s.mu.Unlock()
}

// fullUpdate is the first update of a new watcher: every task, all stats,
// the metadata. Called with s.mu held.
func (s *Server) fullUpdate() *pb.Update {
	now := s.Now()
	retention := s.opts.Retention
	for {
		upd := &pb.Update{
			Now:         timestamppb.New(now),
			TaskUpdate:  &pb.TaskUpdate{StatsUpdate: map[uint64]*pb.Stats{}},
			NewMetadata: &pb.RegisterMetadata{Metadata: []*pb.RegisterMetadata_NewMetadata{{Id: &pb.MetaId{Id: metaID}, Metadata: s.metadata()}}},
		}
		ids := make([]uint64, 0, len(s.tasks))
		for id := range s.tasks {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		completed := 0 // completed tasks included: what a shorter retention can drop
		for _, id := range ids {
			t := s.tasks[id]
			if !t.droppedAt.IsZero() {
				if now.Sub(t.droppedAt) > retention {
					continue
				}
				completed++
			}
			upd.TaskUpdate.NewTasks = append(upd.TaskUpdate.NewTasks, t.protoTask())
			upd.TaskUpdate.StatsUpdate[id] = t.protoStats()
		}
		if completed == 0 || retention < time.Millisecond || proto.Size(upd) < MaxMessageSize {
			return upd // live tasks are always sent, however large
		}
		retention /= 2
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
	first := s.fullUpdate()
	s.watchers[w] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watchers, w)
		s.mu.Unlock()
	}()
	if err := stream.Send(first); err != nil {
		return err
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
