package taskdump

import (
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// asyncProfile builds a profile shaped as the tokio-console collector's
// (collectors/tokioconsole, asyncProfile): stack name, location, kind,
// target (leaf first); values busy, scheduled, idle, polls; fields as labels
// (task.id only where the sample is one task); the tasks numeric label.
func asyncProfile(groups ...consoleGroup) *profile.Profile {
	p := &profile.Profile{SampleType: []*profile.ValueType{
		{Type: "busy", Unit: "nanoseconds"}, {Type: "scheduled", Unit: "nanoseconds"},
		{Type: "idle", Unit: "nanoseconds"}, {Type: "polls", Unit: "count"}}}
	m := &profile.Mapping{ID: 1, File: "tokio-console", HasFunctions: true}
	p.Mapping = []*profile.Mapping{m}
	loc := func(name string) *profile.Location {
		f := &profile.Function{ID: uint64(len(p.Function) + 1), Name: name}
		p.Function = append(p.Function, f)
		l := &profile.Location{ID: uint64(len(p.Location) + 1), Mapping: m, Line: []profile.Line{{Function: f}}}
		p.Location = append(p.Location, l)
		return l
	}
	for _, g := range groups {
		s := &profile.Sample{
			Location: []*profile.Location{loc(g.name), loc(g.loc), loc("task"), loc(g.target)},
			Value:    []int64{g.busy, g.sched, g.idle, 10},
			Label:    map[string][]string{"tracing.target": {"tokio::task"}},
			NumLabel: map[string][]int64{"tasks": {g.n}},
		}
		if g.id != "" {
			s.Label["task.id"] = []string{g.id}
		}
		if g.target != "svc" {
			s.Label["target"] = []string{g.target}
		}
		p.Sample = append(p.Sample, s)
	}
	return p
}

type consoleGroup struct {
	name, loc, id, target string
	n                     int64
	busy, sched, idle     int64
}

func TestJoinConsole(t *testing.T) {
	d, err := Parse(strings.NewReader(`# tokio task dump service=svc pid=1 unix_ns=1 tasks=4
task id=8 name=truth-db-waiter
  trace 0
    tokio::time::sleep::Sleep::poll_elapsed at /r/tokio-1.54.1/src/time/sleep.rs:384:16
    refsvc::db::db_query::{{closure}} at /s/src/db.rs:72:37

task id=21 name=-
  trace 0
    tokio::time::sleep::Sleep::poll_elapsed at /r/tokio-1.54.1/src/time/sleep.rs:384:16

task id=30 name=worker.step.hash

task id=40 name=lonely

`), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBuilder("svc", BuildLimits{})
	b.Add(d, time.Second, nil)
	aw := b.Profile(time.Unix(0, 0), time.Unix(1, 0), time.Second)
	as := asyncProfile(
		consoleGroup{name: "truth-db-waiter", loc: "src/truth.rs:277:52", id: "8", target: "svc", n: 1, busy: 10, sched: 20, idle: 970},
		consoleGroup{name: "orchestration.step", loc: "src/pipeline.rs:10:5", id: "21", target: "svc", n: 1, busy: 600, sched: 100, idle: 300},
		// Four tasks of one name in two groups: the mean of all of them, no location.
		consoleGroup{name: "worker.step.hash", loc: "src/a.rs:1:1", target: "svc", n: 3, busy: 30, sched: 2700, idle: 270},
		consoleGroup{name: "worker.step.hash", loc: "src/b.rs:1:1", target: "svc", n: 1, busy: 10, sched: 900, idle: 90},
	)
	n, err := JoinConsole(aw, as)
	if err != nil {
		t.Fatal(err)
	}
	if err := aw.CheckValid(); err != nil {
		t.Fatal(err)
	}
	got := map[string]*profile.Sample{}
	for _, s := range aw.Sample {
		got[label(s, LabelID)] = s
	}
	if n != 3 {
		t.Errorf("%d joined, want 3", n)
	}
	db := got["8"]
	if label(db, LabelSpawn) != "src/truth.rs:277:52" || label(db, LabelState) != "idle" || label(db, LabelKind) != "task" ||
		db.NumLabel[NumLabelIdle][0] != 970 || db.NumLabel[NumLabelBusy][0] != 10 || db.NumUnit[NumLabelScheduled][0] != "nanoseconds" {
		t.Errorf("by id: %v %v %v", db.Label, db.NumLabel, db.NumUnit)
	}
	// The dump had no name for task 21; the console names it.
	if s := got["21"]; label(s, LabelName) != "orchestration.step" || label(s, LabelState) != "busy" {
		t.Errorf("name from the console: %v", s.Label)
	}
	if s := got["30"]; label(s, LabelState) != "scheduled" || label(s, LabelSpawn) != "" || s.NumLabel[NumLabelScheduled][0] != 900 {
		t.Errorf("by name, ambiguous: %v %v", s.Label, s.NumLabel)
	}
	if s := got["40"]; s.Label[LabelState] != nil {
		t.Errorf("a task the console does not know joined: %v", s.Label)
	}
	if aw.Sample[0].Value[0] != int64(time.Second) {
		t.Errorf("values changed: %v", aw.Sample[0].Value)
	}

	// Merged profiles: a target label keeps targets apart.
	for _, s := range aw.Sample {
		s.Label["target"] = []string{"a"}
	}
	as2 := asyncProfile(consoleGroup{name: "truth-db-waiter", loc: "x:1:1", id: "8", target: "b", n: 1, idle: 5})
	for _, s := range aw.Sample {
		delete(s.Label, LabelSpawn)
	}
	if n, _ := JoinConsole(aw, as2); n != 0 {
		t.Errorf("joined %d across targets", n)
	}

	if _, err := JoinConsole(as, aw); err == nil {
		t.Error("profiles the wrong way round: no error")
	}
}
