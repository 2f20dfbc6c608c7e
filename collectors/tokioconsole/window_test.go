package tokioconsole

import (
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	pb "github.com/profcap/profcap/internal/consolepb"
)

// Synthetic updates, to check the arithmetic exactly. Times are ms after t0.

var testMeta = &pb.RegisterMetadata{Metadata: []*pb.RegisterMetadata_NewMetadata{{
	Id: &pb.MetaId{Id: 1}, Metadata: &pb.Metadata{Target: "tokio::task", FieldNames: []string{"task.id"}},
}}}

// field is a task field as console-subscriber sends it (StrName).
func field(name, v string) *pb.Field {
	return &pb.Field{Name: &pb.Field_StrName{StrName: name}, Value: &pb.Field_DebugVal{DebugVal: v}, MetadataId: &pb.MetaId{Id: 1}}
}

func kindTask(id uint64, name, kind string, extra ...*pb.Field) *pb.Task {
	t := newTask(id, name)
	t.Fields = append(t.Fields, field("kind", kind))
	t.Fields = append(t.Fields, extra...)
	return t
}

// run applies the updates, taking the start snapshot after the first.
func run(t *testing.T, ups ...*pb.Update) (*consoleState, consoleWindow, map[string]windowTask) {
	t.Helper()
	st := newConsoleState()
	for i, u := range ups {
		if err := st.apply(u); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			st.markStart()
		}
	}
	cw := st.window()
	got := map[string]windowTask{}
	for _, wt := range cw.Tasks {
		got[wt.desc.name] = wt
	}
	if err := cw.asyncProfile("svc").CheckValid(); err != nil {
		t.Error(err)
	}
	return st, cw, got
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func checkTimes(t *testing.T, got map[string]windowTask, name string, busy, sched, first, idle time.Duration, polls uint64) {
	t.Helper()
	wt, ok := got[name]
	if !ok {
		t.Errorf("%s: not in the window", name)
		return
	}
	if wt.busy != busy || wt.scheduled != sched || wt.firstWait != first || wt.idle != idle || wt.polls != polls {
		t.Errorf("%s: busy/scheduled/first-poll/idle/polls = %v/%v/%v/%v/%d, want %v/%v/%v/%v/%d",
			name, wt.busy, wt.scheduled, wt.firstWait, wt.idle, wt.polls, busy, sched, first, idle, polls)
	}
}

