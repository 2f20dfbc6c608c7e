package perfdata

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// TracingData is what HEADER_TRACING_DATA holds (tools/perf/util/
// trace-event-read.c): the formats of the recorded tracepoints.
type TracingData struct {
	BigEndian bool
	LongSize  int
	Events    map[uint64]*EventFormat // by tracepoint id (perf_event_attr.config)
}

// EventFormat is a tracepoint's format file
// (/sys/kernel/tracing/events/SYSTEM/NAME/format).
type EventFormat struct {
	System, Name string
	ID           uint64
	Fields       []Field
	PrintFmt     string
}

// Field is one field of a tracepoint's raw data.
type Field struct {
	Name         string
	Type         string // "char prev_comm[16]" → "char"; "pid_t prev_pid" → "pid_t"
	Offset, Size int
	Signed       bool
	Array        bool // a fixed-size array (char[16])
}

// Field returns the field named name, or nil.
func (e *EventFormat) Field(name string) *Field {
	for i := range e.Fields {
		if e.Fields[i].Name == name {
			return &e.Fields[i]
		}
	}
	return nil
}

var tracingMagic = []byte("\x17\x08\x44tracing")

// ParseTracingData parses the contents of the HEADER_TRACING_DATA feature.
func ParseTracingData(b []byte) (*TracingData, error) {
	bad := func(what string) error { return fmt.Errorf("tracing data: %s", what) }
	if !bytes.HasPrefix(b, tracingMagic) {
		return nil, bad("no magic")
	}
	b = b[len(tracingMagic):]
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, bad("no version")
	}
	version := string(b[:i])
	b = b[i+1:]
	if len(b) < 6 {
		return nil, bad("short")
	}
	td := &TracingData{BigEndian: b[0] != 0, LongSize: int(b[1]), Events: map[uint64]*EventFormat{}}
	var bo binary.ByteOrder = binary.LittleEndian
	if td.BigEndian {
		bo = binary.BigEndian
	}
	b = b[2+4:] // page size
	// header_page and header_event: a name, a u64 size, the data.
	for _, want := range []string{"header_page", "header_event"} {
		if !bytes.HasPrefix(b, []byte(want+"\x00")) {
			return nil, bad("no " + want)
		}
		b = b[len(want)+1:]
		if len(b) < 8 {
			return nil, bad("short " + want)
		}
		n := bo.Uint64(b)
		if n > uint64(len(b)-8) {
			return nil, bad(want + " past the end")
		}
		b = b[8+n:]
	}
	formats := func(system string) error {
		if len(b) < 4 {
			return bad("short format count")
		}
		count := int(bo.Uint32(b))
		b = b[4:]
		for k := 0; k < count; k++ {
			if len(b) < 8 {
				return bad("short format")
			}
			n := bo.Uint64(b)
			if n > uint64(len(b)-8) {
				return bad("format past the end")
			}
			if ev, err := ParseEventFormat(string(b[8 : 8+n])); err == nil {
				if system != "" {
					ev.System = system
				}
				td.Events[ev.ID] = ev
			}
			b = b[8+n:]
		}
		return nil
	}
	// ftrace formats, then the event systems.
	if err := formats("ftrace"); err != nil {
		return nil, err
	}
	if len(b) < 4 {
		return nil, bad("no event systems")
	}
	systems := int(bo.Uint32(b))
	b = b[4:]
	for k := 0; k < systems; k++ {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			return nil, bad("event system name")
		}
		sys := string(b[:i])
		b = b[i+1:]
		if err := formats(sys); err != nil {
			return nil, err
		}
	}
	_ = version
	return td, nil
}

var fieldRE = regexp.MustCompile(`field:\s*([^;]*);\s*offset:\s*(\d+);\s*size:\s*(\d+);(?:\s*signed:\s*(\d+);)?`)

