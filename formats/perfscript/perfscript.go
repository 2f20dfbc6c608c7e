// Package perfscript reads the text that `perf script` prints.
//
// One streaming Reader splits the text into events (a header line and the
// frame lines under it); three consumers sit on it:
//
//   - Collapse prints folded stacks byte-identical to FlameGraph's
//     stackcollapse-perf.pl;
//   - Parse builds a *profile.Profile of on-CPU samples;
//   - ParseOffCPU builds an off-CPU profile from sched:sched_switch events.
//
// The format is described in docs/perf.md; the header and frame rules follow
// the Firefox profiler's importer (src/profile-logic/import/linux-perf.ts)
// where stackcollapse-perf.pl compatibility is not at stake.
package perfscript

import (
	"bytes"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"

	"github.com/google/pprof/profile"
)

// SyntaxError reports input that is not perf script text, with the line
// where that was found.
type SyntaxError struct {
	Line int    // 1-based line number
	Msg  string // what is wrong
	Text string // the offending line (possibly cut short)
}

func (e *SyntaxError) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("perf script: line %d: %s", e.Line, e.Msg)
	}
	t := e.Text
	if len(t) > 80 {
		t = t[:80] + "…"
	}
	return fmt.Sprintf("perf script: line %d: %s: %q", e.Line, e.Msg, t)
}

// Pos returns the line number.
func (e *SyntaxError) Pos() int { return e.Line }

func syntaxErr(n int, text []byte, format string, args ...any) error {
	return &SyntaxError{Line: n, Msg: fmt.Sprintf(format, args...), Text: string(truncate(text, 200))}
}

// DefaultFrequency is what Parse assumes when an event's period is a count
// (cycles, instructions) and Options.Frequency is 0: perf record's own
// default sampling frequency (-F 4000).
const DefaultFrequency = 4000

// Options control Parse. The zero Options give a CPU profile of the first
// event type in the input.
type Options struct {
	// Event keeps only events of this type: the name as perf script prints
	// it ("cpu-clock:pppH") or without modifiers ("cpu-clock"). Empty keeps
	// the type of the first event, as stackcollapse-perf.pl does, so that
	// cycles and instructions are never added together.
	Event string
	// Frequency is the sampling frequency the data was recorded with
	// (perf record -F). Each sample of an event whose period is not a time
	// counts as 1e9/Frequency ns. 0 means DefaultFrequency.
	Frequency int
	// PID keeps only samples of this process, where the input has PIDs
	// (perf script -F pid). 0 keeps all.
	PID int
}

// Header is a parsed event header line.
type Header struct {
	Comm      string
	PID       int // -1 when the input has no PID column
	TID       int
	CPU       int   // -1 when absent
	Time      int64 // ns, as printed (perf's clock); -1 when absent
	Period    uint64
	HasPeriod bool
	Event     string // with modifiers, e.g. "cpu-clock:pppH" or "sched:sched_switch"
	Trace     []byte // the text after the event name (tracepoint fields)
}

// BaseEvent drops perf's event modifiers (":u", ":pppH") from an event name;
// tracepoint names ("sched:sched_switch") are kept whole.
func BaseEvent(e string) string {
	i := strings.LastIndexByte(e, ':')
	if i < 0 {
		return e
	}
	mods := e[i+1:]
	if mods == "" {
		return e[:i]
	}
	for _, c := range mods {
		if !strings.ContainsRune("ukhpPGHIWSDe", c) {
			return e
		}
	}
	return e[:i]
}

func isIDToken(t []byte) bool {
	if len(t) == 0 {
		return false
	}
	if i := bytes.IndexByte(t, '/'); i >= 0 {
		return isInt(t[:i]) && isInt(t[i+1:])
	}
	return isInt(t)
}

func isInt(t []byte) bool {
	if len(t) > 0 && t[0] == '-' {
		t = t[1:]
	}
	if len(t) == 0 {
		return false
	}
	for _, c := range t {
		if !isDigit(c) {
			return false
		}
	}
	return true
}

