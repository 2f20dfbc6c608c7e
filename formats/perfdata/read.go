package perfdata

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/formats/perfscript"
	"github.com/profcap/profcap/symbolize"
)

// Kind is what profile Read builds.
type Kind int

const (
	// KindAuto builds an off-CPU profile from a recording of
	// sched:sched_switch with context-switch records (what profcap's
	// offcpu recording makes), else a CPU profile.
	KindAuto Kind = iota
	KindCPU
	KindOffCPU
)

// Options control Read and Collapse. The zero value is usable.
type Options struct {
	// Symbolizer names the frames; nil makes one (without DWARF lines).
	Symbolizer *symbolize.Symbolizer
	// NoSymbols leaves every frame unnamed ("[unknown]" in its file): no
	// file the recording names is opened.
	NoSymbols bool
	// Kind is the profile Read builds.
	Kind Kind
	// CPU and OffCPU are the options perfscript.Parse and ParseOffCPU
	// would get; Read gives the profile they would give of perf script's
	// text. CPU.Frequency 0 takes the recording's own (perf record -F).
	CPU    perfscript.Options
	OffCPU perfscript.OffCPUOptions
	// Perf is the perf binary run for what this reader cannot do itself
	// (DWARF-unwound stacks, zstd-compressed records); "" looks up "perf"
	// in PATH.
	Perf string
	// Notes receives what the reader says about the recording (lost
	// events, frames left unnamed and why, perf script being run); nil
	// discards them.
	Notes func(string)
	// Context bounds the perf script run of a fallback; nil is
	// context.Background().
	Context context.Context
}

func (o *Options) note(s string) {
	if o.Notes != nil {
		o.Notes(s)
	}
}

func (o *Options) ctx() context.Context {
	if o.Context != nil {
		return o.Context
	}
	return context.Background()
}

// ErrNeedsPerf is returned (wrapped) when a recording needs perf script and
// perf is not installed.
var ErrNeedsPerf = errors.New("needs perf script")

var errCompressed = errors.New("compressed")

// IncompleteError is returned with a profile when perf script failed part
// of the way through a recording (a record it cannot process, a file cut
// short): the profile holds the events before the failure. Read returns
// both, so that what was captured is not lost.
type IncompleteError struct {
	Err error
}

func (e *IncompleteError) Error() string {
	return "perf script stopped before the end of the recording (the profile holds the events before): " + e.Err.Error()
}

func (e *IncompleteError) Unwrap() error { return e.Err }

// needsPerf says why this reader hands the file to perf script, or "".
func (f *File) needsPerf() string {
	for _, a := range f.Attrs {
		if a.DWARFStacks() {
			return "it holds DWARF stacks (perf record --call-graph dwarf): copies of the user stack that only perf script unwinds; profcap reads frame-pointer (--call-graph fp) recordings itself"
		}
	}
	if f.Compressed {
		return "its records are zstd-compressed (perf record -z), which profcap does not inflate"
	}
	return ""
}

// ReadFile reads the perf.data file at path into a profile.
func ReadFile(path string, opt Options) (*profile.Profile, error) {
	data, closer, err := mapFile(path)
	if err != nil {
		return nil, err
	}
	defer closer()
	return read(data, path, opt)
}

// Read reads a perf.data file from r (all of it) into a profile.
func Read(r io.Reader, opt Options) (*profile.Profile, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return read(data, "", opt)
}

