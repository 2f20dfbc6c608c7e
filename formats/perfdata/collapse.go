package perfdata

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/profcap/profcap/formats/perfscript"
)

// CollapseFile folds the samples of the perf.data file at path into w, byte
// for byte what `perf script -i path | profcap collapse` (with the same
// options) writes: each distinct stack is printed once as perf script
// prints it and folded by perfscript's collapser with its count. With
// copt.PID or copt.TID the pids are real, as with perf script -F +pid.
func CollapseFile(path string, w io.Writer, copt perfscript.CollapseOptions, opt Options) error {
	data, closer, err := mapFile(path)
	if err != nil {
		return err
	}
	defer closer()
	return collapse(data, path, w, copt, opt)
}

// Collapse is CollapseFile for a perf.data file read from r.
func Collapse(r io.Reader, w io.Writer, copt perfscript.CollapseOptions, opt Options) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	return collapse(data, "", w, copt, opt)
}

type foldAgg struct {
	attr   *Attr
	comm   string
	pid    int32
	tid    int32
	cpu    uint32
	hasCPU bool
	time   uint64
	hasT   bool
	ip     uint64
	misc   uint16
	raw    []byte
	stack  []uint32
	n      uint64
	period uint64
	hasP   bool
}

func collapse(data []byte, path string, w io.Writer, copt perfscript.CollapseOptions, opt Options) error {
	f, err := Parse(data)
	if err != nil {
		return err
	}
	if why := f.needsPerf(); why != "" {
		return withPerfScript(data, path, why, opt, nil, func(r io.Reader) error { return perfscript.Collapse(r, w, copt) })
	}
	s := newSession(f, opt.Symbolizer)
	s.nosym = opt.NoSymbols
	width := 0
	for _, a := range f.Attrs {
		width = max(width, len(f.eventName(a)))
	}
	showPID := copt.PID || copt.TID
	aggs := map[string]*foldAgg{}
	var order []*foldAgg
	var key []byte
	// stable[comm and ids] says whether stackcollapse-perf.pl's header
	// expression ends within "COMM TID " of such a header; if not (a
	// one-letter comm, say), the fields after it (cpu, time, period) end up
	// in its comm, and each sample is folded on its own.
	stable := map[string]bool{}
	var probe []byte
	err = s.replay(func(smp *Sample, t *thread) error {
		a := smp.Attr
		chain := a.SampleType&sampleCallchain != 0
		if chain {
			s.callchain(smp, t)
		} else {
			s.stack = s.stack[:0]
		}
		key = key[:0]
		key = append(key, byte(attrIndex(f, a)))
		key = appendKey(key, t.comm, int(smp.PID), int(smp.TID), s.stack)
		if !chain {
			// The one frame of a sample without a callchain goes on
			// its header line.
			key = strconv.AppendUint(append(key, 0), smp.IP, 16)
		}
		probe = appendIDs(appendComm(probe[:0], t.comm, chain), smp.PID, smp.TID, showPID)
		st, ok := stable[string(probe)]
		if !ok {
			// A suffix that cannot complete a match: one found lies
			// within "COMM TID ".
			_, _, _, matched := perfscript.PerlHeader(append(probe, 'x'))
			st = matched
			stable[string(probe)] = st
		}
		if !st {
			key = append(key, 0)
			key = strconv.AppendUint(key, smp.Time, 10)
			key = append(key, 0)
			key = strconv.AppendUint(key, smp.Period, 10)
			key = append(key, 0)
			key = strconv.AppendUint(key, uint64(smp.CPU), 10)
		}
		g := aggs[string(key)]
		if g == nil {
			g = &foldAgg{attr: a, comm: t.comm, pid: smp.PID, tid: smp.TID, cpu: smp.CPU, hasCPU: smp.HasCPU, time: smp.Time, hasT: smp.HasTime,
				ip: smp.IP, misc: smp.Misc, stack: append([]uint32(nil), s.stack...), hasP: smp.HasPeriod && a.Type != attrTypeTracepoint}
			if a.Type == attrTypeTracepoint {
				g.raw = append([]byte(nil), smp.Raw...)
			}
			aggs[string(key)] = g
			order = append(order, g)
		}
		g.n++
		if g.hasP {
			// stackcollapse-perf.pl counts a period of 0 as 1.
			g.period += max(smp.Period, 1)
		}
		return nil
	}, nil)
	if err == errCompressed {
		return withPerfScript(data, path, "its records are zstd-compressed (perf record -z), which profcap does not inflate", opt, nil, func(r io.Reader) error { return perfscript.Collapse(r, w, copt) })
	}
	if err != nil && len(order) == 0 {
		return err
	}
	c := perfscript.NewCollapser(copt)
	var hdr []byte
	var lines [][]byte
	dec := map[*Attr]*switchDecoder{}
	for _, g := range order {
		chain := g.attr.SampleType&sampleCallchain != 0
		hdr = appendIDs(appendComm(hdr[:0], g.comm, chain), g.pid, g.tid, showPID)
		if g.hasCPU {
			hdr = append(hdr, '[')
			hdr = appendPadLeftZero(hdr, strconv.Itoa(int(g.cpu)), 3)
			hdr = append(hdr, "] "...)
		}
		if g.hasT {
			ts := strconv.FormatUint(g.time/1e9, 10) + "." + fmt.Sprintf("%06d", g.time%1e9/1e3)
			hdr = appendPadLeft(hdr, ts, 12)
			hdr = append(hdr, ": "...)
		}
		n := g.n
		if g.hasP {
			hdr = appendPadLeft(hdr, strconv.FormatUint(g.period, 10), 10)
			hdr = append(hdr, ' ')
			n = 1
		}
		hdr = appendPadLeft(hdr, f.eventName(g.attr), width)
		hdr = append(hdr, ": "...)
		if g.attr.Type == attrTypeTracepoint && len(g.raw) > 0 {
			hdr = append(hdr, s.traceText(g.attr, g.raw, dec)...)
		}
		lines = lines[:0]
		if chain {
			for _, id := range g.stack {
				lines = append(lines, s.frameLine(id))
			}
		} else if g.attr.Type != attrTypeTracepoint {
			// perf script: ' ', the ip (raw), sym+off, (dso).
			t := s.threads[g.tid]
			if t == nil {
				t = s.findThread(g.pid, g.tid)
			}
			id := s.resolve(t, uint8(g.misc&miscCPUModeMask), g.ip)
			fl := s.frameLine(id)
			hdr = append(hdr, ' ')
			hdr = appendHexPadded(hdr, g.ip, 16)
			// The frame line without its tab and (file-relative) ip.
			hdr = append(hdr, fl[1+16:]...)
		}
		if err := c.Fold(hdr, lines, n); err != nil {
			return err
		}
	}
	if opt.Notes != nil {
		for _, note := range s.notes() {
			opt.note(note)
		}
	}
	if werr := c.Write(w); werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("folded %d samples, then: %w", s.samples, err)
	}
	return nil
}