// ParseEventFormat parses a tracepoint format file.
func ParseEventFormat(text string) (*EventFormat, error) {
	ev := &EventFormat{}
	for _, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "name:"):
			ev.Name = strings.TrimSpace(t[5:])
		case strings.HasPrefix(t, "ID:"):
			id, err := strconv.ParseUint(strings.TrimSpace(t[3:]), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("event format: bad ID %q", t)
			}
			ev.ID = id
		case strings.HasPrefix(t, "print fmt:"):
			ev.PrintFmt = strings.TrimSpace(t[len("print fmt:"):])
		case strings.HasPrefix(t, "field:"):
			m := fieldRE.FindStringSubmatch(t)
			if m == nil {
				continue
			}
			decl := strings.TrimSpace(m[1])
			f := Field{}
			f.Offset, _ = strconv.Atoi(m[2])
			f.Size, _ = strconv.Atoi(m[3])
			f.Signed = m[4] == "1"
			if strings.HasSuffix(decl, "]") {
				if i := strings.LastIndexByte(decl, '['); i >= 0 {
					f.Array = true
					decl = strings.TrimSpace(decl[:i])
				}
			} else {
				decl = strings.Replace(decl, "[]", "", 1) // __data_loc char[] name
			}
			if i := strings.LastIndexAny(decl, " *"); i >= 0 {
				f.Name, f.Type = decl[i+1:], strings.TrimSpace(decl[:i+1])
			} else {
				f.Name = decl
			}
			ev.Fields = append(ev.Fields, f)
		}
	}
	if ev.Name == "" {
		return nil, errors.New("event format: no name")
	}
	return ev, nil
}

// readTracefsFormat reads a tracepoint's format from tracefs, for files
// without HEADER_TRACING_DATA.
func readTracefsFormat(system, name string) (*EventFormat, error) {
	for _, root := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		data, err := os.ReadFile(root + "/events/" + system + "/" + name + "/format")
		if err == nil {
			ev, err := ParseEventFormat(string(data))
			if err == nil {
				ev.System = system
			}
			return ev, err
		}
	}
	return nil, fmt.Errorf("no format for %s:%s in tracefs (mount /sys/kernel/tracing)", system, name)
}

// uintField reads an integer field of raw tracepoint data.
func uintField(raw []byte, f *Field, bo binary.ByteOrder) (uint64, bool) {
	if f == nil || f.Offset < 0 || f.Offset+f.Size > len(raw) {
		return 0, false
	}
	b := raw[f.Offset : f.Offset+f.Size]
	switch f.Size {
	case 1:
		if f.Signed {
			return uint64(int64(int8(b[0]))), true
		}
		return uint64(b[0]), true
	case 2:
		if f.Signed {
			return uint64(int64(int16(bo.Uint16(b)))), true
		}
		return uint64(bo.Uint16(b)), true
	case 4:
		if f.Signed {
			return uint64(int64(int32(bo.Uint32(b)))), true
		}
		return uint64(bo.Uint32(b)), true
	case 8:
		return bo.Uint64(b), true
	}
	return 0, false
}

// stringField reads a char[N] field.
func stringField(raw []byte, f *Field) string {
	if f == nil || f.Offset < 0 || f.Offset+f.Size > len(raw) {
		return ""
	}
	return cstring(raw[f.Offset : f.Offset+f.Size])
}

// taskStates are the prev_state letters of sched_switch's print fmt, by
// bit: the kernel's TASK_REPORT states (include/trace/events/sched.h).
type taskStates struct {
	bits    []uint64
	letters []string
	max     uint64 // TASK_REPORT_MAX: set for a task preempted while runnable ("R+")
}

var statePairRE = regexp.MustCompile(`\{\s*(0x[0-9a-fA-F]+|\d+)\s*,\s*"([A-Za-z])"\s*\}`)

// statesOf reads the state letters from sched_switch's print fmt, falling
// back to those of Linux 4.14 to 6.x.
func statesOf(printFmt string) taskStates {
	var ts taskStates
	for _, m := range statePairRE.FindAllStringSubmatch(printFmt, -1) {
		v, err := strconv.ParseUint(m[1], 0, 64)
		if err != nil || v == 0 {
			continue
		}
		ts.bits = append(ts.bits, v)
		ts.letters = append(ts.letters, m[2])
		if v > ts.max {
			ts.max = v
		}
	}
	if len(ts.bits) == 0 {
		ts.bits = []uint64{0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80}
		ts.letters = []string{"S", "D", "T", "t", "X", "Z", "P", "I"}
		ts.max = 0x80
	}
	ts.max <<= 1
	return ts
}

// format prints a prev_state value as perf script does: the letters of the
// bits set joined by "|", or "R" when none; "+" when preempted.
func (ts taskStates) format(v uint64) string {
	var sb strings.Builder
	if low := v & (ts.max - 1); low != 0 {
		for i, b := range ts.bits {
			if low&b != 0 {
				if sb.Len() > 0 {
					sb.WriteByte('|')
				}
				sb.WriteString(ts.letters[i])
			}
		}
	} else {
		sb.WriteByte('R')
	}
	if v&ts.max != 0 {
		sb.WriteByte('+')
	}
	return sb.String()
}
