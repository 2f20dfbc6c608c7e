package perfscript

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/google/pprof/profile"
)

// OffCPUOptions control ParseOffCPU.
type OffCPUOptions struct {
	// PID keeps only threads of this process. It needs the pid column
	// (perf script -F pid,...); on input without it every thread is kept.
	// 0 keeps all.
	PID int
	// ExcludeRunnable leaves out time a thread spent runnable but not
	// running (switched out in state R: preempted). By default that time
	// is kept, under the root frame PreemptedFrame and label state=R.
	ExcludeRunnable bool
	// EndTime closes intervals still open at the end of the input (threads
	// switched out and not yet back) at this time, in the clock of the
	// input's timestamps (ns). 0 closes them at the last timestamp seen.
	EndTime int64
	// DropOpen leaves intervals still open at the end of the input out.
	DropOpen bool
}

// PreemptedFrame is the root frame under which ParseOffCPU puts time spent
// runnable after an involuntary switch (state R), so a flame graph keeps it
// apart from voluntary blocking.
const PreemptedFrame = "[preempted: runnable, waiting for a CPU]"

// SchedSwitch is the payload of a sched:sched_switch event.
type SchedSwitch struct {
	PrevComm  string
	PrevPID   int // the thread (tid) switched out
	PrevState string
	NextComm  string
	NextPID   int // the thread switched in
}

// ParseSchedSwitch parses the trace fields of sched:sched_switch:
//
//	prev_comm=%s prev_pid=%d prev_prio=%d prev_state=%s ==> next_comm=%s next_pid=%d next_prio=%d
//
// Comms may contain spaces.
func ParseSchedSwitch(n int, trace []byte) (SchedSwitch, error) {
	var sw SchedSwitch
	bad := func(what string) error { return syntaxErr(n, trace, "sched_switch: %s", what) }
	i := bytes.Index(trace, []byte(" ==> "))
	if i < 0 || !bytes.HasPrefix(trace, []byte("prev_comm=")) {
		return sw, bad("expected 'prev_comm=… ==> next_comm=…'")
	}
	prev, next := trace[len("prev_comm="):i], trace[i+len(" ==> "):]
	j := bytes.LastIndex(prev, []byte(" prev_pid="))
	if j < 0 {
		return sw, bad("no prev_pid")
	}
	sw.PrevComm = string(prev[:j])
	f := bytes.Fields(prev[j+1:])
	for _, kv := range f {
		k, v, _ := bytes.Cut(kv, []byte("="))
		switch string(k) {
		case "prev_pid":
			p, err := strconv.Atoi(string(v))
			if err != nil {
				return sw, bad("bad prev_pid")
			}
			sw.PrevPID = p
		case "prev_state":
			sw.PrevState = string(v)
		}
	}
	if sw.PrevState == "" {
		return sw, bad("no prev_state")
	}
	if !bytes.HasPrefix(next, []byte("next_comm=")) {
		return sw, bad("no next_comm")
	}
	next = next[len("next_comm="):]
	j = bytes.LastIndex(next, []byte(" next_pid="))
	if j < 0 {
		return sw, bad("no next_pid")
	}
	sw.NextComm = string(next[:j])
	v, _, _ := bytes.Cut(next[j+len(" next_pid="):], []byte(" "))
	p, err := strconv.Atoi(string(trimRight(v)))
	if err != nil {
		return sw, bad("bad next_pid")
	}
	sw.NextPID = p
	return sw, nil
}

// State reduces a prev_state to one letter: "R+" (preempted) becomes "R".
func State(s string) string {
	if s == "" {
		return "?"
	}
	return s[:1]
}

type offInterval struct {
	start int64
	state string
	comm  string
	pid   int
	stack []*profile.Location
}