func TestConsoleWindowArithmetic(t *testing.T) {
	_, cw, got := run(t,
		&pb.Update{ // full state at 1000 ms: "a" polling since 900, "b" woken at 950, "d" never polled
			Now: at(1000), NewMetadata: testMeta,
			TaskUpdate: &pb.TaskUpdate{
				NewTasks: []*pb.Task{newTask(1, "a"), newTask(2, "b"), newTask(3, "old"), newTask(5, "d")},
				StatsUpdate: map[uint64]*pb.Stats{
					1: {CreatedAt: at(0), PollStats: &pb.PollStats{Polls: 3, FirstPoll: at(100), LastPollStarted: at(900), LastPollEnded: at(800), BusyTime: dur(300)}, ScheduledTime: dur(100)},
					2: {CreatedAt: at(500), LastWake: at(950), PollStats: &pb.PollStats{Polls: 1, FirstPoll: at(600), LastPollStarted: at(600), LastPollEnded: at(700), BusyTime: dur(100)}, ScheduledTime: dur(0)},
					3: {CreatedAt: at(0), DroppedAt: at(10), PollStats: &pb.PollStats{}, ScheduledTime: dur(0)},
					5: {CreatedAt: at(500), PollStats: &pb.PollStats{}, ScheduledTime: dur(0)},
				},
			},
		},
		&pb.Update{ // at 2000 ms: "a" ended its poll at 1200 and idles; "b" ran 1100..1500 and finished; "c" was born at 1800 and is in its first poll since 1900
			Now: at(2000),
			TaskUpdate: &pb.TaskUpdate{
				NewTasks:      []*pb.Task{newTask(4, "c")},
				DroppedEvents: 5,
				StatsUpdate: map[uint64]*pb.Stats{
					1: {CreatedAt: at(0), PollStats: &pb.PollStats{Polls: 3, FirstPoll: at(100), LastPollStarted: at(900), LastPollEnded: at(1200), BusyTime: dur(600)}, ScheduledTime: dur(100)},
					2: {CreatedAt: at(500), DroppedAt: at(1500), LastWake: at(950), PollStats: &pb.PollStats{Polls: 2, FirstPoll: at(600), LastPollStarted: at(1100), LastPollEnded: at(1500), BusyTime: dur(500)}, ScheduledTime: dur(150)},
					4: {CreatedAt: at(1800), PollStats: &pb.PollStats{Polls: 1, FirstPoll: at(1900), LastPollStarted: at(1900)}, ScheduledTime: dur(0)},
				},
			},
		},
	)
	// a: busy 600 − (300 + 100 in progress) = 200; idle 1000 − 200
	checkTimes(t, got, "a", ms(200), 0, 0, ms(800), 0)
	// b: scheduled 150 − (0 + 50 pending since the wake) = 100; busy 400; alive 500
	checkTimes(t, got, "b", ms(400), ms(100), 0, 0, 1)
	// c: 100 from spawn to its first poll (which console-subscriber does not
	// count), then 100 busy in it
	checkTimes(t, got, "c", ms(100), ms(100), ms(100), 0, 1)
	// d: never polled: the whole window waiting for its first poll
	checkTimes(t, got, "d", 0, ms(1000), ms(1000), 0, 0)
	if _, ok := got["old"]; ok {
		t.Errorf("a task completed before the window is in it")
	}
	if cw.Dropped != 5 || len(cw.Missing) != 1 || !strings.Contains(cw.Missing[0], "lost 5 spawn events during the window") {
		t.Errorf("dropped %d, missing %q", cw.Dropped, cw.Missing)
	}
	p := cw.asyncProfile("svc")
	for _, s := range p.Sample {
		if s.Location[0].Line[0].Function.Name == "c" && (s.Value[1] != int64(ms(100)) || s.Value[4] != int64(ms(100))) {
			t.Errorf("c: scheduled %d first_poll_delay %d", s.Value[1], s.Value[4])
		}
	}
}

// TestConsoleFirstUpdateClamp: the first update's now is taken before its
// stats are read, so they can show polls that began or ended after it.
func TestConsoleFirstUpdateClamp(t *testing.T) {
	_, _, got := run(t,
		&pb.Update{Now: at(1000), NewMetadata: testMeta, TaskUpdate: &pb.TaskUpdate{
			NewTasks: []*pb.Task{newTask(1, "late"), newTask(2, "ended")},
			StatsUpdate: map[uint64]*pb.Stats{
				// a poll that began at 1005, after now
				1: {CreatedAt: at(0), PollStats: &pb.PollStats{Polls: 4, FirstPoll: at(1), LastPollStarted: at(1005), LastPollEnded: at(990), BusyTime: dur(200)}, ScheduledTime: dur(0)},
				// a poll 990..1010 already in busy_time: 10 of it after now
				2: {CreatedAt: at(0), PollStats: &pb.PollStats{Polls: 2, FirstPoll: at(1), LastPollStarted: at(990), LastPollEnded: at(1010), BusyTime: dur(500)}, ScheduledTime: dur(0)},
			},
		}},
		&pb.Update{Now: at(2000), TaskUpdate: &pb.TaskUpdate{StatsUpdate: map[uint64]*pb.Stats{
			1: {CreatedAt: at(0), PollStats: &pb.PollStats{Polls: 4, FirstPoll: at(1), LastPollStarted: at(1005), LastPollEnded: at(1020), BusyTime: dur(215)}, ScheduledTime: dur(0)},
		}}},
	)
	checkTimes(t, got, "late", ms(15), 0, 0, ms(985), 0)
	checkTimes(t, got, "ended", ms(10), 0, 0, ms(990), 0)
}

