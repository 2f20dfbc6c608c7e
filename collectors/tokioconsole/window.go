package tokioconsole

// The window arithmetic of the tokio-console collector: a state fed with
// console-api Updates, two snapshots of it (window start and end) and the
// async profile and lints computed from their difference. It is kept free of
// gRPC so that it can be fuzzed with arbitrary decoded Updates.

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
	selfWakePercent   = 50          // self-wakes lint: more than this share of wakes
	neverYieldedAfter = time.Second // never-yielded lint: one poll at least this long
	largeFutureBytes  = 1024        // large-future lint: size.bytes at least this
)

// consoleState is what a watcher knows after applying a series of Updates.
type consoleState struct {
	meta     map[uint64]*pb.Metadata
	live     map[uint64]*consoleTask // by proto id (span id): unique among live tasks only
	all      []*consoleTask          // every task ever seen, in order of arrival
	now      time.Time               // the last update's clock
	updates  int                     // updates applied
	afterMk  int                     // updates applied after markStart
	started  bool
	startNow time.Time
	dropped  uint64 // dropped_events summed after markStart
}

type consoleTask struct {
	id    uint64
	task  *pb.Task
	cur   *pb.Stats // latest cumulative snapshot
	start *pb.Stats // snapshot at markStart (nil: not yet spawned then)
}

func newConsoleState() *consoleState {
	return &consoleState{meta: map[uint64]*pb.Metadata{}, live: map[uint64]*consoleTask{}}
}

// maxConsoleTasks bounds the tasks one capture remembers, so that a
// misbehaving peer cannot grow memory without limit.
const maxConsoleTasks = 1 << 20

var errNoNow = errors.New("update has no 'now' timestamp")

// apply folds one Update into the state.
func (s *consoleState) apply(u *pb.Update) error {
	if u == nil || u.GetNow() == nil {
		return errNoNow
	}
	if err := u.GetNow().CheckValid(); err != nil {
		return fmt.Errorf("update 'now': %w", err)
	}
	s.now = u.GetNow().AsTime()
	s.updates++
	if s.started {
		s.afterMk++
	}
	for _, nm := range u.GetNewMetadata().GetMetadata() {
		if nm.GetId() != nil && nm.GetMetadata() != nil {
			s.meta[nm.GetId().GetId()] = nm.GetMetadata()
		}
	}
	tu := u.GetTaskUpdate()
	if tu == nil {
		return nil
	}
	if s.started {
		s.dropped = satAddU(s.dropped, tu.GetDroppedEvents())
	}
	stats := tu.GetStatsUpdate()
	for _, nt := range tu.GetNewTasks() {
		id := nt.GetId().GetId()
		st := stats[id]
		if st == nil {
			continue // the CLI drops a new task whose stats are not in the same update
		}
		if old := s.live[id]; old != nil {
			if sameTime(old.cur.GetCreatedAt(), st.GetCreatedAt()) {
				continue // sent again (a full update after an incremental one)
			}
			delete(s.live, id) // the span id was reused by a new task
		}
		if len(s.all) >= maxConsoleTasks {
			continue
		}
		ct := &consoleTask{id: id, task: nt, cur: st}
		s.live[id] = ct
		s.all = append(s.all, ct)
	}
	for id, st := range stats {
		if ct := s.live[id]; ct != nil && st != nil {
			ct.cur = st
		}
	}
	return nil
}

func sameTime(a, b interface {
	GetSeconds() int64
	GetNanos() int32
}) bool {
	return a.GetSeconds() == b.GetSeconds() && a.GetNanos() == b.GetNanos()
}

// markStart takes the window-start snapshot: the state as it is now.
func (s *consoleState) markStart() {
	s.started = true
	s.startNow = s.now
	s.afterMk = 0
	s.dropped = 0
	for _, ct := range s.all {
		ct.start = ct.cur
	}
}

