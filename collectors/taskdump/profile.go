package taskdump

// The await profile: every task of every dump is a sample weighted by the
// time the dump stands for, so values are task-nanoseconds.

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// Sample type and labels of the await profile.
const (
	SampleType = "task-time"   // values: task-nanoseconds
	SampleUnit = "nanoseconds" //
	LabelID    = "task.id"     // tokio's task id
	LabelName  = "task.name"   // the name the task was spawned with
	// LabelOn says what the innermost await waits on, from the tokio
	// leaf future: sleep, mutex, rwlock, semaphore, channel, oneshot,
	// notify, watch, broadcast, io, join, yield, other, untraced.
	LabelOn = "await.on"
	// LabelAt is the innermost frame outside tokio, core, std and the
	// futures crates: the application's await point.
	LabelAt = "await.at"
)

// UntracedFrame is the one frame of a task the dump has no trace for: it
// waits on something tokio does not trace (a non-tokio future, the accept
// loop), or the dump (tokio's tree format of a binary without symbols)
// prints nothing.
const UntracedFrame = "[untraced await]"

// ScheduledFrame is the one frame of a task missing from dumps between two
// that have it: tokio traces only idle tasks, so a task that was woken and
// waiting for a worker (in a worker's LIFO slot) at a dump is left out; its
// time there is scheduled time, not an await.
const ScheduledFrame = "[scheduled at the dump: not traced]"

// BuildLimits bound the profile a capture holds however many dumps it takes.
type BuildLimits struct {
	// MaxFrames is the most distinct frames (default 100,000); frames
	// beyond it become one "[distinct frame limit]" frame.
	MaxFrames int
	// MaxSamples is the most distinct (task, stack) samples (default
	// 100,000); beyond it new samples lose their task.id label, so that
	// tasks of one name and stack share a sample.
	MaxSamples int
}

// DefaultBuildLimits hold a busy service's dumps over a long window (a
// binary's distinct await frames number in the thousands; tasks × stacks
// seen in a minute at 1 dump/s in the tens of thousands) in under 100 MiB.
var DefaultBuildLimits = BuildLimits{MaxFrames: 100_000, MaxSamples: 100_000}

// Symbol is what a Symbolizer knows about an address.
type Symbol struct {
	Func    string // "" when the address could not be named
	Mapping *Mapping
}

// Mapping is the executable or library an address lies in.
type Mapping struct {
	Start, Limit, Offset uint64
	File, BuildID        string
}

// Symbolizer names the absolute addresses of "?? at 0xADDR" frames.
type Symbolizer interface {
	Symbolize(addr uint64) (Symbol, bool)
}

// Builder accumulates dumps into one await profile.
type Builder struct {
	l        BuildLimits
	p        *profile.Profile
	mapping  *profile.Mapping
	funcs    map[[2]string]*profile.Function
	locs     map[locKey]*profile.Location
	maps     map[Mapping]*profile.Mapping
	samples  map[string]*profile.Sample
	over     *profile.Location
	keyBuf   []byte
	Dumps    int // dumps added
	Tasks    int // task observations added
	Untraced int // of them, without a trace
	// Scheduled counts observations of tasks missing from a dump (AddScheduled).
	Scheduled int
	Total     int64 // task-nanoseconds added
	// FrameLimitHit, SampleLimitHit say a BuildLimit was reached.
	FrameLimitHit, SampleLimitHit bool
}

type locKey struct {
	fn        *profile.Function
	line, col int64
	addr      uint64
}