// appendComm prints the comm as perf script does: as is before a
// callchain, else right-aligned in 16 columns; then a space.
func appendComm(b []byte, comm string, chain bool) []byte {
	if chain {
		b = append(b, comm...)
	} else {
		b = appendPadLeft(b, comm, 16)
	}
	return append(b, ' ')
}

// appendIDs prints "TID " or, with pids shown, "PID/TID ", as perf script.
func appendIDs(b []byte, pid, tid int32, showPID bool) []byte {
	if showPID {
		b = appendPadLeft(b, strconv.Itoa(int(pid)), 5)
		b = append(b, '/')
		b = appendPadRight(b, strconv.Itoa(int(tid)), 5)
	} else {
		b = appendPadLeft(b, strconv.Itoa(int(tid)), 5)
	}
	return append(b, ' ')
}

func attrIndex(f *File, a *Attr) int {
	for i, x := range f.Attrs {
		if x == a {
			return i
		}
	}
	return 0
}

func appendPadLeft(b []byte, s string, w int) []byte {
	for i := len(s); i < w; i++ {
		b = append(b, ' ')
	}
	return append(b, s...)
}

func appendPadLeftZero(b []byte, s string, w int) []byte {
	for i := len(s); i < w; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

func appendPadRight(b []byte, s string, w int) []byte {
	b = append(b, s...)
	for i := len(s); i < w; i++ {
		b = append(b, ' ')
	}
	return b
}

// traceText prints a tracepoint's fields as perf script does for
// sched_switch ("prev_comm=… ==> next_comm=…"), and as name=value pairs
// for other tracepoints.
func (s *session) traceText(a *Attr, raw []byte, dec map[*Attr]*switchDecoder) string {
	if s.f.eventName(a) == "sched:sched_switch" {
		d := dec[a]
		if d == nil {
			var err error
			if d, err = s.f.newSwitchDecoder(a); err != nil {
				return "?"
			}
			dec[a] = d
		}
		sw, ok := d.decode(raw)
		if !ok {
			return "?"
		}
		pprio, _ := uintField(raw, d.ev.Field("prev_prio"), s.f.bo)
		nprio, _ := uintField(raw, d.ev.Field("next_prio"), s.f.bo)
		return fmt.Sprintf("prev_comm=%s prev_pid=%d prev_prio=%d prev_state=%s ==> next_comm=%s next_pid=%d next_prio=%d",
			sw.PrevComm, sw.PrevPID, int32(pprio), sw.PrevState, sw.NextComm, sw.NextPID, int32(nprio))
	}
	var ev *EventFormat
	if s.f.Tracing != nil {
		ev = s.f.Tracing.Events[a.Config]
	}
	if ev == nil {
		return "?"
	}
	var out []byte
	for i := range ev.Fields {
		fd := &ev.Fields[i]
		if len(fd.Name) >= 7 && fd.Name[:7] == "common_" {
			continue
		}
		if len(out) > 0 {
			out = append(out, ' ')
		}
		out = append(out, fd.Name...)
		out = append(out, '=')
		if fd.Array && fd.Type == "char" {
			out = append(out, stringField(raw, fd)...)
		} else if v, ok := uintField(raw, fd, s.f.bo); ok {
			if fd.Signed {
				out = strconv.AppendInt(out, int64(v), 10)
			} else {
				out = strconv.AppendUint(out, v, 10)
			}
		} else {
			out = append(out, '?')
		}
	}
	if len(out) == 0 {
		return "?"
	}
	return string(out)
}

// mapFile maps a file into memory read-only (reading it when mapping is
// not possible).
func mapFile(path string) ([]byte, func(), error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.IsDir() {
		return nil, nil, fmt.Errorf("%s is a directory", path)
	}
	if st.Size() > 0 && st.Mode().IsRegular() && st.Size() == int64(int(st.Size())) {
		if data, err := unix.Mmap(int(fh.Fd()), 0, int(st.Size()), unix.PROT_READ, mapFlags); err == nil {
			return data, func() { _ = unix.Munmap(data) }, nil
		}
	}
	data, err := io.ReadAll(fh)
	if err != nil {
		return nil, nil, err
	}
	return data, func() {}, nil
}