// ParseOffCPU reads perf script text of sched:sched_switch events with
// callchains and returns the time each thread spent off CPU, attributed to
// the stack at which it was switched out, in nanoseconds (sample type
// offcpu/nanoseconds). Two recordings work:
//
//   - per process: perf record -e sched:sched_switch -g --switch-events -p PID,
//     printed with perf script --show-switch-events (what the collector does);
//   - system-wide: perf record -a -e sched:sched_switch -g.
//
// As bcc's offcputime does, an interval runs from the thread's switch-out
// (the sched_switch where it is prev_pid; its callchain is the blocked
// stack) to its next switch-in (a PERF_RECORD_SWITCH IN of the thread, or a
// sched_switch where it is next_pid). Only threads seen
// switching out are counted, which is what filters system-wide input to the
// target when PID is set. Each sample has the labels thread (comm) and state
// (the prev_state letter: S sleeping, D disk, R preempted, …) and the
// numeric labels tid and pid (pid where known). Other events are ignored.
func ParseOffCPU(r io.Reader, opt OffCPUOptions) (*profile.Profile, error) {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "offcpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "offcpu", Unit: "nanoseconds"},
		Period:     1,
	}
	b := newBuilder(p)
	open := map[int]*offInterval{}
	rd := NewReader(r)
	var first, last int64 = -1, -1
	values := []int64{0}
	emit := func(tid int, iv *offInterval, end int64) {
		d := end - iv.start
		if d <= 0 {
			return
		}
		st := State(iv.state)
		if st == "R" && opt.ExcludeRunnable {
			return
		}
		b.stack = append(b.stack[:0], iv.stack...)
		if st == "R" {
			b.lines = append(b.lines[:0], profile.Line{Function: b.function(PreemptedFrame, "")})
			b.stack = append(b.stack, b.location(Frame{}, b.lines))
		}
		values[0] = d
		num := [][2]any{{"tid", int64(tid)}}
		if iv.pid >= 0 {
			num = append(num, [2]any{"pid", int64(iv.pid)})
		}
		b.add(values, [][2]string{{"thread", iv.comm}, {"state", st}}, num)
	}
	for {
		ev, h, err := rd.nextSample()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if h.Time >= 0 {
			if first < 0 {
				first = h.Time
			}
			if h.Time > last {
				last = h.Time
			}
		}
		if h.Event == "PERF_RECORD_SWITCH" || h.Event == "PERF_RECORD_SWITCH_CPU_WIDE" {
			// perf record --switch-events: the thread's own switch-in.
			if bytes.HasPrefix(h.Trace, []byte("IN")) && h.TID > 0 && h.Time >= 0 {
				if iv := open[h.TID]; iv != nil {
					emit(h.TID, iv, h.Time)
					delete(open, h.TID)
				}
			}
			continue
		}
		if BaseEvent(h.Event) != "sched:sched_switch" {
			continue
		}
		if h.Time < 0 {
			return nil, syntaxErr(ev.Line, ev.Header, "sched_switch event without a timestamp: record with the time field")
		}
		sw, err := ParseSchedSwitch(ev.Line, h.Trace)
		if err != nil {
			return nil, err
		}
		// Switch-in first: a thread may switch out and in within one event
		// only when prev == next, which the kernel does not report.
		if iv := open[sw.NextPID]; iv != nil {
			emit(sw.NextPID, iv, h.Time)
			delete(open, sw.NextPID)
		}
		if sw.PrevPID == 0 {
			continue // idle task
		}
		if opt.PID != 0 && h.PID >= 0 && h.PID != opt.PID {
			continue
		}
		if h.TID >= 0 && h.TID != sw.PrevPID {
			// The event fires in the context of prev, so its callchain is
			// prev's; otherwise the stack is not the blocked one.
			continue
		}
		if err := b.addFrames(ev.Lines); err != nil {
			return nil, err
		}
		open[sw.PrevPID] = &offInterval{
			start: h.Time,
			state: sw.PrevState,
			comm:  sw.PrevComm,
			pid:   h.PID,
			stack: append([]*profile.Location(nil), b.stack...),
		}
	}
	if !opt.DropOpen {
		end := last
		if opt.EndTime > end {
			end = opt.EndTime
		}
		// Deterministic order: by tid.
		tids := make([]int, 0, len(open))
		for tid := range open {
			tids = append(tids, tid)
		}
		slices.Sort(tids)
		for _, tid := range tids {
			emit(tid, open[tid], end)
		}
	}
	if first >= 0 {
		p.DurationNanos = last - first
	}
	if err := p.CheckValid(); err != nil {
		return nil, fmt.Errorf("perf script: building off-CPU profile: %w", err)
	}
	return p, nil
}