// NewBuilder returns an empty builder; service names the mapping of named
// frames (the dump's service, or the target).
func NewBuilder(service string, l BuildLimits) *Builder {
	if l.MaxFrames <= 0 {
		l.MaxFrames = DefaultBuildLimits.MaxFrames
	}
	if l.MaxSamples <= 0 {
		l.MaxSamples = DefaultBuildLimits.MaxSamples
	}
	if service == "" {
		service = "tokio task dump"
	}
	m := &profile.Mapping{ID: 1, File: service, HasFunctions: true, HasFilenames: true, HasLineNumbers: true}
	return &Builder{
		l: l,
		p: &profile.Profile{
			SampleType:        []*profile.ValueType{{Type: SampleType, Unit: SampleUnit}},
			DefaultSampleType: SampleType,
			PeriodType:        &profile.ValueType{Type: SampleType, Unit: SampleUnit},
			Mapping:           []*profile.Mapping{m},
		},
		mapping: m,
		funcs:   map[[2]string]*profile.Function{},
		locs:    map[locKey]*profile.Location{},
		maps:    map[Mapping]*profile.Mapping{},
		samples: map[string]*profile.Sample{},
	}
}

func (b *Builder) function(name, file string) *profile.Function {
	k := [2]string{name, file}
	if f := b.funcs[k]; f != nil {
		return f
	}
	f := &profile.Function{ID: uint64(len(b.p.Function) + 1), Name: name, SystemName: name, Filename: file}
	b.funcs[k] = f
	b.p.Function = append(b.p.Function, f)
	return f
}

func (b *Builder) newLoc(m *profile.Mapping, addr uint64, fn *profile.Function, line, col int64) *profile.Location {
	l := &profile.Location{ID: uint64(len(b.p.Location) + 1), Mapping: m, Address: addr}
	if fn != nil {
		l.Line = []profile.Line{{Function: fn, Line: line, Column: col}}
	}
	b.p.Location = append(b.p.Location, l)
	return l
}

// overflow is the frame that stands for every frame past MaxFrames.
func (b *Builder) overflow() *profile.Location {
	if b.over == nil {
		b.FrameLimitHit = true
		b.over = b.newLoc(b.mapping, 0, b.function("[distinct frame limit]", ""), 0, 0)
	}
	return b.over
}

func (b *Builder) location(f Frame, sym Symbolizer) *profile.Location {
	if f.Func == "" && f.Addr != 0 {
		return b.addrLocation(f.Addr, sym)
	}
	name := f.Func
	if name == "" {
		name = "??"
	}
	if len(b.p.Location) >= b.l.MaxFrames {
		if fn := b.funcs[[2]string{name, f.File}]; fn != nil {
			if l := b.locs[locKey{fn: fn, line: f.Line, col: f.Col}]; l != nil {
				return l
			}
		}
		return b.overflow()
	}
	fn := b.function(name, f.File)
	k := locKey{fn: fn, line: f.Line, col: f.Col}
	if l := b.locs[k]; l != nil {
		return l
	}
	l := b.newLoc(b.mapping, 0, fn, f.Line, f.Col)
	b.locs[k] = l
	return l
}

func (b *Builder) addrLocation(addr uint64, sym Symbolizer) *profile.Location {
	k := locKey{addr: addr}
	if l := b.locs[k]; l != nil {
		return l
	}
	if len(b.p.Location) >= b.l.MaxFrames {
		return b.overflow()
	}
	var s Symbol
	if sym != nil {
		s, _ = sym.Symbolize(addr)
	}
	m := b.mapping
	if s.Mapping != nil {
		m = b.maps[*s.Mapping]
		if m == nil {
			m = &profile.Mapping{ID: uint64(len(b.p.Mapping) + 1), Start: s.Mapping.Start, Limit: s.Mapping.Limit,
				Offset: s.Mapping.Offset, File: s.Mapping.File, BuildID: s.Mapping.BuildID}
			b.maps[*s.Mapping] = m
			b.p.Mapping = append(b.p.Mapping, m)
		}
		if s.Func != "" {
			m.HasFunctions = true
		}
	}
	var fn *profile.Function
	switch {
	case s.Func != "":
		fn = b.function(s.Func, "")
	case s.Mapping == nil:
		// No mapping to name it by: keep the address as the name.
		fn = b.function(fmt.Sprintf("0x%x", addr), "")
	}
	l := b.newLoc(m, addr, fn, 0, 0)
	b.locs[k] = l
	return l
}