// taskTimes are the CLI's view of one task at one instant.
type taskTimes struct {
	busy, scheduled   time.Duration
	polls             uint64
	wakes, selfWakes  uint64
	running, awakened bool
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

// times computes busy, scheduled and polls of st as seen at now, with the
// CLI's extrapolation (tokio-console/src/state/tasks.rs): a poll in progress
// counts as busy up to now; a task woken and not polled since counts as
// scheduled up to now, from the later of the wake and the end of its last
// poll (the interval console-subscriber adds at the next poll start). A
// task never polled nor woken counts as scheduled since its creation, as
// the subscriber will count it at its first poll.
func times(st *pb.Stats, now time.Time) taskTimes {
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
	created, hasCreated := tsTime(st.GetCreatedAt(), st.GetCreatedAt() != nil)
	dropped := st.GetDroppedAt() != nil
	tt.running = hasLPS && (!hasLPE || lps.After(lpe))
	tt.awakened = tt.polls == 0 || (hasLW && (!hasLPS || lw.After(lps)))
	if dropped {
		tt.running = false
		return tt
	}
	switch {
	case tt.running:
		tt.busy = satAdd(tt.busy, nonNeg(now.Sub(lps)))
	case hasLW && (!hasLPS || lw.After(lps)):
		since := lw
		if hasLPE && lpe.After(since) {
			since = lpe
		}
		tt.scheduled = satAdd(tt.scheduled, nonNeg(now.Sub(since)))
	case !hasLPS && tt.polls == 0 && hasCreated:
		tt.scheduled = satAdd(tt.scheduled, nonNeg(now.Sub(created)))
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
	fields          map[string]string // all fields, as text, and the span's tracing.target
}

func (s *consoleState) describe(ct *consoleTask) taskDesc {
	d := taskDesc{fields: map[string]string{}}
	t := ct.task
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
	Warnings   []string     // lint warnings, each starting with WarningPrefix
	Dropped    uint64       // dropped_events summed over the window
}

type windowTask struct {
	desc                   taskDesc
	busy, scheduled, idle  time.Duration
	polls                  uint64
	spawnedIn, finishedIn  bool
	currentPoll            time.Duration // length of a poll in progress at End
	running, awakened      bool
	wakerCount             uint64
	windowWakes, selfWakes uint64
}

// window computes, for every task alive in [startNow, now], the change in
// busy time, scheduled time and polls, and idle = time alive in the window −
// busy − scheduled, all on the subscriber's clock.
func (s *consoleState) window() consoleWindow {
	t1, t2 := s.startNow, s.now
	cw := consoleWindow{Start: t1, End: t2, Dropped: s.dropped}
	if t2.Before(t1) {
		t2 = t1
	}
	for _, ct := range s.all {
		st := ct.cur
		created, hasCreated := tsTime(st.GetCreatedAt(), st.GetCreatedAt() != nil)
		droppedAt, hasDropped := tsTime(st.GetDroppedAt(), st.GetDroppedAt() != nil)
		lo, hi := t1, t2
		if hasCreated && created.After(lo) {
			lo = created
		}
		if hasDropped && droppedAt.Before(hi) {
			hi = droppedAt
		}
		alive := nonNeg(hi.Sub(lo))
		var f1 taskTimes
		if ct.start != nil {
			f1 = times(ct.start, t1)
		}
		f2 := times(st, t2)
		wt := windowTask{
			busy:        nonNeg(f2.busy - f1.busy),
			scheduled:   nonNeg(f2.scheduled - f1.scheduled),
			polls:       subU(f2.polls, f1.polls),
			running:     f2.running,
			awakened:    f2.awakened,
			wakerCount:  subU(st.GetWakerClones(), st.GetWakerDrops()),
			windowWakes: subU(f2.wakes, f1.wakes),
			selfWakes:   subU(f2.selfWakes, f1.selfWakes),
			spawnedIn:   ct.start == nil,
			finishedIn:  hasDropped && !droppedAt.Before(t1),
		}
		if alive == 0 && wt.polls == 0 && wt.busy == 0 && wt.scheduled == 0 {
			continue // not alive in the window
		}
		if wt.busy > alive {
			wt.busy = alive
		}
		if wt.scheduled > alive-wt.busy {
			wt.scheduled = alive - wt.busy
		}
		wt.idle = alive - wt.busy - wt.scheduled
		if f2.running {
			if lps, ok := tsTime(st.GetPollStats().GetLastPollStarted(), st.GetPollStats().GetLastPollStarted() != nil); ok {
				wt.currentPoll = nonNeg(t2.Sub(lps))
			}
		}
		wt.desc = s.describe(ct)
		cw.Tasks = append(cw.Tasks, wt)
		cw.Warnings = append(cw.Warnings, lints(wt, !hasDropped)...)
	}
	sort.Strings(cw.Warnings)
	if cw.Dropped > 0 {
		cw.Warnings = append(cw.Warnings, fmt.Sprintf("%sdropped-events: the subscriber lost %d events during the window: stats may be incomplete (raise TOKIO_CONSOLE_BUFFER_CAPACITY)", bundle.WarningPrefix, cw.Dropped))
	}
	return cw
}

// lints are the console's warnings for one task over the window.
func lints(wt windowTask, live bool) []string {
	d := wt.desc
	w := func(lint, format string, args ...any) string {
		return fmt.Sprintf("%s%s: task %s at %s: %s", bundle.WarningPrefix, lint, d.name, d.loc, fmt.Sprintf(format, args...))
	}
	var out []string
	if !isBlocking(d.kind) {
		if wt.windowWakes > 0 && wt.selfWakes*100 > selfWakePercent*wt.windowWakes {
			out = append(out, w("self-wakes", "%d of its %d wakes in the window (%d%%) were self-wakes", wt.selfWakes, wt.windowWakes, wt.selfWakes*100/wt.windowWakes))
		}
		if live && wt.wakerCount == 0 && !wt.running && !wt.awakened {
			out = append(out, w("lost-waker", "is idle with no waker left: nothing can wake it again"))
		}
		if wt.running && wt.currentPoll >= neverYieldedAfter {
			out = append(out, w("never-yielded", "has been in one poll for %v without yielding", wt.currentPoll.Round(time.Millisecond)))
		}
	}
	if v, ok := d.fields["size.bytes"]; ok {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil && n >= largeFutureBytes {
			out = append(out, w("large-future", "its future is %d bytes (>= %d): consider Box::pin", n, largeFutureBytes))
		}
		if o, ok := d.fields["original_size.bytes"]; ok && o != v {
			out = append(out, w("auto-boxed-future", "its future was %s bytes and was boxed by the runtime", o))
		}
	}
	return out
}

// asyncProfile turns the window into an "async" profile: sample types busy,
// scheduled, idle (nanoseconds) and polls (count); one sample per task name
// and spawn location with the stack, root first, target → kind → location →
// name; task fields shared by all the aggregated tasks become labels.
func (cw consoleWindow) asyncProfile(target string) *profile.Profile {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{
			{Type: "busy", Unit: "nanoseconds"},
			{Type: "scheduled", Unit: "nanoseconds"},
			{Type: "idle", Unit: "nanoseconds"},
			{Type: "polls", Unit: "count"},
		},
		DefaultSampleType: "busy",
		TimeNanos:         cw.Start.UnixNano(),
		DurationNanos:     int64(nonNeg(cw.End.Sub(cw.Start))),
		Comments:          append([]string(nil), cw.Warnings...),
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
					Value:    make([]int64, 4),
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
		v[0] = int64(satAdd(time.Duration(v[0]), wt.busy))
		v[1] = int64(satAdd(time.Duration(v[1]), wt.scheduled))
		v[2] = int64(satAdd(time.Duration(v[2]), wt.idle))
		if wt.polls > math.MaxInt64 || uint64(v[3]) > math.MaxInt64-wt.polls {
			v[3] = math.MaxInt64
		} else {
			v[3] += int64(wt.polls)
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
