package consoleapi

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/profcap/profcap/internal/consolepb"
)

// Task is one instrumented task. Its methods are safe to call from any
// goroutine; every method is a no-op after Done.
type Task struct {
	s      *Server
	id     uint64 // span id: the proto Id
	name   string
	loc    Location
	kind   Kind
	fields []Field

	// Guarded by s.mu; the cumulative stats console-subscriber keeps.
	createdAt, droppedAt         time.Time
	wakes, wakerClones           uint64
	wakerDrops, selfWakes        uint64
	lastWake                     time.Time
	polls                        uint64
	firstPoll                    time.Time
	lastPollStarted, lastPollEnd time.Time
	busy, scheduled              time.Duration
	polling                      int  // nesting depth of StartPoll
	dirty                        bool // stats changed since the last incremental update
	unsent                       bool // never sent in an incremental update
	lost                         bool // its spawn event was dropped: no watcher sees it
}

// Spawn registers a new task: name is its task.name ("" for an unnamed
// task), loc where it was spawned (see Caller), kind its kind ("" means
// KindTask). Extra fields are sent with the task (e.g. Field{"size.bytes",
// 2048} feeds the large-future lint).
func (s *Server) Spawn(name string, loc Location, kind Kind, fields ...Field) *Task {
	if kind == "" {
		kind = KindTask
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var id uint64
	if n := len(s.freeIDs); n > 0 {
		id, s.freeIDs = s.freeIDs[n-1], s.freeIDs[:n-1]
	} else {
		s.nextID++
		id = s.nextID
	}
	t := &Task{
		s: s, id: id, name: name, loc: loc, kind: kind,
		fields:    append([]Field(nil), fields...),
		createdAt: s.Now(),
		dirty:     true,
		unsent:    true,
	}
	s.tasks[t.id] = t // replaces a completed task that had this id
	return t
}

// SpawnLost is Spawn for a task whose spawn event the subscriber dropped
// (its event buffer was full): the task runs, but no watcher ever sees it,
// and the next update's dropped_events counts it. Its methods do nothing.
func (s *Server) SpawnLost(name string, loc Location, kind Kind, fields ...Field) *Task {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped++
	return &Task{s: s, name: name, loc: loc, kind: kind, lost: true, droppedAt: s.Now()}
}

// Run spawns a task at the caller's location, polls it once with fn and
// completes it: the simplest way to show a unit of work (a request step)
// as a task.
func (s *Server) Run(name string, kind Kind, fn func()) {
	t := s.Spawn(name, Caller(0), kind)
	defer t.Done()
	t.Poll(fn)
}

// ID is the task's proto id (its span id): unique for the server's
// lifetime, unless Options.ReuseSpanIDs.
func (t *Task) ID() uint64 { return t.id }

// Poll records one poll of the task: busy time is the time fn takes. A
// panic in fn still ends the poll.
func (t *Task) Poll(fn func()) {
	t.StartPoll()
	defer t.EndPoll()
	fn()
}

// StartPoll records that a poll began (for polls that do not fit Poll's
// callback shape). Every StartPoll needs one EndPoll; nested polls count once.
func (t *Task) StartPoll() {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !t.droppedAt.IsZero() {
		return
	}
	t.polling++
	if t.polling > 1 {
		return
	}
	now := s.Now()
	// scheduled_time: from the later of the last wake and the end of the
	// last poll to now; nothing for a first poll never woken (tokio
	// schedules a new task without a wake, and the subscriber counts none).
	since := t.lastWake
	if t.lastPollEnd.After(since) {
		since = t.lastPollEnd
	}
	if d := now.Sub(since); !since.IsZero() && d > 0 {
		t.scheduled += d
	}
	if t.polls == 0 {
		t.firstPoll = now
	}
	t.polls++
	t.lastPollStarted = now
	t.dirty = true
}

// EndPoll records that the poll begun by StartPoll ended.
func (t *Task) EndPoll() {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	t.endPollLocked()
}

func (t *Task) endPollLocked() {
	if !t.droppedAt.IsZero() || t.polling == 0 {
		return
	}
	t.polling--
	if t.polling > 0 {
		return
	}
	now := t.s.Now()
	if d := now.Sub(t.lastPollStarted); d > 0 {
		t.busy += d
	}
	t.lastPollEnd = now
	t.dirty = true
}

func (t *Task) wake(byValue, self bool) {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !t.droppedAt.IsZero() {
		return
	}
	t.wakes++
	if byValue {
		t.wakerDrops++ // waking by value consumes the waker
	}
	if self {
		t.selfWakes++
	}
	if now := s.Now(); now.After(t.lastWake) {
		t.lastWake = now // the latest wake, as the subscriber keeps it
	}
	t.dirty = true
}

// Wake records Waker::wake: a wake that consumes one waker.
func (t *Task) Wake() { t.wake(true, false) }

// WakeByRef records Waker::wake_by_ref: a wake that keeps the waker.
func (t *Task) WakeByRef() { t.wake(false, false) }

// SelfWake records the task waking itself from inside its own poll (as
// tokio::task::yield_now does), counted in self_wakes.
func (t *Task) SelfWake() { t.wake(false, true) }

// CloneWaker records a clone of the task's waker (e.g. when it registers
// interest in a resource).
func (t *Task) CloneWaker() {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	if t.droppedAt.IsZero() {
		t.wakerClones++
		t.dirty = true
	}
}

// DropWaker records a waker dropped without waking the task. A task whose
// wakers are all dropped while it waits can never run again: a lost waker.
func (t *Task) DropWaker() {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	if t.droppedAt.IsZero() {
		t.wakerDrops++
		t.dirty = true
	}
}

// Done records that the task completed (its future was dropped), ending a
// poll in progress first. It is safe to call twice.
func (t *Task) Done() {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !t.droppedAt.IsZero() {
		return
	}
	if t.polling > 0 {
		t.polling = 1
		t.endPollLocked()
	}
	t.droppedAt = s.Now()
	t.dirty = true
	if s.opts.ReuseSpanIDs {
		s.freeIDs = append(s.freeIDs, t.id) // the span closed: tracing may hand its id out again
	}
}

// protoTask is the Task message; called with s.mu held.
func (t *Task) protoTask() *pb.Task {
	meta := &pb.MetaId{Id: metaID}
	str := func(name, v string) *pb.Field {
		return &pb.Field{Name: &pb.Field_StrName{StrName: name}, Value: &pb.Field_DebugVal{DebugVal: v}, MetadataId: meta}
	}
	fields := []*pb.Field{
		str("kind", string(t.kind)),
		str("task.name", t.name),
		{Name: &pb.Field_StrName{StrName: "task.id"}, Value: &pb.Field_U64Val{U64Val: t.id}, MetadataId: meta},
	}
	for _, f := range t.fields {
		pf := &pb.Field{Name: &pb.Field_StrName{StrName: f.Name}, MetadataId: meta}
		switch v := f.Value.(type) {
		case string:
			pf.Value = &pb.Field_StrVal{StrVal: v}
		case bool:
			pf.Value = &pb.Field_BoolVal{BoolVal: v}
		case int:
			pf.Value = &pb.Field_I64Val{I64Val: int64(v)}
		case int64:
			pf.Value = &pb.Field_I64Val{I64Val: v}
		case int32:
			pf.Value = &pb.Field_I64Val{I64Val: int64(v)}
		case uint:
			pf.Value = &pb.Field_U64Val{U64Val: uint64(v)}
		case uint64:
			pf.Value = &pb.Field_U64Val{U64Val: v}
		case uint32:
			pf.Value = &pb.Field_U64Val{U64Val: uint64(v)}
		default:
			pf.Value = &pb.Field_DebugVal{DebugVal: fmt.Sprint(v)}
		}
		fields = append(fields, pf)
	}
	file, line, col := t.loc.File, t.loc.Line, t.loc.Column
	return &pb.Task{
		Id:       &pb.Id{Id: t.id},
		Metadata: meta,
		Kind:     pb.Task_SPAWN, // console-subscriber hard-codes SPAWN; the kind is the field
		Fields:   fields,
		Location: &pb.Location{File: &file, Line: &line, Column: &col},
	}
}

// protoStats is the cumulative Stats snapshot; called with s.mu held.
func (t *Task) protoStats() *pb.Stats {
	ts := func(x time.Time) *timestamppb.Timestamp {
		if x.IsZero() {
			return nil
		}
		return timestamppb.New(x)
	}
	return &pb.Stats{
		CreatedAt:   ts(t.createdAt),
		DroppedAt:   ts(t.droppedAt),
		Wakes:       t.wakes,
		WakerClones: t.wakerClones,
		WakerDrops:  t.wakerDrops,
		LastWake:    ts(t.lastWake),
		SelfWakes:   t.selfWakes,
		PollStats: &pb.PollStats{
			Polls:           t.polls,
			FirstPoll:       ts(t.firstPoll),
			LastPollStarted: ts(t.lastPollStarted),
			LastPollEnded:   ts(t.lastPollEnd),
			BusyTime:        durationpb.New(t.busy),
		},
		ScheduledTime: durationpb.New(t.scheduled),
	}
}