func read(data []byte, path string, opt Options) (*profile.Profile, error) {
	f, err := Parse(data)
	if err != nil {
		return nil, err
	}
	kind := opt.Kind
	if kind == KindAuto {
		kind = KindCPU
		if f.isOffCPU() {
			kind = KindOffCPU
		}
	}
	if why := f.needsPerf(); why != "" {
		return readWithPerf(data, path, kind, why, opt)
	}
	// From here on a profile is returned whole or not at all.
	s := newSession(f, opt.Symbolizer)
	s.nosym = opt.NoSymbols
	var p *profile.Profile
	if kind == KindOffCPU {
		p, err = s.offCPU(opt.OffCPU)
	} else {
		p, err = s.cpu(opt.CPU)
	}
	if errors.Is(err, errCompressed) {
		return readWithPerf(data, path, kind, "its records are zstd-compressed (perf record -z), which profcap does not inflate", opt)
	}
	if opt.Notes != nil {
		for _, n := range s.notes() {
			opt.note(n)
		}
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// isOffCPU: sched_switch with switch records, as profcap's offcpu
// recording (sched:sched_switch --switch-events).
func (f *File) isOffCPU() bool {
	sched, sw := false, false
	for _, a := range f.Attrs {
		if f.eventName(a) == "sched:sched_switch" {
			sched = true
		}
		if a.Flags&attrFlagSwitch != 0 {
			sw = true
		}
	}
	return sched && sw
}

var hwNames = []string{"cycles", "instructions", "cache-references", "cache-misses", "branches", "branch-misses", "bus-cycles", "stalled-cycles-frontend", "stalled-cycles-backend", "ref-cycles"}
var swNames = []string{"cpu-clock", "task-clock", "page-faults", "context-switches", "cpu-migrations", "minor-faults", "major-faults", "alignment-faults", "emulation-faults", "dummy", "bpf-output", "cgroup-switches"}

// eventName is the event's name as perf script prints it: from
// HEADER_EVENT_DESC, else made from the attribute.
func (f *File) eventName(a *Attr) string {
	if a.Name != "" {
		return a.Name
	}
	switch a.Type {
	case attrTypeHardware:
		if a.Config < uint64(len(hwNames)) {
			return hwNames[a.Config]
		}
	case attrTypeSoftware:
		if a.Config < uint64(len(swNames)) {
			return swNames[a.Config]
		}
	case attrTypeTracepoint:
		if f.Tracing != nil {
			if ev := f.Tracing.Events[a.Config]; ev != nil {
				return ev.System + ":" + ev.Name
			}
		}
	}
	return fmt.Sprintf("unknown-%d:%d", a.Type, a.Config)
}

// frequency is the recording's sampling frequency, 0 when it sampled by
// period.
func (f *File) frequency() int {
	for _, a := range f.Attrs {
		if a.Freq() && a.SamplePeriod > 0 && a.SamplePeriod < 1<<31 {
			return int(a.SamplePeriod)
		}
	}
	return 0
}

// header is what perfscript would read from perf script's header line of
// sample smp of thread t.
func (s *session) header(smp *Sample, t *thread) perfscript.Header {
	h := perfscript.Header{Comm: t.comm, PID: int(smp.PID), TID: int(smp.TID), CPU: -1, Time: -1, Event: s.f.eventName(smp.Attr)}
	if smp.HasCPU {
		h.CPU = int(smp.CPU)
	}
	if smp.HasTime {
		h.Time = int64(smp.Time)
	}
	if smp.HasPeriod && smp.Attr.Type != attrTypeTracepoint {
		h.Period, h.HasPeriod = smp.Period, true
	}
	return h
}

// pframes turns s.stack into perfscript frames.
func (s *session) pframes(dst []perfscript.Frame) []perfscript.Frame {
	dst = dst[:0]
	for _, id := range s.stack {
		fr := &s.frames[id]
		pf := perfscript.Frame{PC: fr.pc, Sym: "[unknown]", Module: fr.dso}
		if fr.known {
			pf.Sym = fr.sym
		}
		dst = append(dst, pf)
	}
	return dst
}

type cpuAgg struct {
	h      perfscript.Header
	stack  []uint32
	n      int64
	period uint64
}

// cpu builds the profile perfscript.Parse builds of `perf script -F
// comm,pid,tid,time,period,event,ip,sym,symoff,dso`: identical samples are
// added once, with their count and summed period.
func (s *session) cpu(opt perfscript.Options) (*profile.Profile, error) {
	if opt.Frequency == 0 {
		opt.Frequency = s.f.frequency()
	}
	c := perfscript.NewCPUBuilder(opt)
	aggs := map[string]*cpuAgg{}
	var order []*cpuAgg
	var key []byte
	err := s.replay(func(smp *Sample, t *thread) error {
		h := s.header(smp, t)
		if !c.Wants(h) {
			return nil
		}
		c.Observe(h.Time)
		s.callchain(smp, t)
		key = appendKey(key[:0], h.Comm, h.PID, h.TID, s.stack)
		a := aggs[string(key)]
		if a == nil {
			a = &cpuAgg{h: h, stack: append([]uint32(nil), s.stack...)}
			aggs[string(key)] = a
			order = append(order, a)
		}
		a.n++
		a.period += h.Period
		return nil
	}, nil)
	if err != nil && len(order) == 0 {
		return nil, err
	}
	if err != nil {
		s.sym.Notes() // keep going with what was read
	}
	var frames []perfscript.Frame
	for _, a := range order {
		s.stack = a.stack
		frames = s.pframes(frames)
		c.AddN(a.h, frames, a.n, a.period)
	}
	p, perr := c.Profile()
	if perr != nil {
		return nil, perr
	}
	if err != nil {
		return p, fmt.Errorf("read %d samples, then: %w", s.samples, err)
	}
	return p, nil
}

func appendKey(k []byte, comm string, pid, tid int, stack []uint32) []byte {
	k = append(k, comm...)
	k = append(k, 0)
	k = strconv.AppendInt(k, int64(pid), 36)
	k = append(k, '/')
	k = strconv.AppendInt(k, int64(tid), 36)
	for _, id := range stack {
		k = append(k, byte(id), byte(id>>8), byte(id>>16), byte(id>>24))
	}
	return k
}

// offCPU builds the profile perfscript.ParseOffCPU builds of the
// collector's `perf script -F comm,pid,tid,cpu,time,event,trace,ip,sym,
// symoff,dso --show-switch-events`.
func (s *session) offCPU(opt perfscript.OffCPUOptions) (*profile.Profile, error) {
	o := perfscript.NewOffCPUBuilder(opt)
	dec := map[*Attr]*switchDecoder{}
	var frames []perfscript.Frame
	err := s.replay(func(smp *Sample, t *thread) error {
		if smp.HasTime {
			o.Time(int64(smp.Time))
		} else {
			o.Time(-1)
		}
		if s.f.eventName(smp.Attr) != "sched:sched_switch" {
			return nil
		}
		if !smp.HasTime {
			return errors.New("sched_switch sample without a timestamp: record with the time field")
		}
		d := dec[smp.Attr]
		if d == nil {
			var derr error
			if d, derr = s.f.newSwitchDecoder(smp.Attr); derr != nil {
				return derr
			}
			dec[smp.Attr] = d
		}
		sw, ok := d.decode(smp.Raw)
		if !ok {
			return nil
		}
		h := s.header(smp, t)
		h.Event = "sched:sched_switch"
		return o.SchedSwitch(h, sw, func() error {
			s.callchain(smp, t)
			frames = s.pframes(frames)
			o.SetStack(frames)
			return nil
		})
	}, func(r record, id sampleIDTrailer) error {
		t := int64(-1)
		if id.hasTime {
			t = int64(id.time)
		}
		o.Time(t)
		if r.misc&miscSwitchOut == 0 && id.tid > 0 && t >= 0 {
			o.SwitchIn(int(id.tid), t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return o.Profile()
}

// switchDecoder reads sched_switch's raw data by its format.
type switchDecoder struct {
	f                                      *File
	ev                                     *EventFormat
	prevComm, prevPID, prevState, nextComm *Field
	nextPID                                *Field
	states                                 taskStates
}

func (f *File) newSwitchDecoder(a *Attr) (*switchDecoder, error) {
	var ev *EventFormat
	if f.Tracing != nil {
		ev = f.Tracing.Events[a.Config]
	}
	if ev == nil {
		var err error
		if ev, err = readTracefsFormat("sched", "sched_switch"); err != nil {
			return nil, fmt.Errorf("sched_switch: the file has no HEADER_TRACING_DATA and %w", err)
		}
	}
	d := &switchDecoder{f: f, ev: ev, prevComm: ev.Field("prev_comm"), prevPID: ev.Field("prev_pid"), prevState: ev.Field("prev_state"), nextComm: ev.Field("next_comm"), nextPID: ev.Field("next_pid"), states: statesOf(ev.PrintFmt)}
	if d.prevPID == nil || d.prevState == nil || d.nextPID == nil {
		return nil, fmt.Errorf("sched_switch format without prev_pid, prev_state or next_pid")
	}
	return d, nil
}

func (d *switchDecoder) decode(raw []byte) (perfscript.SchedSwitch, bool) {
	var sw perfscript.SchedSwitch
	pp, ok1 := uintField(raw, d.prevPID, d.f.bo)
	st, ok2 := uintField(raw, d.prevState, d.f.bo)
	np, ok3 := uintField(raw, d.nextPID, d.f.bo)
	if !ok1 || !ok2 || !ok3 {
		return sw, false
	}
	sw.PrevPID, sw.NextPID = int(int32(pp)), int(int32(np))
	sw.PrevComm, sw.NextComm = stringField(raw, d.prevComm), stringField(raw, d.nextComm)
	sw.PrevState = d.states.format(st)
	return sw, true
}

// readWithPerf runs perf script on what this reader cannot read itself and
// parses its text.
func readWithPerf(data []byte, path string, kind Kind, why string, opt Options) (*profile.Profile, error) {
	fields := "comm,pid,tid,time,period,event,ip,sym,symoff,dso"
	extra := []string{}
	if kind == KindOffCPU {
		fields = "comm,pid,tid,cpu,time,event,trace,ip,sym,symoff,dso"
		extra = append(extra, "--show-switch-events")
	}
	var p *profile.Profile
	err := withPerfScript(data, path, why, opt, append([]string{"--ns", "-F", fields}, extra...), func(r io.Reader) error {
		var err error
		if kind == KindOffCPU {
			p, err = perfscript.ParseOffCPU(r, opt.OffCPU)
		} else {
			p, err = perfscript.Parse(r, opt.CPU)
		}
		return err
	})
	var inc *IncompleteError
	if errors.As(err, &inc) && p != nil && len(p.Sample) > 0 {
		return p, err
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// withPerfScript runs `perf script -i FILE args` and streams its output
// into consume. data is written to a temporary file when path is "".
func withPerfScript(data []byte, path, why string, opt Options, args []string, consume func(io.Reader) error) error {
	perf := opt.Perf
	if perf == "" {
		var err error
		if perf, err = exec.LookPath("perf"); err != nil {
			return fmt.Errorf("this perf.data %s, and perf is not installed (Debian: apt-get install linux-perf): %w", strings.TrimPrefix(why, "it "), ErrNeedsPerf)
		}
	}
	if path == "" {
		tmp, err := os.CreateTemp("", "profcap-perfdata-*.data")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		if _, err := tmp.Write(data); err != nil {
			tmp.Close()
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		path = tmp.Name()
	}
	opt.note(fmt.Sprintf("perf.data: running perf script, because %s", why))
	cmd := exec.CommandContext(opt.ctx(), perf, append([]string{"script", "-i", path}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting perf script: %w", err)
	}
	cerr := consume(bufio.NewReaderSize(out, 256<<10))
	if cerr != nil {
		_ = cmd.Process.Kill()
	}
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	if cerr != nil {
		return fmt.Errorf("reading perf script output: %w", cerr)
	}
	if werr != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return &IncompleteError{Err: fmt.Errorf("perf script: %v: %s", werr, msg)}
	}
	return nil
}