// TestConsoleTornRead: stats read while a poll began between the
// subscriber's two locks (scheduled_time grew, the poll count did not) get
// no pending scheduled time, which would count the wait twice.
func TestConsoleTornRead(t *testing.T) {
	_, _, got := run(t,
		&pb.Update{Now: at(1000), NewMetadata: testMeta, TaskUpdate: &pb.TaskUpdate{
			NewTasks: []*pb.Task{newTask(1, "torn")},
			StatsUpdate: map[uint64]*pb.Stats{
				1: {CreatedAt: at(0), LastWake: at(900), PollStats: &pb.PollStats{Polls: 5, FirstPoll: at(1), LastPollStarted: at(800), LastPollEnded: at(850), BusyTime: dur(100)}, ScheduledTime: dur(100)},
			},
		}},
		&pb.Update{Now: at(2000), TaskUpdate: &pb.TaskUpdate{StatsUpdate: map[uint64]*pb.Stats{
			// a poll began at 1600: scheduled_time has 100 + (1600 − 900), the poll stats do not have it yet
			1: {CreatedAt: at(0), LastWake: at(900), PollStats: &pb.PollStats{Polls: 5, FirstPoll: at(1), LastPollStarted: at(800), LastPollEnded: at(850), BusyTime: dur(100)}, ScheduledTime: dur(800)},
		}}},
	)
	// scheduled 1000..1600; the poll since 1600 is unknown to the snapshot (idle)
	checkTimes(t, got, "torn", 0, ms(600), 0, ms(400), 0)
}

// TestConsoleSpanIDReuse: a new task announced with the span id of one
// whose end was never seen: the old one is not kept alive nor extrapolated.
func TestConsoleSpanIDReuse(t *testing.T) {
	st, cw, got := run(t,
		&pb.Update{Now: at(1000), NewMetadata: testMeta, TaskUpdate: &pb.TaskUpdate{
			NewTasks:    []*pb.Task{newTask(7, "old")},
			StatsUpdate: map[uint64]*pb.Stats{7: {CreatedAt: at(0), PollStats: &pb.PollStats{Polls: 1, FirstPoll: at(10), LastPollStarted: at(900)}, ScheduledTime: dur(0)}},
		}},
		&pb.Update{Now: at(2000), TaskUpdate: &pb.TaskUpdate{
			NewTasks:    []*pb.Task{newTask(7, "new")},
			StatsUpdate: map[uint64]*pb.Stats{7: {CreatedAt: at(1500), PollStats: &pb.PollStats{Polls: 1, FirstPoll: at(1500), LastPollStarted: at(1500), LastPollEnded: at(1600), BusyTime: dur(100)}, ScheduledTime: dur(0)}},
		}},
		&pb.Update{Now: at(3000)},
	)
	if wt, ok := got["old"]; ok && (wt.busy != 0 || wt.idle != 0) {
		t.Errorf("old: busy %v idle %v after its span id was reused, want nothing past the last update that showed it", wt.busy, wt.idle)
	}
	checkTimes(t, got, "new", ms(100), 0, 0, ms(1400), 1)
	if st.reused != 1 || !hasWarning(cw.Warnings, "warning: span-id-reused: 1 tasks ended unseen") {
		t.Errorf("reused %d, warnings %q", st.reused, cw.Warnings)
	}
	for _, w := range cw.Warnings {
		if strings.Contains(w, "never-yielded") {
			t.Errorf("a lost task is linted as running: %s", w)
		}
	}
}