func isCPUToken(t []byte) bool {
	return len(t) >= 3 && t[0] == '[' && t[len(t)-1] == ']' && isInt(t[1:len(t)-1])
}

// isTimeToken matches "123.456789:".
func isTimeToken(t []byte) bool {
	if len(t) < 4 || t[len(t)-1] != ':' {
		return false
	}
	dot := false
	for _, c := range t[:len(t)-1] {
		switch {
		case c == '.':
			if dot {
				return false
			}
			dot = true
		case !isDigit(c):
			return false
		}
	}
	return dot
}

// parseTime converts "sec.frac:" to ns without going through a float.
func parseTime(t []byte) (int64, bool) {
	t = t[:len(t)-1]
	i := bytes.IndexByte(t, '.')
	sec, err := strconv.ParseInt(string(t[:i]), 10, 64)
	if err != nil || sec > 1<<33 {
		return 0, false
	}
	frac := t[i+1:]
	var ns int64
	for k := 0; k < 9; k++ {
		ns *= 10
		if k < len(frac) {
			ns += int64(frac[k] - '0')
		}
	}
	return sec*1e9 + ns, true
}

// ParseHeader parses an event header line:
//
//	comm [pid/]tid [[cpu]] [time:] [period] event: [trace]
//
// comm may hold spaces, colons and digits. n is the line number for errors.
func ParseHeader(n int, s []byte) (Header, error) {
	h := Header{PID: -1, CPU: -1, Time: -1}
	s = bytes.TrimRight(s, "\r")
	// Split into tokens, remembering where each starts.
	type tok struct{ start, end int }
	var toks [16]tok
	ts := toks[:0]
	for i := 0; i < len(s); {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) {
			break
		}
		j := i
		for j < len(s) && !isSpace(s[j]) {
			j++
		}
		ts = append(ts, tok{i, j})
		i = j
	}
	// The id ([pid/]tid) is the token, after the first, followed by
	// [cpu], a time or an event ("name:"). Take the first such.
	id := -1
	for k := 1; k+1 < len(ts); k++ {
		t := s[ts[k].start:ts[k].end]
		next := s[ts[k+1].start:ts[k+1].end]
		if isIDToken(t) && (isCPUToken(next) || next[len(next)-1] == ':') {
			id = k
			break
		}
	}
	if id < 0 {
		return h, syntaxErr(n, s, "not an event header: expected 'comm [pid/]tid [cpu] time: event:'")
	}
	h.Comm = string(bytes.TrimRight(s[:ts[id].start], " \t"))
	idt := s[ts[id].start:ts[id].end]
	if i := bytes.IndexByte(idt, '/'); i >= 0 {
		h.PID, _ = strconv.Atoi(string(idt[:i]))
		h.TID, _ = strconv.Atoi(string(idt[i+1:]))
	} else {
		h.TID, _ = strconv.Atoi(string(idt))
	}
	k := id + 1
	if k < len(ts) && isCPUToken(s[ts[k].start:ts[k].end]) {
		t := s[ts[k].start:ts[k].end]
		h.CPU, _ = strconv.Atoi(string(t[1 : len(t)-1]))
		k++
	}
	if k < len(ts) && isTimeToken(s[ts[k].start:ts[k].end]) {
		v, ok := parseTime(s[ts[k].start:ts[k].end])
		if !ok {
			return h, syntaxErr(n, s, "bad timestamp")
		}
		h.Time = v
		k++
	}
	if k < len(ts) && bytes.HasPrefix(s[ts[k].start:ts[k].end], []byte("PERF_RECORD_")) {
		// A side-band record (perf script --show-switch-events and the
		// like): "PERF_RECORD_SWITCH IN".
		h.Event = string(s[ts[k].start:ts[k].end])
		h.Trace = trimLeft(s[ts[k].end:])
		return h, nil
	}
	if k < len(ts) && isInt(s[ts[k].start:ts[k].end]) {
		v, err := strconv.ParseUint(string(s[ts[k].start:ts[k].end]), 10, 64)
		if err != nil {
			return h, syntaxErr(n, s, "bad period")
		}
		h.Period, h.HasPeriod = v, true
		k++
	}
	if k >= len(ts) || s[ts[k].end-1] != ':' || ts[k].end-ts[k].start < 2 {
		return h, syntaxErr(n, s, "no event name after the time")
	}
	h.Event = string(s[ts[k].start : ts[k].end-1])
	h.Trace = trimLeft(s[ts[k].end:])
	return h, nil
}

