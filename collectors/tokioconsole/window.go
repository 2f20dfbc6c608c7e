package tokioconsole

// The window arithmetic of the tokio-console collector: a state fed with
// console-api Updates, two snapshots of it (window start and end) and the
// async profile and lints computed from their difference. It is kept free of
// gRPC so that it can be fuzzed with arbitrary decoded Updates.
//
// What console-subscriber (0.5.0, console-subscriber/src) does that this
// code depends on, each checked against its source:
//
//   - stats.rs PollStats::start_poll adds poll_start − max(last_wake,
//     last_poll_ended) to scheduled_time, and nothing when neither is set:
//     the time from spawn to the first poll is not in scheduled_time (tokio
//     schedules a new task without waking it). last_wake is the latest wake
//     (max), so a second wake while queued moves the start later.
//   - stats.rs TaskStats::to_proto reads the poll timestamps under one lock
//     and last_wake and scheduled_time under a second one, while the task
//     goes on being polled on other threads.
//   - aggregator/mod.rs takes the first update's `now` before it serialises
//     the state, and every later update's `now` after.
//   - aggregator/mod.rs add_instrument_subscription halves the retention
//     (for good) while the first update is 4 MiB or more, and sends no first
//     update at all once the retention is down to the publish interval; later
//     updates carry only what is "dirty" (tasks never sent to any watcher, and
//     stats changed since the last update sent to any watcher).
//   - lib.rs send_stats counts into dropped_events the spawn events (and
//     callsite registrations) that did not fit in the event buffer: such a
//     task is never announced; stats are shared memory and never lost.
//   - aggregator/mod.rs drains its event buffer with recv_now_or_never, a
//     tokio mpsc poll_recv that tokio's cooperative budget stops after 128
//     events per wake; it wakes at each publish tick, and at every event
//     sent once the buffer is half full. A service emitting more than 128
//     events (spawns, resources, async ops, poll ops) per publish interval
//     is announced late: the lag grows until the buffer is half full
//     (51,200 events by default) and stays there. Stats of tasks already
//     announced are shared memory, so they are current.
//   - span ids come from tracing's registry and are reused once a span
//     closes; the aggregator's maps are keyed by them, so a new task can
//     replace a completed one whose final stats were never sent.

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	pb "github.com/profcap/profcap/internal/consolepb"
)

// Lint thresholds: the tokio-console CLI's defaults (tokio-console/src/warnings.rs).
const (
	selfWakePercent   = 50          // self-wakes: the truncated percentage above this
	neverYieldedAfter = time.Second // never-yielded: busy at least this in its only poll
	largeFutureBytes  = 1024        // large-future: size.bytes at least this
)

// consoleState is what a watcher knows after applying a series of Updates.
type consoleState struct {
	meta     map[uint64]*pb.Metadata
	live     map[uint64]*consoleTask // by proto id (span id): unique among live tasks only
	pending  map[uint64]*pb.Task     // announced without stats in the same update, waiting for them
	all      []*consoleTask          // every task ever seen, in order of arrival
	now      time.Time               // the last update's clock
	prevNow  time.Time               // the update before it
	updates  int                     // updates applied
	afterMk  int                     // updates applied after markStart
	started  bool
	startNow time.Time

	// snapshots of every task's stats: the last update before the window
	// (snapB), the first (snapS) and the last (snapL) in it; the update
	// after the window is cur
	snapAt [nSnaps]time.Time
	has    [nSnaps]bool

	dropped       uint64 // dropped_events summed after markStart
	droppedBefore uint64 // dropped_events up to and including the start snapshot

	noFirstUpdate bool // the first message was not the subscriber's full state
	firstTasks    int  // tasks announced in the first message
	unannounced   int  // tasks known only by their stats
	reused        int  // tasks whose span id was reused before their end was seen
	noSchedTime   bool // stats without scheduled_time: a subscriber before 0.1.9/0.2.0
	truncated     int  // tasks not kept: maxConsoleTasks reached

	// announcement lag, over the updates after markStart that announced
	// tasks: now − the newest created_at among them
	lagMin, lagLast time.Duration
	lagUpdates      int
	gaps            []time.Duration // between updates after markStart
}

type consoleTask struct {
	id         uint64
	task       *pb.Task          // nil: never announced (known by its stats only)
	cur        *pb.Stats         // latest cumulative snapshot
	racy       bool              // cur was read while a poll began (see racyRead)
	snap       [nSnaps]*pb.Stats // the snapshots (nil: not known then)
	snapRacy   [nSnaps]bool
	lostAt     time.Time // non-zero: its span id went to a new task; known up to here
	firstKnown time.Time // now of the update that first carried it
}

func newConsoleState() *consoleState {
	return &consoleState{meta: map[uint64]*pb.Metadata{}, live: map[uint64]*consoleTask{}, pending: map[uint64]*pb.Task{}}
}

// maxConsoleTasks bounds the tasks one capture remembers, so that a
// misbehaving peer cannot grow memory without limit.
const maxConsoleTasks = 1 << 20

// maxPending bounds the announced tasks waiting for their stats.
const maxPending = 1 << 14

var errNoNow = errors.New("update has no 'now' timestamp")

