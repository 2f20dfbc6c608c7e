package taskdump

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/pprof/profile"
)

// Labels JoinConsole adds to await samples.
const (
	LabelSpawn        = "spawn.location"    // where the task was spawned (console)
	LabelKind         = "task.kind"         // task, blocking, block_on, local (console)
	LabelState        = "console.state"     // busy, scheduled or idle: where the task spent most of the window
	NumLabelBusy      = "console.busy"      // the task's busy time in the window, ns (a group's mean per task)
	NumLabelScheduled = "console.scheduled" // scheduled (woken, waiting for a worker), ns
	NumLabelIdle      = "console.idle"      // idle (waiting to be woken), ns
)

// consoleTask is what the async profile says about one task, or the mean
// task of a group of tasks of one name and spawn location.
type consoleTask struct {
	name, loc, kind       string
	busy, scheduled, idle int64 // summed over n tasks
	n                     int64
	ambiguous             bool // several groups share the name: no location
}

// JoinConsole adds to every sample of awaitP (an await profile from task
// dumps) what asyncP (the tokio-console collector's async profile of the
// same target and window) says about the sample's task: its spawn location
// and kind, its busy, scheduled and idle time in the window, and the state
// it spent most of the window in; and its name where the dump had none. A
// task is found by task.id where the console's sample is that one task,
// else by name (the console sums tasks of one name and location; the mean
// per task is used). Samples with a "target" label (merged profiles) match
// only samples of the same target. It returns how many samples were
// joined. Neither profile's values change.
func JoinConsole(awaitP, asyncP *profile.Profile) (int, error) {
	if awaitP == nil || asyncP == nil {
		return 0, errors.New("join: a profile is missing")
	}
	idx := map[string]int{}
	for i, st := range asyncP.SampleType {
		idx[st.Type] = i
	}
	for _, k := range []string{"busy", "scheduled", "idle"} {
		if _, ok := idx[k]; !ok {
			return 0, fmt.Errorf("join: the console profile has no %q values (sample types: %s)", k, typeList(asyncP))
		}
	}
	if len(awaitP.SampleType) == 0 || awaitP.SampleType[0].Type != SampleType {
		return 0, fmt.Errorf("join: not an await profile (sample types: %s)", typeList(awaitP))
	}
	byID := map[string]*consoleTask{}
	byName := map[string]*consoleTask{}
	for _, s := range asyncP.Sample {
		if len(s.Location) < 3 || len(s.Value) != len(asyncP.SampleType) {
			continue
		}
		ct := &consoleTask{name: frameName(s.Location[0]), loc: frameName(s.Location[1]), kind: frameName(s.Location[2])}
		if ct.name == "unnamed" {
			ct.name = ""
		}
		if ct.loc == "unknown location" {
			ct.loc = ""
		}
		n := int64(1)
		if v := s.NumLabel["tasks"]; len(v) == 1 && v[0] > 0 {
			n = v[0]
		}
		ct.busy, ct.scheduled, ct.idle = s.Value[idx["busy"]], s.Value[idx["scheduled"]], s.Value[idx["idle"]]
		ct.n = n
		tgt := label(s, "target")
		if id := label(s, LabelID); id != "" && n == 1 {
			byID[tgt+"\x00"+id] = ct
		}
		if ct.name == "" {
			continue
		}
		key := tgt + "\x00" + ct.name
		if prev := byName[key]; prev != nil {
			// Several groups of one name (spawned at several places): a
			// task of that name is one of them, which one the name does
			// not say; its times are the mean over all of them.
			sum := *prev
			sum.ambiguous = true
			sum.busy += ct.busy
			sum.scheduled += ct.scheduled
			sum.idle += ct.idle
			sum.n += ct.n
			byName[key] = &sum
			continue
		}
		cp := *ct
		byName[key] = &cp
	}
	joined := 0
	for _, s := range awaitP.Sample {
		tgt := label(s, "target")
		ct := byID[tgt+"\x00"+label(s, LabelID)]
		if ct == nil || label(s, LabelID) == "" {
			ct = byName[tgt+"\x00"+label(s, LabelName)]
			if label(s, LabelName) == "" {
				ct = nil
			}
		}
		if ct == nil {
			continue
		}
		joined++
		if s.Label == nil {
			s.Label = map[string][]string{}
		}
		if label(s, LabelName) == "" && ct.name != "" {
			s.Label[LabelName] = []string{ct.name}
		}
		if ct.loc != "" && !ct.ambiguous {
			s.Label[LabelSpawn] = []string{ct.loc}
		}
		if ct.kind != "" && !ct.ambiguous {
			s.Label[LabelKind] = []string{ct.kind}
		}
		busy, sched, idle := ct.busy/ct.n, ct.scheduled/ct.n, ct.idle/ct.n
		state := "idle"
		if busy > idle && busy >= sched {
			state = "busy"
		} else if sched > idle && sched > busy {
			state = "scheduled"
		}
		s.Label[LabelState] = []string{state}
		if s.NumLabel == nil {
			s.NumLabel = map[string][]int64{}
		}
		if s.NumUnit == nil {
			s.NumUnit = map[string][]string{}
		}
		for k, v := range map[string]int64{NumLabelBusy: busy, NumLabelScheduled: sched, NumLabelIdle: idle} {
			s.NumLabel[k] = []int64{v}
			s.NumUnit[k] = []string{"nanoseconds"}
		}
	}
	return joined, nil
}

func label(s *profile.Sample, k string) string {
	if v := s.Label[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func frameName(l *profile.Location) string {
	if l == nil || len(l.Line) == 0 || l.Line[0].Function == nil {
		return ""
	}
	return l.Line[0].Function.Name
}

func typeList(p *profile.Profile) string {
	var ts []string
	for _, st := range p.SampleType {
		ts = append(ts, st.Type+"/"+st.Unit)
	}
	return strings.Join(ts, ",")
}