// Add adds every task of d with weight (the time d stands for), split
// evenly over each task's traces. sym names unnamed frames (may be nil).
func (b *Builder) Add(d *Dump, weight time.Duration, sym Symbolizer) {
	if weight <= 0 {
		return
	}
	b.Dumps++
	w := int64(weight)
	var stack []*profile.Location
	for i := range d.Tasks {
		t := &d.Tasks[i]
		b.Tasks++
		b.Total += w
		if len(t.Traces) == 0 {
			b.Untraced++
			stack = append(stack[:0], b.location(Frame{Func: UntracedFrame}, nil))
			b.add(t, stack, "untraced", "", w)
			continue
		}
		n := int64(len(t.Traces))
		for j, tr := range t.Traces {
			v := w / n
			if j == 0 {
				v += w % n // the totals stay exact
			}
			tr = qualify(tr)
			stack = stack[:0]
			for _, f := range tr {
				stack = append(stack, b.location(f, sym))
			}
			if len(stack) == 0 {
				stack = append(stack, b.location(Frame{Func: UntracedFrame}, nil))
			}
			b.add(t, stack, classify(tr), appFrame(tr), v)
		}
	}
}

// AddScheduled adds weight for a task the dump left out (ScheduledFrame).
func (b *Builder) AddScheduled(id, name string, weight time.Duration) {
	if weight <= 0 {
		return
	}
	b.Tasks++
	b.Scheduled++
	b.Total += int64(weight)
	b.add(&Task{ID: id, Name: name}, []*profile.Location{b.location(Frame{Func: ScheduledFrame}, nil)}, "scheduled", "", int64(weight))
}

func (b *Builder) add(t *Task, stack []*profile.Location, on, at string, v int64) {
	id := t.ID
	for {
		k := b.keyBuf[:0]
		k = append(k, id...)
		k = append(k, 0)
		k = append(k, t.Name...)
		k = append(k, 0)
		for _, l := range stack {
			k = strconv.AppendUint(k, l.ID, 36)
			k = append(k, ',')
		}
		b.keyBuf = k
		if s := b.samples[string(k)]; s != nil {
			s.Value[0] += v
			return
		}
		if len(b.samples) >= b.l.MaxSamples && id != "" {
			b.SampleLimitHit = true
			id = "" // share a sample with the tasks of this name and stack
			continue
		}
		s := &profile.Sample{Location: append([]*profile.Location(nil), stack...), Value: []int64{v},
			Label: map[string][]string{LabelOn: {on}}}
		if id != "" {
			s.Label[LabelID] = []string{id}
		}
		if t.Name != "" {
			s.Label[LabelName] = []string{t.Name}
		}
		if at != "" {
			s.Label[LabelAt] = []string{at}
		}
		b.samples[string(k)] = s
		b.p.Sample = append(b.p.Sample, s)
		return
	}
}

// Profile returns the profile built so far, covering [start, end], with
// the dump interval as its period. The builder must not be used after.
func (b *Builder) Profile(start, end time.Time, interval time.Duration) *profile.Profile {
	p := b.p
	p.TimeNanos = start.UnixNano()
	p.DurationNanos = max(0, end.Sub(start).Nanoseconds())
	p.Period = interval.Nanoseconds()
	// Heaviest first: a reader of the raw profile sees what matters.
	sort.SliceStable(p.Sample, func(i, j int) bool { return p.Sample[i].Value[0] > p.Sample[j].Value[0] })
	return p
}