// TestConsoleNoFirstUpdate: the first message is an incremental update
// (the subscriber's state was too large): stats of tasks it announced to an
// earlier watcher are kept, as unannounced tasks, and the result says what
// is missing.
func TestConsoleNoFirstUpdate(t *testing.T) {
	st, cw, got := run(t,
		&pb.Update{Now: at(1000), TaskUpdate: &pb.TaskUpdate{
			NewTasks: []*pb.Task{newTask(2, "fresh")},
			StatsUpdate: map[uint64]*pb.Stats{
				1: {CreatedAt: at(0), PollStats: &pb.PollStats{Polls: 9, FirstPoll: at(1), LastPollStarted: at(990), LastPollEnded: at(995), BusyTime: dur(100)}, ScheduledTime: dur(0)},
				2: {CreatedAt: at(900), PollStats: &pb.PollStats{Polls: 1, FirstPoll: at(950), LastPollStarted: at(950), LastPollEnded: at(960), BusyTime: dur(10)}, ScheduledTime: dur(0)},
			},
		}},
		&pb.Update{Now: at(2000), TaskUpdate: &pb.TaskUpdate{StatsUpdate: map[uint64]*pb.Stats{
			1: {CreatedAt: at(0), PollStats: &pb.PollStats{Polls: 10, FirstPoll: at(1), LastPollStarted: at(1500), LastPollEnded: at(1550), BusyTime: dur(150)}, ScheduledTime: dur(0)},
		}}},
	)
	if !st.noFirstUpdate {
		t.Fatal("no first update not noticed")
	}
	checkTimes(t, got, "unannounced span 1", ms(50), 0, 0, ms(950), 1)
	if _, ok := got["fresh"]; !ok {
		t.Errorf("the task announced in the first message is missing")
	}
	if len(cw.Missing) != 1 || !strings.Contains(cw.Missing[0], "the subscriber sent no first update") || !strings.Contains(cw.Missing[0], "1 tasks that changed are known only by their stats") {
		t.Errorf("missing %q", cw.Missing)
	}
	if !hasWarning(cw.Warnings, "warning: no-first-update: ") {
		t.Errorf("warnings %q", cw.Warnings)
	}
	// the same first message with the metadata and every task announced is a full state
	full := newConsoleState()
	full.apply(&pb.Update{Now: at(1000), NewMetadata: testMeta, TaskUpdate: &pb.TaskUpdate{NewTasks: []*pb.Task{newTask(2, "fresh")}, StatsUpdate: map[uint64]*pb.Stats{2: {CreatedAt: at(900)}}}})
	if full.noFirstUpdate {
		t.Errorf("a full first update taken for an incremental one")
	}
}

// TestConsoleNoScheduledTime: a subscriber that reports no scheduled time
// gets busy and scheduled_or_idle, and a warning, not all of it as idle.
func TestConsoleNoScheduledTime(t *testing.T) {
	_, cw, _ := run(t,
		&pb.Update{Now: at(1000), NewMetadata: testMeta, TaskUpdate: &pb.TaskUpdate{
			NewTasks:    []*pb.Task{newTask(1, "a")},
			StatsUpdate: map[uint64]*pb.Stats{1: {CreatedAt: at(0), PollStats: &pb.PollStats{Polls: 1, FirstPoll: at(1), LastPollStarted: at(1), LastPollEnded: at(2), BusyTime: dur(1)}}},
		}},
		&pb.Update{Now: at(2000)},
	)
	p := cw.asyncProfile("svc")
	var types []string
	for _, st := range p.SampleType {
		types = append(types, st.Type)
	}
	if strings.Join(types, " ") != "busy scheduled_or_idle polls" || p.Sample[0].Value[1] != int64(ms(1000)) {
		t.Errorf("types %v values %v", types, p.Sample[0].Value)
	}
	if !hasWarning(cw.Warnings, "warning: no-scheduled-time: ") {
		t.Errorf("warnings %q", cw.Warnings)
	}
}