// Frame is a parsed frame line.
type Frame struct {
	PC      uint64
	Sym     string // symbol without +0x offset; "[unknown]" when perf has none
	Module  string // the DSO, "" when perf printed none
	Inlined bool   // an inline frame (perf script --inline) of the next real frame
}

// ParseFrame parses a frame line ("\t<hex ip> <sym>[+0x<off>] (<dso>)").
// It reports ok=false, err=nil for lines to skip (srclines of -F +srcline).
func ParseFrame(n int, s []byte) (f Frame, ok bool, err error) {
	s = trimRight(trimLeft(s))
	if len(s) == 0 {
		return f, false, nil
	}
	i := 0
	for i < len(s) && !isSpace(s[i]) {
		i++
	}
	pc, perr := strconv.ParseUint(string(s[:i]), 16, 64)
	rest := trimLeft(s[i:])
	if perr != nil {
		if len(rest) == 0 && bytes.IndexByte(s, ':') >= 0 {
			return f, false, nil // srcline, e.g. "demo.c:5"
		}
		return f, false, syntaxErr(n, s, "frame line does not start with a hex address")
	}
	f.PC = pc
	// The DSO is the last balanced parenthesised group; it may itself hold
	// parentheses ("(/memfd:x (deleted))").
	if len(rest) > 0 && rest[len(rest)-1] == ')' {
		depth := 0
		j := len(rest) - 1
		for ; j >= 0; j-- {
			if rest[j] == ')' {
				depth++
			} else if rest[j] == '(' {
				depth--
				if depth == 0 {
					break
				}
			}
		}
		if j > 0 && isSpace(rest[j-1]) || j == 0 {
			f.Module = string(rest[j+1 : len(rest)-1])
			rest = trimRight(rest[:j])
		}
	}
	if f.Module == "inlined" {
		f.Inlined, f.Module = true, ""
	}
	if len(rest) == 0 {
		return f, false, syntaxErr(n, s, "frame line has no symbol")
	}
	f.Sym = string(stripOffset(rest))
	return f, true, nil
}

// builder accumulates samples into a profile, sharing functions, locations
// and mappings.
type builder struct {
	p       *profile.Profile
	funcs   map[string]*profile.Function
	locs    map[string]*profile.Location
	maps    map[string]*profile.Mapping
	samples map[string]*profile.Sample
	key     []byte
	stack   []*profile.Location
	lines   []profile.Line
	frames  []Frame
}

func newBuilder(p *profile.Profile) *builder {
	return &builder{
		p:       p,
		funcs:   map[string]*profile.Function{},
		locs:    map[string]*profile.Location{},
		maps:    map[string]*profile.Mapping{},
		samples: map[string]*profile.Sample{},
	}
}

func (b *builder) function(name, file string) *profile.Function {
	if f := b.funcs[name]; f != nil {
		return f
	}
	f := &profile.Function{ID: uint64(len(b.p.Function) + 1), Name: name, SystemName: name, Filename: file}
	b.funcs[name] = f
	b.p.Function = append(b.p.Function, f)
	return f
}

func (b *builder) mapping(mod string) *profile.Mapping {
	if mod == "" {
		return nil
	}
	if m := b.maps[mod]; m != nil {
		return m
	}
	m := &profile.Mapping{ID: uint64(len(b.p.Mapping) + 1), File: mod, HasFunctions: true}
	b.maps[mod] = m
	b.p.Mapping = append(b.p.Mapping, m)
	return m
}

// symName is a frame's function name: the symbol, or for frames without
// one "module+0xaddr" (so they stay apart and can be symbolised later), or
// "[unknown]" when perf knows no module either.
func symName(f Frame) string {
	if f.Sym != "[unknown]" {
		return f.Sym
	}
	if f.Module == "" || f.Module == "[unknown]" {
		return "[unknown]"
	}
	return path.Base(f.Module) + "+0x" + strconv.FormatUint(f.PC, 16)
}