// isRuntime reports whether a frame belongs to the runtime and libraries
// around an await (tokio, core, std, alloc, futures), not the application.
func isRuntime(f Frame) bool {
	n := strings.TrimPrefix(f.Func, "<")
	for _, p := range []string{"tokio::", "core::", "std::", "alloc::", "futures_util::", "futures_core::", "futures::", "&mut ", "F as ", "tracing::"} {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	if f.File != "" {
		for _, p := range []string{"/tokio-", "/rustc/", "/futures-util-", "/futures-core-", "/tracing-"} {
			if strings.Contains(f.File, p) {
				return true
			}
		}
		return false
	}
	// Release builds' short names ("poll", "{async_fn#0}") without a file:
	// nothing tells; an unnamed frame is not the application's either.
	return f.Func == ""
}

// appFrame is the innermost frame of tr outside the runtime, or "".
func appFrame(tr []Frame) string {
	for _, f := range tr {
		if !isRuntime(f) {
			if f.File != "" && !strings.Contains(f.Func, "::") {
				// A release build's short name: say where it is.
				return fmt.Sprintf("%s at %s:%d", f.Func, shortFile(f.File), f.Line)
			}
			return f.Func
		}
	}
	return ""
}

func shortFile(f string) string {
	if i := strings.LastIndex(f, "/src/"); i >= 0 {
		if j := strings.LastIndexByte(f[:i], '/'); j >= 0 {
			return f[j+1:]
		}
	}
	if i := strings.LastIndexByte(f, '/'); i >= 0 {
		return f[i+1:]
	}
	return f
}

// classify names what the innermost await of tr waits on, from the tokio
// frames at its leaf end (by function, or by tokio source file where the
// build gives short names).
func classify(tr []Frame) string {
	var zone []Frame
	for _, f := range tr {
		if !isRuntime(f) {
			break
		}
		zone = append(zone, f)
	}
	has := func(subs ...string) bool {
		for _, f := range zone {
			for _, s := range subs {
				if strings.Contains(f.Func, s) || strings.Contains(f.File, s) {
					return true
				}
			}
		}
		return false
	}
	switch {
	case len(zone) == 0:
		return "other"
	case has("sync::mutex", "sync/mutex.rs"):
		return "mutex"
	case has("sync::rwlock", "sync/rwlock"):
		return "rwlock"
	case has("sync::mpsc", "sync/mpsc/"):
		return "channel"
	case has("sync::oneshot", "sync/oneshot.rs"):
		return "oneshot"
	case has("sync::watch", "sync/watch.rs"):
		return "watch"
	case has("sync::broadcast", "sync/broadcast.rs"):
		return "broadcast"
	case has("batch_semaphore", "sync::semaphore", "sync/semaphore.rs"):
		return "semaphore"
	case has("sync::notify", "sync/notify.rs"):
		return "notify"
	case has("time::sleep", "time/sleep.rs", "time::interval", "time/interval.rs", "time::timeout", "time/timeout.rs"):
		return "sleep"
	case has("runtime::io", "runtime/io/", "tokio::io::", "/src/io/", "tokio::net::", "/src/net/"):
		return "io"
	case has("task::join", "runtime/task/join.rs", "JoinHandle", "JoinSet", "join_set"):
		return "join"
	case has("yield_now", "task::coop", "task/coop/", "yield_now.rs"):
		return "yield"
	}
	return "other"
}

// qualify names a release build's short frames ("{async_fn#0}", from the
// line tables of an inlined async fn) by the generic argument of the frame
// that polls them where it names their future: "{async_fn#0}" polled by
// "poll<refsvc::pipeline::truth_db_waiter::{async_fn_env#0}>" is
// "refsvc::pipeline::truth_db_waiter::{async_fn#0}". tr is not changed; a
// copy is returned when a frame is renamed.
func qualify(tr []Frame) []Frame {
	out := tr
	for i := 0; i+1 < len(tr); i++ {
		f := tr[i]
		if !strings.HasPrefix(f.Func, "{") || strings.Contains(f.Func, "::") {
			continue
		}
		base, _, _ := strings.Cut(f.Func, "<") // "{async_fn#0}<T>" → "{async_fn#0}"
		kind, num, ok := strings.Cut(strings.Trim(base, "{}"), "#")
		if !ok {
			continue
		}
		env := "::{" + kind + "_env#" + num + "}"
		outer := tr[i+1].Func
		j := strings.Index(outer, env)
		if j < 0 {
			continue
		}
		k := strings.LastIndexAny(outer[:j], "<, ") + 1
		path := outer[k:j]
		if path == "" || strings.ContainsAny(path, "<>") {
			continue
		}
		if &out[0] == &tr[0] {
			out = append([]Frame(nil), tr...)
		}
		out[i].Func = path + "::" + f.Func
	}
	return out
}