// TestConsoleLints: the CLI's rules and thresholds.
func TestConsoleLints(t *testing.T) {
	st := func(polls uint64, lps, lpe int, busy int, wakes, self uint64) *pb.Stats {
		ps := &pb.PollStats{Polls: polls, FirstPoll: at(0), LastPollStarted: at(lps), BusyTime: dur(busy)}
		if lpe >= 0 {
			ps.LastPollEnded = at(lpe)
		}
		return &pb.Stats{CreatedAt: at(0), PollStats: ps, ScheduledTime: dur(0), Wakes: wakes, SelfWakes: self, WakerClones: 1, LastWake: at(1)}
	}
	_, cw, _ := run(t,
		&pb.Update{Now: at(1000), NewMetadata: testMeta, TaskUpdate: &pb.TaskUpdate{
			NewTasks: []*pb.Task{
				kindTask(1, "selfish", "task"),      // 51%: warns
				kindTask(2, "almost", "task"),       // 50.9%, truncated to 50: does not
				kindTask(3, "blk-self", "blocking"), // blocking: skipped
				kindTask(4, "stuck", "task"),        // one poll, 1.5 s busy: never-yielded
				kindTask(5, "slow", "task"),         // third poll 1.2 s in: long-poll, not never-yielded
				kindTask(6, "big", "task", field("size.bytes", "4096")),
				kindTask(7, "big-blk", "blocking", field("size.bytes", "4096"), field("original_size.bytes", "8192")), // no large-future; auto-boxed
			},
			StatsUpdate: map[uint64]*pb.Stats{
				1: st(2, 10, 20, 5, 100, 51),
				2: st(2, 10, 20, 5, 1000, 509),
				3: st(2, 10, 20, 5, 10, 10),
				4: st(1, 0, -1, 0, 0, 0),
				5: st(3, 300, 200, 100, 0, 0),
				6: st(1, 5, 6, 1, 0, 0),
				7: st(1, 5, 6, 1, 0, 0),
			},
		}},
		&pb.Update{Now: at(1500)},
	)
	want := map[string]bool{
		"self-wakes: task selfish": true, "self-wakes: task almost": false, "self-wakes: task blk-self": false,
		"never-yielded: task stuck": true, "never-yielded: task slow": false, "long-poll: task slow": true,
		"large-future: task big ": true, "large-future: task big-blk": false, "auto-boxed-future: task big-blk": true,
	}
	for k, v := range want {
		if got := hasWarning(cw.Warnings, "warning: "+k); got != v {
			t.Errorf("%q: warned %v, want %v (warnings %q)", k, got, v, cw.Warnings)
		}
	}
}

func hasWarning(ws []string, prefix string) bool {
	for _, w := range ws {
		if strings.HasPrefix(w, prefix) {
			return true
		}
	}
	return false
}

var _ = profile.Profile{}

// TestConsoleSubscriberLag: updates whose newest announced task is always
// seconds old mean the subscriber is behind; a quiet service whose tasks
// are announced within an interval is not.
func TestConsoleSubscriberLag(t *testing.T) {
	mk := func(lagMs int) *consoleState {
		st := newConsoleState()
		for i := 0; i < 6; i++ {
			now := 1000 * (i + 1)
			id := uint64(i + 1)
			st.apply(&pb.Update{Now: at(now), NewMetadata: testMeta, TaskUpdate: &pb.TaskUpdate{
				NewTasks:    []*pb.Task{newTask(id, "t")},
				StatsUpdate: map[uint64]*pb.Stats{id: {CreatedAt: at(now - lagMs), PollStats: &pb.PollStats{}, ScheduledTime: dur(0)}},
			}})
			if i == 0 {
				st.markStart()
			}
		}
		return st
	}
	if lag, ok := mk(3000).behind(); !ok || lag != 3*time.Second {
		t.Errorf("3 s behind: %v %v", lag, ok)
	}
	if _, ok := mk(900).behind(); ok {
		t.Errorf("a subscriber that keeps up taken for one behind")
	}
	if cw := mk(3000).window(); len(cw.Missing) == 0 || !strings.Contains(cw.Missing[0], "announces tasks 3s late or more") {
		t.Errorf("missing %q", cw.Missing)
	}
}