// apply folds one Update into the state.
func (s *consoleState) apply(u *pb.Update) error {
	if u == nil || u.GetNow() == nil {
		return errNoNow
	}
	if err := u.GetNow().CheckValid(); err != nil {
		return fmt.Errorf("update 'now': %w", err)
	}
	s.prevNow, s.now = s.now, u.GetNow().AsTime()
	s.updates++
	if s.started {
		s.afterMk++
		if len(s.gaps) < 1<<16 {
			s.gaps = append(s.gaps, s.now.Sub(s.prevNow))
		}
	}
	for _, nm := range u.GetNewMetadata().GetMetadata() {
		if nm.GetId() != nil && nm.GetMetadata() != nil {
			s.meta[nm.GetId().GetId()] = nm.GetMetadata()
		}
	}
	tu := u.GetTaskUpdate()
	stats := tu.GetStatsUpdate()
	if s.updates == 1 {
		// The full state (Include::All) carries every metadata and, for
		// every task, both the task and its stats. An update with no
		// metadata or with stats of tasks it does not announce is an
		// incremental one: the subscriber sent no first update.
		announced := map[uint64]bool{}
		for _, nt := range tu.GetNewTasks() {
			announced[nt.GetId().GetId()] = true
		}
		full := len(u.GetNewMetadata().GetMetadata()) > 0
		for id := range stats {
			if !announced[id] {
				full = false
				break
			}
		}
		s.noFirstUpdate = !full
		s.firstTasks = len(tu.GetNewTasks())
	}
	if tu == nil {
		return nil
	}
	if s.started {
		s.dropped = satAddU(s.dropped, tu.GetDroppedEvents())
	} else {
		s.droppedBefore = satAddU(s.droppedBefore, tu.GetDroppedEvents())
	}
	if s.started {
		var newest time.Time
		for _, nt := range tu.GetNewTasks() {
			if c, ok := tsTime(stats[nt.GetId().GetId()].GetCreatedAt(), stats[nt.GetId().GetId()].GetCreatedAt() != nil); ok && c.After(newest) {
				newest = c
			}
		}
		if !newest.IsZero() {
			lag := nonNeg(s.now.Sub(newest))
			if s.lagUpdates == 0 || lag < s.lagMin {
				s.lagMin = lag
			}
			s.lagLast = lag
			s.lagUpdates++
		}
	}
	seen := map[uint64]bool{}
	for _, nt := range tu.GetNewTasks() {
		id := nt.GetId().GetId()
		st := stats[id]
		if st == nil {
			// The CLI drops such a task; keep it until its stats come.
			if len(s.pending) < maxPending {
				s.pending[id] = nt
			}
			continue
		}
		seen[id] = true
		s.upsert(id, nt, st)
	}
	for id, st := range stats {
		if seen[id] || st == nil {
			continue
		}
		nt := s.pending[id]
		delete(s.pending, id)
		s.upsert(id, nt, st)
	}
	return nil
}

// upsert applies one task's stats (and its announcement, nt, if any).
func (s *consoleState) upsert(id uint64, nt *pb.Task, st *pb.Stats) {
	if st.GetPollStats().GetPolls() > 0 && st.GetScheduledTime() == nil {
		s.noSchedTime = true
	}
	if old := s.live[id]; old != nil {
		if sameTime(old.cur.GetCreatedAt(), st.GetCreatedAt()) {
			if old.task == nil && nt != nil {
				old.task = nt // announced late
				s.unannounced--
			}
			old.racy = racyRead(old.cur, st)
			old.cur = st
			return
		}
		// The span id now names another task: the old one ended, unseen
		// unless its last stats say so. Its state is known up to the
		// update before this one (it was unchanged through it) and it
		// ended before the new task was created.
		delete(s.live, id)
		if old.cur.GetDroppedAt() == nil {
			s.reused++
			old.lostAt = s.prevNow
			if created, ok := tsTime(st.GetCreatedAt(), st.GetCreatedAt() != nil); ok && (old.lostAt.IsZero() || created.Before(old.lostAt)) {
				old.lostAt = created
			}
			if old.lostAt.IsZero() {
				old.lostAt = s.now
			}
		}
	}
	if len(s.all) >= maxConsoleTasks {
		s.truncated++
		return
	}
	ct := &consoleTask{id: id, task: nt, cur: st, firstKnown: s.now}
	if nt == nil {
		s.unannounced++
	}
	s.live[id] = ct
	s.all = append(s.all, ct)
}

// racyRead reports whether the new snapshot was read while a poll began
// between the subscriber's two locks (stats.rs TaskStats::to_proto): its
// scheduled_time grew, which happens only at a poll start, yet its poll
// count and last poll start did not change. The snapshot then looks woken
// and not yet polled although the wake→poll interval is already in
// scheduled_time: extrapolating it would count that interval twice.
func racyRead(prev, cur *pb.Stats) bool {
	if prev == nil || prev.GetScheduledTime() == nil || cur.GetScheduledTime() == nil {
		return false
	}
	pp, cp := prev.GetPollStats(), cur.GetPollStats()
	return pbDur(cur.GetScheduledTime()) > pbDur(prev.GetScheduledTime()) &&
		cp.GetPolls() == pp.GetPolls() &&
		sameTime(cp.GetLastPollStarted(), pp.GetLastPollStarted())
}