// addFrames parses frame lines into b.stack (leaf first). Inline frames are
// folded into the Location of the real frame that follows them.
func (b *builder) addFrames(lines []Line) error {
	b.frames = b.frames[:0]
	for _, l := range lines {
		f, ok, err := ParseFrame(l.N, l.Text)
		if err != nil {
			return err
		}
		if ok {
			b.frames = append(b.frames, f)
		}
	}
	b.setStack(b.frames)
	return nil
}

// setStack makes frames (leaf first) the current stack b.stack. Inline
// frames are folded into the Location of the real frame that follows them.
func (b *builder) setStack(frames []Frame) {
	b.stack = b.stack[:0]
	b.lines = b.lines[:0]
	for _, f := range frames {
		b.lines = append(b.lines, profile.Line{Function: b.function(symName(f), f.Module)})
		if f.Inlined {
			continue
		}
		b.stack = append(b.stack, b.location(f, b.lines))
		b.lines = b.lines[:0]
	}
	if len(b.lines) > 0 { // inline frames with no real frame after them
		b.stack = append(b.stack, b.location(Frame{}, b.lines))
	}
}

func (b *builder) location(f Frame, lines []profile.Line) *profile.Location {
	k := b.key[:0]
	k = append(k, f.Module...)
	k = append(k, 0)
	k = strconv.AppendUint(k, f.PC, 16)
	for _, l := range lines {
		k = append(k, 0)
		k = strconv.AppendUint(k, l.Function.ID, 10)
	}
	b.key = k
	if loc := b.locs[string(k)]; loc != nil {
		return loc
	}
	loc := &profile.Location{ID: uint64(len(b.p.Location) + 1), Address: f.PC, Mapping: b.mapping(f.Module)}
	loc.Line = append([]profile.Line(nil), lines...)
	b.locs[string(k)] = loc
	b.p.Location = append(b.p.Location, loc)
	return loc
}

// add adds values to the sample with the current stack and these labels.
func (b *builder) add(values []int64, strLabels [][2]string, numLabels [][2]any) {
	k := b.key[:0]
	for _, l := range b.stack {
		k = strconv.AppendUint(k, l.ID, 36)
		k = append(k, ',')
	}
	for _, l := range strLabels {
		k = append(k, 0)
		k = append(k, l[0]...)
		k = append(k, '=')
		k = append(k, l[1]...)
	}
	for _, l := range numLabels {
		k = append(k, 0)
		k = append(k, l[0].(string)...)
		k = append(k, '=')
		k = strconv.AppendInt(k, l[1].(int64), 10)
	}
	b.key = k
	if s := b.samples[string(k)]; s != nil {
		for i, v := range values {
			s.Value[i] += v
		}
		return
	}
	s := &profile.Sample{
		Location: append([]*profile.Location(nil), b.stack...),
		Value:    append([]int64(nil), values...),
	}
	if len(strLabels) > 0 {
		s.Label = map[string][]string{}
		for _, l := range strLabels {
			s.Label[l[0]] = []string{l[1]}
		}
	}
	if len(numLabels) > 0 {
		s.NumLabel = map[string][]int64{}
		for _, l := range numLabels {
			s.NumLabel[l[0].(string)] = []int64{l[1].(int64)}
		}
	}
	b.samples[string(k)] = s
	b.p.Sample = append(b.p.Sample, s)
}

// isTimeEvent reports whether an event's period is in nanoseconds.
func isTimeEvent(e string) bool {
	switch BaseEvent(e) {
	case "cpu-clock", "task-clock", "offcpu-time":
		return true
	}
	return false
}

func eventMatches(filter, e string) bool {
	return filter == e || filter == BaseEvent(e)
}

