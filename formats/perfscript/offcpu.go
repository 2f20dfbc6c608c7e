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
	// EndTime is the end of the window, in the clock of the input's
	// timestamps (ns): intervals still open at the end of the input
	// (threads switched out and not yet back) are closed there, and
	// intervals that run past it are cut there (a tool stopped at the
	// window's end records on until it handles the signal; that time is
	// not the window's). 0 closes open intervals at the last timestamp
	// seen and cuts nothing.
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
	o := NewOffCPUBuilder(opt)
	rd := NewReader(r)
	for {
		ev, h, err := rd.nextSample()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		o.Time(h.Time)
		if h.Event == "PERF_RECORD_SWITCH" || h.Event == "PERF_RECORD_SWITCH_CPU_WIDE" {
			// perf record --switch-events: the thread's own switch-in.
			if bytes.HasPrefix(h.Trace, []byte("IN")) && h.TID > 0 && h.Time >= 0 {
				o.SwitchIn(h.TID, h.Time)
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
		if err := o.SchedSwitch(h, sw, func() error { return o.b.addFrames(ev.Lines) }); err != nil {
			return nil, err
		}
	}
	return o.Profile()
}

// OffCPUBuilder builds the off-CPU profile ParseOffCPU builds, from events
// given one at a time, in time order: what a reader of perf's binary
// perf.data uses to give the same profile as ParseOffCPU does of `perf
// script` text.
type OffCPUBuilder struct {
	b           *builder
	opt         OffCPUOptions
	open        map[int]*offInterval
	first, last int64
	values      []int64
}

// NewOffCPUBuilder returns an empty OffCPUBuilder.
func NewOffCPUBuilder(opt OffCPUOptions) *OffCPUBuilder {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "offcpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "offcpu", Unit: "nanoseconds"},
		Period:     1,
	}
	return &OffCPUBuilder{b: newBuilder(p), opt: opt, open: map[int]*offInterval{}, first: -1, last: -1, values: []int64{0}}
}

// Time notes the timestamp of an event of the input (any event: it bounds
// the profile's duration and closes open intervals at the end); -1 is none.
func (o *OffCPUBuilder) Time(t int64) {
	if t >= 0 {
		if o.first < 0 {
			o.first = t
		}
		if t > o.last {
			o.last = t
		}
	}
}

// SwitchIn ends the off-CPU interval of thread tid at time t (a
// PERF_RECORD_SWITCH IN of the thread).
func (o *OffCPUBuilder) SwitchIn(tid int, t int64) {
	if iv := o.open[tid]; iv != nil {
		o.emit(tid, iv, t)
		delete(o.open, tid)
	}
}

// SchedSwitch handles a sched:sched_switch event with header h (its Time
// set): the switch-in of sw.NextPID ends its interval, the switch-out of
// sw.PrevPID starts one with the event's stack, which stack sets as the
// current stack (SetStack, or the text's frame lines) when it is wanted.
func (o *OffCPUBuilder) SchedSwitch(h Header, sw SchedSwitch, stack func() error) error {
	// Switch-in first: a thread may switch out and in within one event
	// only when prev == next, which the kernel does not report.
	if iv := o.open[sw.NextPID]; iv != nil {
		o.emit(sw.NextPID, iv, h.Time)
		delete(o.open, sw.NextPID)
	}
	if sw.PrevPID == 0 {
		return nil // idle task
	}
	if o.opt.PID != 0 && h.PID >= 0 && h.PID != o.opt.PID {
		return nil
	}
	if h.TID >= 0 && h.TID != sw.PrevPID {
		// The event fires in the context of prev, so its callchain is
		// prev's; otherwise the stack is not the blocked one.
		return nil
	}
	if err := stack(); err != nil {
		return err
	}
	o.open[sw.PrevPID] = &offInterval{
		start: h.Time,
		state: sw.PrevState,
		comm:  sw.PrevComm,
		pid:   h.PID,
		stack: append([]*profile.Location(nil), o.b.stack...),
	}
	return nil
}

// SetStack makes frames (leaf first) the stack of the switch-out being
// handled; call it from SchedSwitch's stack function.
func (o *OffCPUBuilder) SetStack(frames []Frame) { o.b.setStack(frames) }

func (o *OffCPUBuilder) emit(tid int, iv *offInterval, end int64) {
	if o.opt.EndTime > 0 && end > o.opt.EndTime {
		end = o.opt.EndTime
	}
	d := end - iv.start
	if d <= 0 {
		return
	}
	st := State(iv.state)
	if st == "R" && o.opt.ExcludeRunnable {
		return
	}
	b := o.b
	b.stack = append(b.stack[:0], iv.stack...)
	if st == "R" {
		b.lines = append(b.lines[:0], profile.Line{Function: b.function(PreemptedFrame, "")})
		b.stack = append(b.stack, b.location(Frame{}, b.lines))
	}
	o.values[0] = d
	num := [][2]any{{"tid", int64(tid)}}
	if iv.pid >= 0 {
		num = append(num, [2]any{"pid", int64(iv.pid)})
	}
	b.add(o.values, [][2]string{{"thread", iv.comm}, {"state", st}}, num)
}

// Profile closes the intervals still open (unless DropOpen) and returns
// the profile, checked.
func (o *OffCPUBuilder) Profile() (*profile.Profile, error) {
	if !o.opt.DropOpen {
		end := o.last
		if o.opt.EndTime > 0 {
			end = o.opt.EndTime
		}
		// Deterministic order: by tid.
		tids := make([]int, 0, len(o.open))
		for tid := range o.open {
			tids = append(tids, tid)
		}
		slices.Sort(tids)
		for _, tid := range tids {
			o.emit(tid, o.open[tid], end)
		}
		clear(o.open)
	}
	p := o.b.p
	if o.first >= 0 {
		p.DurationNanos = o.last - o.first
	}
	if err := p.CheckValid(); err != nil {
		return nil, fmt.Errorf("perf script: building off-CPU profile: %w", err)
	}
	return p, nil
}