func sameTime(a, b interface {
	GetSeconds() int64
	GetNanos() int32
}) bool {
	return a.GetSeconds() == b.GetSeconds() && a.GetNanos() == b.GetNanos()
}

// The snapshots a capture takes; see consoleState.snapAt.
const (
	snapB = iota
	snapS
	snapL
	nSnaps
)

// snapshot records every task's current stats as snapshot k. The first
// snapshot before or at the window's start starts the accounting of
// dropped events, lag and gaps (those before it are "before the window").
func (s *consoleState) snapshot(k int) {
	if k == snapB || (k == snapS && !s.has[snapS]) {
		s.droppedBefore = satAddU(s.droppedBefore, s.dropped)
		s.dropped = 0
		if k == snapB || !s.has[snapB] {
			s.lagUpdates, s.lagMin, s.lagLast, s.gaps = 0, 0, 0, nil
		}
		s.started = true
		s.startNow = s.now
		s.afterMk = 0
	}
	s.has[k], s.snapAt[k] = true, s.now
	for _, ct := range s.all {
		ct.snap[k], ct.snapRacy[k] = ct.cur, ct.racy
	}
}

// markStart takes the window-start snapshot: the state as it is now.
func (s *consoleState) markStart() { s.snapshot(snapS) }

// taskTimes are one task's figures at one instant.
type taskTimes struct {
	busy      time.Duration // in polls, including one in progress
	scheduled time.Duration // console-subscriber's scheduled_time, with a pending wake
	firstWait time.Duration // spawn → first poll (profcap's own, see times)
	polls     uint64
	wakes     uint64
	selfWakes uint64
	running   bool
	awakened  bool
}

// tsTime converts a timestamp, reporting false when it is absent or invalid.
func tsTime(t interface {
	GetSeconds() int64
	GetNanos() int32
	IsValid() bool
	AsTime() time.Time
}, present bool) (time.Time, bool) {
	if !present || !t.IsValid() {
		return time.Time{}, false
	}
	return t.AsTime(), true
}

func pbDur(d interface {
	GetSeconds() int64
	GetNanos() int32
}) time.Duration {
	sec, ns := d.GetSeconds(), int64(d.GetNanos())
	if sec < 0 || ns < 0 {
		return 0
	}
	if sec > math.MaxInt64/int64(time.Second)-1 {
		return math.MaxInt64
	}
	return satAdd(time.Duration(sec)*time.Second, time.Duration(ns))
}

// times computes a task's figures at now from one snapshot st.
//
// busy and scheduled follow the CLI (tokio-console/src/state/tasks.rs): a
// poll in progress counts as busy up to now; a task woken after its last
// poll started and not running counts as scheduled up to now, from the
// later of the wake and the end of its last poll (the interval
// console-subscriber adds at the next poll start; the CLI starts it at the
// wake, which double-counts a task that woke itself during its poll).
//
// firstWait is the time from spawn to the first poll (up to now if it has
// not been polled), which console-subscriber does not count as scheduled;
// when a task was woken before its first poll the subscriber counts from
// that wake, so firstWait ends there. (That is seen only while last_wake is
// still that wake; a tokio task cannot be woken before its first poll, as
// no waker of it exists yet.)
//
// Clamps, because a snapshot can be later than now (the first update's now
// is taken before its stats are read) or torn (racy): a poll that began
// after now is not counted as running; the part of the last poll after now
// is taken back out of busy_time; no interval is ever negative; a torn
// snapshot gets no pending scheduled time.
func times(st *pb.Stats, now time.Time, racy bool) taskTimes {
	var tt taskTimes
	if st == nil {
		return tt
	}
	ps := st.GetPollStats()
	tt.polls = ps.GetPolls()
	tt.wakes, tt.selfWakes = st.GetWakes(), st.GetSelfWakes()
	tt.busy = pbDur(ps.GetBusyTime())
	tt.scheduled = pbDur(st.GetScheduledTime())
	lps, hasLPS := tsTime(ps.GetLastPollStarted(), ps.GetLastPollStarted() != nil)
	lpe, hasLPE := tsTime(ps.GetLastPollEnded(), ps.GetLastPollEnded() != nil)
	lw, hasLW := tsTime(st.GetLastWake(), st.GetLastWake() != nil)
	fp, hasFP := tsTime(ps.GetFirstPoll(), ps.GetFirstPoll() != nil)
	created, hasCreated := tsTime(st.GetCreatedAt(), st.GetCreatedAt() != nil)
	droppedAt, dropped := tsTime(st.GetDroppedAt(), st.GetDroppedAt() != nil)
	if dropped && droppedAt.Before(now) {
		now = droppedAt
	}
	tt.running = hasLPS && (!hasLPE || lps.After(lpe))
	tt.awakened = tt.polls == 0 || (hasLW && (!hasLPS || lw.After(lps)))
	switch {
	case tt.running && lps.After(now):
		tt.running = false // began after now
	case tt.running:
		tt.busy = satAdd(tt.busy, nonNeg(now.Sub(lps)))
	case hasLPE && lpe.After(now) && hasLPS:
		// the last poll ended after now: take the part after now back
		from := lps
		if now.After(from) {
			from = now
			tt.running = true // at now it was in that poll
		}
		tt.busy = nonNeg(tt.busy - lpe.Sub(from))
	}
	if dropped {
		tt.running = false
	}
	if !tt.running && !racy && !dropped && hasLW && (!hasLPS || lw.After(lps)) {
		since := lw
		if hasLPE && lpe.After(since) {
			since = lpe
		}
		tt.scheduled = satAdd(tt.scheduled, nonNeg(now.Sub(since)))
	}
	if hasCreated {
		end := now
		if tt.polls > 0 && hasFP && fp.Before(end) {
			end = fp
		}
		if hasLW && lw.Before(end) && (!hasFP || lw.Before(fp)) {
			end = lw // woken before its first poll: the subscriber counts from the wake
		}
		if tt.polls > 0 && !hasFP {
			end = created // polled, but when is unknown: count nothing
		}
		tt.firstWait = nonNeg(end.Sub(created))
	}
	return tt
}