// Parse reads perf script text into a CPU profile with sample types
// samples/count and cpu/nanoseconds. Each sample carries the labels
// thread (comm), and the numeric labels tid and pid (pid only where the
// input has it). Errors are *SyntaxError values naming the line.
func Parse(r io.Reader, opt Options) (*profile.Profile, error) {
	c := NewCPUBuilder(opt)
	rd := NewReader(r)
	for {
		ev, h, err := rd.nextSample()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if !c.Wants(h) {
			continue
		}
		if err := c.b.addFrames(ev.Lines); err != nil {
			return nil, err
		}
		c.add(h)
	}
	return c.Profile()
}

// CPUBuilder builds the CPU profile Parse builds, from samples given one at
// a time: what a reader of perf's binary perf.data uses to give the same
// profile as Parse does of `perf script` text.
type CPUBuilder struct {
	b           *builder
	opt         Options
	filter      string
	nsPerSample int64
	first, last int64
	values      []int64
}

// NewCPUBuilder returns an empty CPUBuilder.
func NewCPUBuilder(opt Options) *CPUBuilder {
	freq := opt.Frequency
	if freq <= 0 {
		freq = DefaultFrequency
	}
	ns := int64(1e9 / freq)
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:     ns,
	}
	return &CPUBuilder{b: newBuilder(p), opt: opt, filter: opt.Event, nsPerSample: ns, first: -1, last: -1, values: make([]int64, 2)}
}

// Wants reports whether a sample with header h goes into the profile
// (Options.Event and Options.PID; the first event type seen becomes the
// filter when Options.Event is empty). Side-band records never do.
func (c *CPUBuilder) Wants(h Header) bool {
	if strings.HasPrefix(h.Event, "PERF_RECORD_") {
		return false // side-band records carry no samples
	}
	if c.filter == "" {
		c.filter = h.Event
	} else if !eventMatches(c.filter, h.Event) {
		return false
	}
	return !(c.opt.PID != 0 && h.PID >= 0 && h.PID != c.opt.PID)
}

// Add adds a sample that Wants accepted: h as Parse would read it from the
// header line, frames leaf first as ParseFrame would read them.
func (c *CPUBuilder) Add(h Header, frames []Frame) {
	c.b.setStack(frames)
	c.add(h)
}

// AddN adds n samples that Wants accepted, of one stack: h as Add takes it
// (its Time is not looked at: give every sample's time to Observe), period
// the sum of their periods.
func (c *CPUBuilder) AddN(h Header, frames []Frame, n int64, period uint64) {
	c.b.setStack(frames)
	c.values[0] = n
	c.values[1] = n * c.nsPerSample
	if h.HasPeriod && isTimeEvent(h.Event) {
		c.values[1] = int64(period)
	}
	c.b.add(c.values, [][2]string{{"thread", h.Comm}}, idLabels(h))
}

// Observe notes the time of a sample (-1: none), for the profile's
// duration.
func (c *CPUBuilder) Observe(t int64) {
	if t >= 0 {
		if c.first < 0 || t < c.first {
			c.first = t
		}
		if t > c.last {
			c.last = t
		}
	}
}

func (c *CPUBuilder) add(h Header) {
	c.Observe(h.Time)
	c.values[0] = 1
	c.values[1] = c.nsPerSample
	if h.HasPeriod && isTimeEvent(h.Event) {
		c.values[1] = int64(h.Period)
	}
	c.b.add(c.values, [][2]string{{"thread", h.Comm}}, idLabels(h))
}

// Profile returns the profile built, checked.
func (c *CPUBuilder) Profile() (*profile.Profile, error) {
	p := c.b.p
	if c.first >= 0 {
		p.DurationNanos = c.last - c.first
	}
	if err := p.CheckValid(); err != nil {
		return nil, fmt.Errorf("perf script: building profile: %w", err)
	}
	return p, nil
}

func idLabels(h Header) [][2]any {
	if h.PID >= 0 {
		return [][2]any{{"tid", int64(h.TID)}, {"pid", int64(h.PID)}}
	}
	return [][2]any{{"tid", int64(h.TID)}}
}

func onlyBlank(lines []Line) bool {
	for _, l := range lines {
		if len(trimLeft(l.Text)) > 0 {
			return false
		}
	}
	return true
}