func nonNeg(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d
}

func satAdd(a, b time.Duration) time.Duration {
	if a > 0 && b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}

func satAddU(a, b uint64) uint64 {
	if b > math.MaxUint64-a {
		return math.MaxUint64
	}
	return a + b
}

func subU(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// taskDesc is what names a task in the profile.
type taskDesc struct {
	name, kind, loc string
	unannounced     bool              // known by its stats only
	fields          map[string]string // all fields, as text, and the span's tracing.target
}

// unannouncedName names the tasks known only by their stats.
const unannouncedName = "unannounced"

func (s *consoleState) describe(ct *consoleTask) taskDesc {
	d := taskDesc{fields: map[string]string{}}
	t := ct.task
	if t == nil {
		// One sample each: their span ids are all that tells them apart.
		d.name, d.kind, d.unannounced = fmt.Sprintf("%s span %d", unannouncedName, ct.id), "unknown", true
		d.loc = "spawned before profcap connected"
		d.fields["span.id"] = strconv.FormatUint(ct.id, 10)
		return d
	}
	for _, f := range t.GetFields() {
		name := f.GetStrName()
		if _, ok := f.GetName().(*pb.Field_NameIdx); ok {
			md := s.meta[f.GetMetadataId().GetId()]
			if md == nil {
				md = s.meta[t.GetMetadata().GetId()]
			}
			idx := f.GetNameIdx()
			if md != nil && idx < uint64(len(md.GetFieldNames())) {
				name = md.GetFieldNames()[idx]
			}
		}
		if name == "" {
			continue
		}
		var v string
		switch x := f.GetValue().(type) {
		case *pb.Field_DebugVal:
			v = x.DebugVal
		case *pb.Field_StrVal:
			v = x.StrVal
		case *pb.Field_U64Val:
			v = strconv.FormatUint(x.U64Val, 10)
		case *pb.Field_I64Val:
			v = strconv.FormatInt(x.I64Val, 10)
		case *pb.Field_BoolVal:
			v = strconv.FormatBool(x.BoolVal)
		}
		d.fields[clean(name, 128)] = clean(v, 512)
	}
	d.name = d.fields["task.name"]
	if d.name == "" {
		d.name = "unnamed"
	}
	d.kind = d.fields["kind"]
	if d.kind == "" {
		d.kind = "task"
		if t.GetKind() == pb.Task_BLOCKING {
			d.kind = "blocking"
		}
	}
	if l := t.GetLocation(); l.GetFile() != "" {
		d.loc = fmt.Sprintf("%s:%d:%d", clean(l.GetFile(), 512), l.GetLine(), l.GetColumn())
	} else if v := d.fields["spawn.location"]; v != "" {
		d.loc = v
	} else {
		d.loc = "unknown location"
	}
	if md := s.meta[t.GetMetadata().GetId()]; md != nil && md.GetTarget() != "" {
		d.fields["tracing.target"] = clean(md.GetTarget(), 256)
	}
	return d
}

// clean makes outside text safe for labels and frames: valid UTF-8, no
// control characters, bounded length.
func clean(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}

func isBlocking(kind string) bool { return kind == "blocking" || kind == "block_on" }

// consoleWindow is the result of comparing the two snapshots.
type consoleWindow struct {
	Start, End time.Time
	Tasks      []windowTask // every task alive in the window
	Warnings   []string     // warnings, each starting with WarningPrefix
	Missing    []string     // what the profile lacks, for Result.Err (no prefix)
	Dropped    uint64       // dropped_events summed over the window
	NoSched    bool         // the subscriber reports no scheduled time
	First      string       // what the first message was, for the note
}

type windowTask struct {
	desc                   taskDesc
	busy, scheduled, idle  time.Duration
	firstWait              time.Duration // the part of scheduled from spawn to the first poll
	polls                  uint64
	spawnedIn, finishedIn  bool
	lost                   bool          // its span id was reused; counted up to lostAt
	currentPoll            time.Duration // length of a poll in progress at End
	running, awakened      bool
	totalPolls             uint64
	totalBusy              time.Duration
	wakerCount             uint64
	wakes, selfWakes       uint64 // over the task's life (what the CLI's lint reads)
	windowWakes, windowSWk uint64 // in the window
}

// window computes the window between the start snapshot and the last
// update: windowAt with no instants.
func (s *consoleState) window() consoleWindow { return s.windowAt(time.Time{}, time.Time{}) }

// point is a task's figures at one snapshot.
type point struct {
	tt taskTimes
	at time.Time
}

// points are the instants with snapshots, in time order: snapB, snapS,
// snapL (those taken) and the last update.
func (s *consoleState) points() []int {
	var ks []int
	var last time.Time
	for k := 0; k < nSnaps; k++ {
		if s.has[k] && (len(ks) == 0 || s.snapAt[k].After(last)) {
			ks, last = append(ks, k), s.snapAt[k]
		}
	}
	if len(ks) == 0 || s.now.After(last) {
		ks = append(ks, -1) // the last update
	}
	return ks
}

func (s *consoleState) at(k int) time.Time {
	if k < 0 {
		return s.now
	}
	return s.snapAt[k]
}

// figures are ct's figures at snapshot k (-1: the last update). A task not
// known then but created before counts as waiting for its first poll since
// its spawn, if it had not been polled by then (spawned just before the
// snapshot's update was made, or announced late).
func (s *consoleState) figures(ct *consoleTask, k int) taskTimes {
	at := s.at(k)
	st, racy := ct.cur, ct.racy
	if k >= 0 {
		st, racy = ct.snap[k], ct.snapRacy[k]
	}
	if st != nil {
		return times(st, at, racy)
	}
	var tt taskTimes
	cur := ct.cur
	created, ok := tsTime(cur.GetCreatedAt(), cur.GetCreatedAt() != nil)
	if ok && created.Before(at) {
		fp, hasFP := tsTime(cur.GetPollStats().GetFirstPoll(), cur.GetPollStats().GetFirstPoll() != nil)
		if !hasFP || !fp.Before(at) {
			tt.firstWait = at.Sub(created)
		}
	}
	return tt
}

// estimate is ct's figures at instant x, interpolated linearly between
// the snapshots around it (cumulative figures: exact for a task whose rates
// are steady between the two, and nothing is lost or counted twice for one
// whose are not); before the first or after the last, those.
func (s *consoleState) estimate(ct *consoleTask, ks []int, x time.Time) taskTimes {
	if !x.After(s.at(ks[0])) {
		return s.figures(ct, ks[0])
	}
	for i := 0; i+1 < len(ks); i++ {
		a, b := s.at(ks[i]), s.at(ks[i+1])
		if x.After(b) {
			continue
		}
		fa, fb := s.figures(ct, ks[i]), s.figures(ct, ks[i+1])
		if k := ks[i]; k >= 0 && ct.snap[k] == nil {
			// not known at a: born after it? then from its birth, at zero
			if c, ok := tsTime(ct.cur.GetCreatedAt(), ct.cur.GetCreatedAt() != nil); ok && c.After(a) {
				if !x.After(c) {
					return taskTimes{}
				}
				a, fa = c, taskTimes{}
			}
		}
		f := float64(x.Sub(a)) / float64(b.Sub(a))
		lerp := func(u, v time.Duration) time.Duration {
			return nonNeg(u + time.Duration(math.Round(float64(nonNeg(v-u))*f)))
		}
		out := fb
		out.busy, out.scheduled, out.firstWait = lerp(fa.busy, fb.busy), lerp(fa.scheduled, fb.scheduled), lerp(fa.firstWait, fb.firstWait)
		out.polls = fa.polls + uint64(math.Round(float64(subU(fb.polls, fa.polls))*f))
		out.wakes = fa.wakes + uint64(math.Round(float64(subU(fb.wakes, fa.wakes))*f))
		out.selfWakes = fa.selfWakes + uint64(math.Round(float64(subU(fb.selfWakes, fa.selfWakes))*f))
		return out
	}
	return s.figures(ct, ks[len(ks)-1])
}

// windowAt computes, for every task alive in the window, the change in
// busy time, scheduled time, first-poll wait and polls, and idle = time
// alive in the window − busy − scheduled, all on the subscriber's clock.
// The window is [w0, w1] where snapshots surround those instants (each
// task's figures interpolated there), else it shrinks to the snapshots: with
// no instants given, from the start snapshot (snapS, else snapB) to the
// last update.
func (s *consoleState) windowAt(w0, w1 time.Time) consoleWindow {
	ks := s.points()
	first, last := s.at(ks[0]), s.now
	t1, t2 := w0, w1
	if t1.IsZero() {
		t1 = s.startNow
		if s.has[snapS] {
			t1 = s.snapAt[snapS]
		}
	}
	if t2.IsZero() {
		t2 = last
	}
	clamp := func(x, lo, hi time.Time) time.Time {
		if x.Before(lo) {
			x = lo
		}
		if x.After(hi) {
			x = hi
		}
		return x
	}
	t1 = clamp(t1, first, last)
	t2 = clamp(t2, t1, last)
	cw := consoleWindow{Start: t1, End: t2, Dropped: s.dropped, NoSched: s.noSchedTime}
	cw.First = fmt.Sprintf("the subscriber's first update: %d tasks", s.firstTasks)
	if s.noFirstUpdate {
		cw.First = fmt.Sprintf("no first update from the subscriber (its first message, an incremental one, announced %d tasks)", s.firstTasks)
	}
	unannounced := 0
	for _, ct := range s.all {
		st := ct.cur
		created, hasCreated := tsTime(st.GetCreatedAt(), st.GetCreatedAt() != nil)
		droppedAt, hasDropped := tsTime(st.GetDroppedAt(), st.GetDroppedAt() != nil)
		end := t2
		if !ct.lostAt.IsZero() && ct.lostAt.Before(end) {
			end = ct.lostAt
		}
		lo, hi := t1, end
		if hasCreated && created.After(lo) {
			lo = created
		}
		if hasDropped && droppedAt.Before(hi) {
			hi = droppedAt
		}
		alive := nonNeg(hi.Sub(lo))
		f1 := s.estimate(ct, ks, t1)
		var f2 taskTimes
		if ct.lostAt.IsZero() {
			f2 = s.estimate(ct, ks, t2)
		} else {
			f2 = times(st, end, ct.racy) // known up to lostAt only
		}
		fl := times(st, last, ct.racy) // the latest state, for the lints
		if !ct.lostAt.IsZero() {
			fl = f2
		}
		wt := windowTask{
			busy:        nonNeg(f2.busy - f1.busy),
			scheduled:   nonNeg(f2.scheduled - f1.scheduled),
			firstWait:   nonNeg(f2.firstWait - f1.firstWait),
			polls:       subU(f2.polls, f1.polls),
			running:     fl.running && ct.lostAt.IsZero(),
			awakened:    fl.awakened,
			totalPolls:  fl.polls,
			totalBusy:   fl.busy,
			wakerCount:  subU(st.GetWakerClones(), st.GetWakerDrops()),
			wakes:       fl.wakes,
			selfWakes:   fl.selfWakes,
			windowWakes: subU(f2.wakes, f1.wakes),
			windowSWk:   subU(f2.selfWakes, f1.selfWakes),
			spawnedIn:   hasCreated && !created.Before(t1),
			finishedIn:  (hasDropped && !droppedAt.Before(t1)) || !ct.lostAt.IsZero(),
			lost:        !ct.lostAt.IsZero(),
		}
		if alive == 0 && wt.polls == 0 && wt.busy == 0 && wt.scheduled == 0 && wt.firstWait == 0 {
			continue // not alive in the window
		}
		// Never more than the time alive: busy first, then the wait for
		// the first poll, then the subscriber's scheduled time.
		wt.busy = min(wt.busy, alive)
		wt.firstWait = min(wt.firstWait, alive-wt.busy)
		wt.scheduled = min(wt.scheduled, alive-wt.busy-wt.firstWait)
		if cw.NoSched {
			wt.scheduled = 0
		}
		wt.scheduled += wt.firstWait
		wt.idle = alive - wt.busy - wt.scheduled
		if wt.running {
			if lps, ok := tsTime(st.GetPollStats().GetLastPollStarted(), st.GetPollStats().GetLastPollStarted() != nil); ok {
				wt.currentPoll = nonNeg(last.Sub(lps))
			}
		}
		wt.desc = s.describe(ct)
		if ct.task == nil {
			unannounced++
		}
		cw.Tasks = append(cw.Tasks, wt)
		cw.Warnings = append(cw.Warnings, lints(wt, !hasDropped && !wt.lost)...)
	}
	sort.Strings(cw.Warnings)
	cw.Warnings = capLints(cw.Warnings)
	warn := func(format string, args ...any) {
		cw.Warnings = append(cw.Warnings, bundle.WarningPrefix+fmt.Sprintf(format, args...))
	}
	if s.noFirstUpdate {
		msg := fmt.Sprintf("no-first-update: the subscriber sent no first update (its state is 4 MiB or more even with its retention of completed tasks cut to its publish interval, which it has now done for good): tasks it had already sent to an earlier watcher and that did not change after profcap connected are missing, and how many the console API cannot tell; %d tasks that changed are known only by their stats (samples %q)", unannounced, unannouncedName+" span N")
		warn("%s", msg)
		cw.Missing = append(cw.Missing, strings.TrimPrefix(msg, "no-first-update: "))
	} else if unannounced > 0 {
		warn("unannounced: %d tasks are known only by their stats (samples %q): the subscriber never announced them to profcap", unannounced, unannouncedName+" span N")
	}
	if s.droppedBefore > 0 {
		warn("dropped-events: the subscriber lost %d spawn events before the window (since the last update it sent to any watcher, or since it started): up to %d tasks alive in the window may be missing from it entirely (raise TOKIO_CONSOLE_BUFFER_CAPACITY)", s.droppedBefore, s.droppedBefore)
	}
	if cw.Dropped > 0 {
		msg := fmt.Sprintf("dropped-events: the subscriber lost %d spawn events during the window (its event buffer was full): up to %d tasks spawned in it are missing from the profile entirely, their time in no sample (raise TOKIO_CONSOLE_BUFFER_CAPACITY)", cw.Dropped, cw.Dropped)
		warn("%s", msg)
		cw.Missing = append(cw.Missing, strings.TrimPrefix(msg, "dropped-events: "))
	}
	if s.reused > 0 {
		warn("span-id-reused: %d tasks ended unseen: the subscriber gave their span id to a new task before it reported them completed; each is counted only up to the last update that showed it", s.reused)
	}
	if lag, ok := s.behind(); ok {
		missed := fmt.Sprintf("tasks spawned in the last %v of the window are missing", s.lagLast.Round(time.Millisecond))
		if s.lagLast >= t2.Sub(t1) {
			missed = "no task spawned in the window is in it"
		}
		msg := fmt.Sprintf("subscriber-lag: the subscriber announces tasks %v late or more (the newest task in each of its %d updates that announced any was at least that old; in its last, %v): it drains at most 128 events per wake (tokio's cooperative budget) and this service emits more per publish interval, so %s and older ones appear late (a shorter TOKIO_CONSOLE_PUBLISH_INTERVAL or a smaller TOKIO_CONSOLE_BUFFER_CAPACITY shortens the lag)", lag.Round(time.Millisecond), s.lagUpdates, s.lagLast.Round(time.Millisecond), missed)
		warn("%s", msg)
		cw.Missing = append(cw.Missing, strings.TrimPrefix(msg, "subscriber-lag: "))
	}
	if cw.NoSched {
		warn("no-scheduled-time: the subscriber reports no scheduled time (console-subscriber before 0.1.9/0.2.0): the profile has busy and scheduled_or_idle (time alive but not in a poll) instead of scheduled and idle")
	}
	if s.truncated > 0 {
		warn("too-many-tasks: %d tasks left out: profcap keeps at most %d per capture", s.truncated, maxConsoleTasks)
		cw.Missing = append(cw.Missing, fmt.Sprintf("%d tasks left out (more than %d)", s.truncated, maxConsoleTasks))
	}
	return cw
}

// maxPerLint bounds the task warnings of one lint that are listed; the
// rest are counted in one line (2,500 idle tasks all have a lost waker).
const maxPerLint = 20

func capLints(ws []string) []string {
	var out []string
	count := map[string]int{}
	var order []string
	for _, w := range ws {
		lint, _, _ := strings.Cut(strings.TrimPrefix(w, bundle.WarningPrefix), ":")
		if count[lint] == 0 {
			order = append(order, lint)
		}
		count[lint]++
		if count[lint] <= maxPerLint {
			out = append(out, w)
		}
	}
	for _, lint := range order {
		if n := count[lint] - maxPerLint; n > 0 {
			out = append(out, fmt.Sprintf("%s%s: %d more tasks (only the first %d are listed)", bundle.WarningPrefix, lint, n, maxPerLint))
		}
	}
	return out
}

// behind reports whether the subscriber announced tasks late throughout
// the window: one that keeps up announces a task at most a publish interval
// after its spawn, so in every update that announces tasks the newest is at
// most an interval old. Behind: three such updates or more, each with its
// newest task older than twice the interval (and 500 ms).
func (s *consoleState) behind() (time.Duration, bool) {
	if s.lagUpdates < 3 || len(s.gaps) == 0 {
		return 0, false
	}
	g := append([]time.Duration(nil), s.gaps...)
	sort.Slice(g, func(i, j int) bool { return g[i] < g[j] })
	interval := g[len(g)/2]
	return s.lagMin, s.lagMin > 2*interval && s.lagMin > 500*time.Millisecond
}

// lints are the tokio-console CLI's warnings (tokio-console/src/warnings.rs)
// for one task as it stands at the window's end, with the CLI's rules and
// thresholds, plus long-poll, which is profcap's own.
func lints(wt windowTask, live bool) []string {
	d := wt.desc
	if d.unannounced {
		return nil // nothing is known of its fields or kind
	}
	w := func(lint, format string, args ...any) string {
		return fmt.Sprintf("%s%s: task %s at %s: %s", bundle.WarningPrefix, lint, d.name, d.loc, fmt.Sprintf(format, args...))
	}
	var out []string
	blocking := isBlocking(d.kind)
	if !blocking && wt.wakes > 0 {
		// The CLI truncates the percentage, then compares: 50.9% does not warn.
		if pct := wt.selfWakes * 100 / wt.wakes; wt.selfWakes <= math.MaxUint64/100 && pct > selfWakePercent {
			out = append(out, w("self-wakes", "it woke itself for %d%% of its wakeups (%d of %d; %d of %d in the window)", pct, wt.selfWakes, wt.wakes, wt.windowSWk, wt.windowWakes))
		}
	}
	if !blocking && live && wt.wakerCount == 0 && !wt.running && !wt.awakened {
		out = append(out, w("lost-waker", "it is idle with no waker left: nothing can wake it again"))
	}
	if !blocking && wt.running && wt.totalPolls <= 1 && wt.totalBusy >= neverYieldedAfter {
		out = append(out, w("never-yielded", "it has not yielded since it was spawned (%v busy in its first poll)", wt.totalBusy.Round(time.Millisecond)))
	}
	if !blocking && wt.running && wt.totalPolls > 1 && wt.currentPoll >= neverYieldedAfter {
		out = append(out, w("long-poll", "it has been in one poll for %v without yielding (profcap's lint: the CLI's never-yielded only looks at a first poll)", wt.currentPoll.Round(time.Millisecond)))
	}
	if v, ok := d.fields["size.bytes"]; ok {
		n, err := strconv.ParseUint(v, 10, 64)
		if !blocking && err == nil && n >= largeFutureBytes {
			out = append(out, w("large-future", "its future is %d bytes (>= %d): consider Box::pin", n, largeFutureBytes))
		}
		if o, ok := d.fields["original_size.bytes"]; ok && o != v {
			out = append(out, w("auto-boxed-future", "its future was %s bytes and was boxed by the runtime (now %s)", o, v))
		}
	}
	return out
}

// asyncProfile turns the window into an "async" profile: sample types busy,
// scheduled (from a wake, or from spawn, to the poll), idle (nanoseconds),
// polls (count) and first_poll_delay (nanoseconds: the part of scheduled
// from spawn to the first poll); one sample per task name and spawn
// location with the stack, root first, target → kind → location → name;
// task fields shared by all the aggregated tasks become labels. With a
// subscriber that reports no scheduled time the types are busy,
// scheduled_or_idle and polls.
func (cw consoleWindow) asyncProfile(target string) *profile.Profile {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{
			{Type: "busy", Unit: "nanoseconds"},
			{Type: "scheduled", Unit: "nanoseconds"},
			{Type: "idle", Unit: "nanoseconds"},
			{Type: "polls", Unit: "count"},
			{Type: "first_poll_delay", Unit: "nanoseconds"},
		},
		DefaultSampleType: "busy",
		TimeNanos:         cw.Start.UnixNano(),
		DurationNanos:     int64(nonNeg(cw.End.Sub(cw.Start))),
		Comments:          append([]string(nil), cw.Warnings...),
	}
	if cw.NoSched {
		p.SampleType = []*profile.ValueType{
			{Type: "busy", Unit: "nanoseconds"},
			{Type: "scheduled_or_idle", Unit: "nanoseconds"},
			{Type: "polls", Unit: "count"},
		}
	}
	if target == "" {
		target = "tokio"
	}
	m := &profile.Mapping{ID: 1, File: "tokio-console", HasFunctions: true, HasFilenames: true, HasLineNumbers: true}
	p.Mapping = []*profile.Mapping{m}
	locs := map[[2]string]*profile.Location{}
	funcs := map[[2]string]*profile.Function{}
	loc := func(name, file string) *profile.Location {
		key := [2]string{name, file}
		if l := locs[key]; l != nil {
			return l
		}
		fn := funcs[key]
		if fn == nil {
			fn = &profile.Function{ID: uint64(len(p.Function) + 1), Name: name, SystemName: name, Filename: file}
			funcs[key] = fn
			p.Function = append(p.Function, fn)
		}
		l := &profile.Location{ID: uint64(len(p.Location) + 1), Mapping: m, Line: []profile.Line{{Function: fn}}}
		locs[key] = l
		p.Location = append(p.Location, l)
		return l
	}
	type group struct {
		s      *profile.Sample
		fields map[string]string
		n      int64
	}
	groups := map[[3]string]*group{}
	var order [][3]string
	add := func(v *int64, d time.Duration) { *v = int64(satAdd(time.Duration(*v), d)) }
	for _, wt := range cw.Tasks {
		d := wt.desc
		key := [3]string{d.kind, d.loc, d.name}
		g := groups[key]
		if g == nil {
			file := d.loc
			if i := strings.IndexByte(file, ':'); i > 0 {
				file = file[:i]
			}
			g = &group{
				s: &profile.Sample{
					// leaf first
					Location: []*profile.Location{loc(d.name, ""), loc(d.loc, file), loc(d.kind, ""), loc(target, "")},
					Value:    make([]int64, len(p.SampleType)),
				},
				fields: d.fields,
			}
			groups[key] = g
			order = append(order, key)
		} else {
			for k, v := range g.fields {
				if d.fields[k] != v {
					delete(g.fields, k)
				}
			}
		}
		g.n++
		v := g.s.Value
		var polls *int64
		if cw.NoSched {
			add(&v[0], wt.busy)
			add(&v[1], satAdd(wt.scheduled, wt.idle))
			polls = &v[2]
		} else {
			polls = &v[3]
			add(&v[0], wt.busy)
			add(&v[1], wt.scheduled)
			add(&v[2], wt.idle)
			add(&v[4], wt.firstWait)
		}
		if wt.polls > math.MaxInt64 || uint64(*polls) > math.MaxInt64-wt.polls {
			*polls = math.MaxInt64
		} else {
			*polls += int64(wt.polls)
		}
	}
	for _, key := range order {
		g := groups[key]
		g.s.Label = map[string][]string{}
		for k, v := range g.fields {
			if k == "task.name" || k == "kind" {
				continue // already in the stack
			}
			g.s.Label[k] = []string{v}
		}
		g.s.NumLabel = map[string][]int64{"tasks": {g.n}}
		p.Sample = append(p.Sample, g.s)
	}
	return p
}
