package perfscript

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"unsafe"
)

// folder is one worker's state: stackcollapse-perf.pl's variables, caches
// of what frame lines and whole events turn into, and the stack counts.
//
// Names are interned: a stack is its process name's id and the id of its
// sequence of frame-name ids, so counting an event costs a map lookup on
// 8 bytes whatever its depth, and the text is built once per distinct stack.
type folder struct {
	opt       *CollapseOptions
	defaulted bool   // no filter was given: the first event's type is kept
	filter    []byte // events of other types are skipped

	// Perl state of the event being read.
	hasPname           bool
	pnameID            uint32
	isJava             bool
	period             uint64
	ids                []uint32 // frame-name ids of the stack so far, frame lines in input order
	gstart             []int32  // where each frame line's names start in ids
	lastSeq            uint32   // sequence id of the last stack counted
	lastPname, lastIdx uint32   // process id and counts index of the last stack counted
	mult               uint64   // the event stands for this many (Collapser.Fold); 0 is 1

	// frames caches what a frame line gives, by its text (and whether the
	// process is java, which changes the tidying).
	frames     [2]map[string]frameEntry
	frameBytes int
	arena      []uint32 // backing store of the entries' ids

	// events caches what the frame lines of a whole event give, from the
	// line after the header to the blank line ending it, when all of them
	// are frames: most events of a profile repeat one seen before.
	events     [2]map[string][]eventEntry // by the event's first line, up to maxCandidates each
	more       [2]map[string]*eventEntry  // the others, by their text
	eventBytes int
	eventTries int
	eventHits  int
	eventSkip  int // events to read without the cache (it has not been paying)

	names     map[string]uint32
	nameList  []string
	pnames    map[string]uint32 // process name + java flag byte
	pnameList []string
	seqs      map[string]uint32 // frame-name ids, 4 bytes each, root first
	seqList   []string
	stacks    map[uint64]uint32 // pname id << 32 | seq id -> index in counts
	stackKeys []uint64
	counts    []uint64

	// stable: the input's bytes stay where they are until the folding is
	// done (a mapped file), so the event cache keeps slices of them
	// instead of copies.
	stable bool

	seg  *segment
	line int // number of the line being read, within seg
	key  []byte
	pbuf []byte
	// prevPname is the process name (and java flag) pnameID is for:
	// consecutive events are mostly of one process.
	prevPname  []byte
	hasPnameID bool
	scratch    []byte
}

type frameEntry struct {
	ok   bool     // the line matched the frame expression
	skip bool     // a process name "(...)": matched, adds nothing
	ids  []uint32 // frame-name ids, outermost first (inlined frames follow their caller)
}

type eventEntry struct {
	text  string // the event from the line after the header through the blank line
	lines int    // lines in text
	seq   uint32 // the stack's sequence id
	pname uint32 // the process it was last counted for,
	idx   uint32 // and where in counts
}

// Bounds on the caches, per worker, in bytes of text: past them a cache
// starts over, so memory stays flat on input where nothing repeats.
// Variables for the tests.
var (
	maxFrameCache = 8 << 20
	maxEventCache = 8 << 20
)

const (
	maxEvent      = 64 << 10 // longer events are read line by line
	maxCandidates = 32       // events kept by first line; the others by their text
	eventKeyLen   = 64       // bytes of the first line that key an event
)

func newFolder(opt *CollapseOptions) *folder {
	f := &folder{
		opt:       opt,
		defaulted: opt.EventFilter == "",
		filter:    []byte(opt.EventFilter),
		names:     make(map[string]uint32),
		pnames:    make(map[string]uint32),
		seqs:      make(map[string]uint32),
		stacks:    make(map[uint64]uint32),
	}
	for i := range f.frames {
		f.frames[i] = make(map[string]frameEntry)
		f.events[i] = make(map[string][]eventEntry)
		f.more[i] = make(map[string]*eventEntry)
	}
	return f
}

// noPname marks an eventEntry not counted by this folder yet.
const noPname = 1<<32 - 1

// clone is a folder for another worker that goes on from where f stands
// (between segments, Perl state at its start): it shares f's cached
// strings and ids (never written once made) and copies the maps and lists
// that will grow; its stack counts start empty, so the stacks f counted
// are counted once.
func (f *folder) clone() *folder {
	g := &folder{
		opt:        f.opt,
		defaulted:  f.defaulted,
		filter:     f.filter,
		stable:     f.stable,
		frameBytes: f.frameBytes,
		eventBytes: f.eventBytes,
		eventTries: f.eventTries,
		eventHits:  f.eventHits,
		eventSkip:  f.eventSkip,
		names:      maps.Clone(f.names),
		nameList:   slices.Clone(f.nameList),
		pnames:     maps.Clone(f.pnames),
		pnameList:  slices.Clone(f.pnameList),
		seqs:       maps.Clone(f.seqs),
		seqList:    slices.Clone(f.seqList),
		stacks:     make(map[uint64]uint32),
	}
	for i := range f.frames {
		// Entries' ids are full slices (len == cap): shared, never appended to.
		g.frames[i] = maps.Clone(f.frames[i])
		g.events[i] = make(map[string][]eventEntry, len(f.events[i]))
		for k, v := range f.events[i] {
			c := slices.Clone(v)
			for j := range c {
				c[j].pname = noPname
			}
			g.events[i][k] = c
		}
		g.more[i] = make(map[string]*eventEntry, len(f.more[i]))
		for k, v := range f.more[i] {
			e := *v
			e.pname = noPname
			g.more[i][k] = &e
		}
	}
	return g
}

// segment folds one segment, leaving its line count and warnings in it.
func (f *folder) segment(seg *segment) {
	f.seg = seg
	if len(f.filter) == 0 && seg.filter != nil {
		f.filter = seg.filter
	}
	f.line = 0
	data := seg.data
	pos := 0
	for pos < len(data) {
		rest := data[pos:]
		nl := bytes.IndexByte(rest, '\n')
		line := rest
		if nl >= 0 {
			line = rest[:nl]
			pos += nl + 1
		} else {
			pos = len(data)
		}
		f.line++
		if len(line) >= MaxLineLen && (nl >= 0 || len(line) > MaxLineLen) {
			seg.err = &SyntaxError{Line: f.line, Msg: fmt.Sprintf("line longer than %d bytes: not perf script text", MaxLineLen)}
			return
		}
		switch f.perlLine(line) {
		case lineFailed:
			return
		case lineHeader:
			if len(f.gstart) == 0 && pos < len(data) {
				pos = f.event(data, pos)
				if seg.err != nil {
					return
				}
			}
		}
	}
	seg.lines = f.line
}

// What perlLine made of a line.
const (
	lineOther  = iota
	lineFrame  // an indented line matching the frame expression
	lineHeader // a header that starts a stack (not filtered out)
	lineBlank
	lineFailed // strict mode: an unrecognised line (seg.err is set)
)

// perlLine is stackcollapse-perf.pl's main loop for one line (without its
// newline).
func (f *folder) perlLine(line []byte) int {
	if len(line) == 0 {
		f.endOfStack()
		return lineBlank
	}
	c := line[0]
	if c == '#' {
		return lineOther
	}
	if !isSpace(c) {
		switch f.header(line) {
		case headerSet:
			return lineHeader
		case headerFiltered:
			return lineOther
		}
		// Perl tries the frame expression on a line it did not take for
		// a header.
		if !f.frame(line) {
			return f.unrecognized(line)
		}
		return lineOther
	}
	if !f.frame(line) {
		return f.unrecognized(line)
	}
	return lineFrame
}

// event reads the frame lines after a header at data[pos:] through the
// blank line that ends the event from the event cache, or line by line
// (filling the cache when every line is a frame). It returns where reading
// goes on. The stack is empty: the header has just started it.
//
// The first maxCandidates events with a given first line are found by that
// line, and a candidate matches when the input holds its text from pos: a
// hit reads the event's bytes once, comparing them, instead of finding its
// end, hashing and comparing it. The others are found by their whole text.
func (f *folder) event(data []byte, pos int) int {
	if f.eventSkip > 0 {
		f.eventSkip--
		return pos
	}
	rest := data[pos:]
	nl := bytes.IndexByte(rest, '\n')
	if nl < 0 {
		return pos
	}
	j := 0
	if f.isJava {
		j = 1
	}
	// The key is the first line's start, where its address is: enough to
	// tell most events apart, and cheap to hash.
	first := rest[:min(nl, eventKeyLen)]
	f.eventTries++
	cands := f.events[j][string(first)]
	for i := range cands {
		if e := &cands[i]; e.match(rest) {
			n := f.cached(e, pos)
			if i > 0 {
				// Most recently seen first: hot events stay cheap to find.
				e := *e
				copy(cands[1:i+1], cands[:i])
				cands[0] = e
			}
			return n
		}
	}
	if f.eventTries >= 1024 {
		// Caching whole events is paying when at least one in four repeats;
		// else leave it off for a while (the frame cache still works).
		if f.eventHits*4 < f.eventTries {
			f.eventSkip = 16 << 10
		}
		f.eventTries, f.eventHits = 0, 0
	}
	if len(cands) == maxCandidates {
		// Events past the candidates are found by their whole text.
		if end := eventEnd(rest); end > 0 {
			if e, ok := f.more[j][string(rest[:end])]; ok {
				return f.cached(e, pos)
			}
		}
	}
	// Read the event line by line through its blank line, and cache it if
	// every line was a frame. At anything else (a header, a comment, a bad
	// line, the input's last line, maxEvent) the main loop goes on.
	line0 := f.line
	p := 0
	for {
		nl := bytes.IndexByte(rest[p:], '\n')
		if nl < 0 || p+nl >= maxEvent {
			return pos + p
		}
		line := rest[p : p+nl]
		p += nl + 1
		f.line++
		switch f.perlLine(line) {
		case lineFrame:
			continue
		case lineBlank:
			f.store(j, cands, first, rest[:p], f.line-line0)
		}
		return pos + p
	}
}

// eventEnd is the length of the event at the start of rest through its
// blank line; 0 if there is none within maxEvent.
func eventEnd(rest []byte) int {
	if rest[0] == '\n' {
		return 1
	}
	i := bytes.Index(rest[:min(len(rest), maxEvent)], blankLine)
	if i < 0 {
		return 0
	}
	return i + 2
}

// store caches the event ev (lines lines) just counted, whose first line's
// key is first and candidates cands.
func (f *folder) store(j int, cands []eventEntry, first, ev []byte, lines int) {
	if f.eventBytes += len(ev); f.eventBytes > maxEventCache {
		for i := range f.events {
			f.events[i] = make(map[string][]eventEntry)
			f.more[i] = make(map[string]*eventEntry)
		}
		f.eventBytes = len(ev)
		cands = nil
	}
	var text string
	if f.stable {
		text = unsafe.String(&ev[0], len(ev))
	} else {
		text = string(ev)
	}
	e := eventEntry{text: text, lines: lines, seq: f.lastSeq, pname: f.lastPname, idx: f.lastIdx}
	if len(cands) < maxCandidates {
		f.events[j][string(first)] = append(cands, e)
	} else {
		f.more[j][e.text] = &e
	}
}

// match reports whether rest starts with the event's text.
func (e *eventEntry) match(rest []byte) bool {
	n := len(e.text)
	return n <= len(rest) && rest[n-1] == '\n' && (n == 1 || rest[n-2] == '\n') && string(rest[:n]) == e.text
}

// cached counts an event found in the cache at data[pos:].
func (f *folder) cached(e *eventEntry, pos int) int {
	f.eventHits++
	f.line += e.lines
	f.lastSeq = e.seq
	if e.pname == f.pnameID {
		// The same process as last time: the same stack.
		f.counts[e.idx] += f.period
	} else {
		f.count(f.pnameID, e.seq, f.period)
		e.pname, e.idx = f.lastPname, f.lastIdx
	}
	f.ids, f.gstart, f.hasPname = f.ids[:0], f.gstart[:0], false
	return pos + len(e.text)
}

func (f *folder) unrecognized(line []byte) int {
	seg := f.seg
	if f.opt.Strict {
		seg.err = &SyntaxError{Line: f.line, Msg: "unrecognized line", Text: string(line)}
		return lineFailed
	}
	seg.nwarn++
	if seg.nwarn <= MaxWarnings {
		seg.warns = append(seg.warns, warning{line: f.line, text: bytes.Clone(truncate(line, 120))})
	}
	return lineOther
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// What header made of a line.
const (
	notHeader = iota
	headerSet
	headerFiltered
)

var unknownPID = []byte("?")

func (f *folder) header(s []byte) int {
	comm, n1, n2, ok := perlHeader(s)
	if !ok {
		return notHeader
	}
	pid, tid := n1, n2
	if !perlTrue(tid) {
		tid, pid = pid, unknownPID
	}
	period := uint64(1)
	if p, e, ok := perlEvent(s); ok {
		if len(f.filter) == 0 {
			f.filter = bytes.Clone(e)
		} else if !bytes.Equal(e, f.filter) {
			if f.defaulted && !f.seg.noticed {
				f.seg.warns = append(f.seg.warns, warning{line: f.line, event: bytes.Clone(e)})
				f.seg.noticed = true
			}
			return headerFiltered
		}
		if perlTrue(p) {
			period = parsePeriod(p)
		}
	}
	f.period = period
	f.isJava = isJavaComm(comm)
	b := appendPname(f.pbuf[:0], comm, pid, tid, f.opt)
	if f.isJava {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	f.pbuf = b
	if !f.hasPnameID || !bytes.Equal(b, f.prevPname) {
		id, ok := f.pnames[string(b)]
		if !ok {
			id = uint32(len(f.pnameList))
			s := string(b)
			f.pnames[s] = id
			f.pnameList = append(f.pnameList, s[:len(s)-1])
		}
		f.pnameID, f.hasPnameID = id, true
		f.prevPname = append(f.prevPname[:0], b...)
	}
	f.hasPname = true
	return headerSet
}

// parsePeriod reads a run of digits; beyond 2^64-1 it stays there.
func parsePeriod(p []byte) uint64 {
	var v uint64
	for _, c := range p {
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 1<<64 - 1
		}
		v = v*10 + d
	}
	return v
}

// isJavaComm: stackcollapse-perf.pl tidies Java class names when the
// process name matches ^java (`$pname =~ m/^java/`; the name starts with
// comm, so comm starting with java is the same test in every mode).
func isJavaComm(comm []byte) bool { return bytes.HasPrefix(comm, []byte("java")) }

// appendPname appends the process name as stackcollapse-perf.pl prints it:
// comm, comm-PID or comm-PID/TID, blanks made underscores.
func appendPname(dst, comm, pid, tid []byte, opt *CollapseOptions) []byte {
	start := len(dst)
	dst = append(dst, comm...)
	if opt.TID {
		dst = append(dst, '-')
		dst = append(dst, pid...)
		dst = append(dst, '/')
		dst = append(dst, tid...)
	} else if opt.PID {
		dst = append(dst, '-')
		dst = append(dst, pid...)
	}
	for i, b := range dst[start:] {
		if b == ' ' {
			dst[start+i] = '_'
		}
	}
	return dst
}

// perlTrue is Perl's truth of a captured string: defined, not "" and not "0".
func perlTrue(b []byte) bool { return len(b) > 0 && !(len(b) == 1 && b[0] == '0') }

// frame takes a line for the frame expression: false if it does not match.
func (f *folder) frame(line []byte) bool {
	if !f.hasPname {
		_, _, _, ok := perlFrame(line)
		return ok
	}
	j := 0
	if f.isJava {
		j = 1
	}
	e, ok := f.frames[j][string(line)]
	if !ok {
		e = f.parseFrame(line)
		if f.frameBytes += len(line); f.frameBytes > maxFrameCache {
			for i := range f.frames {
				f.frames[i] = make(map[string]frameEntry)
			}
			f.frameBytes = len(line)
			f.arena = nil
		}
		f.frames[j][string(line)] = e
	}
	if !e.ok {
		return false
	}
	if !e.skip {
		f.gstart = append(f.gstart, int32(len(f.ids)))
		f.ids = append(f.ids, e.ids...)
	}
	return true
}

// parseFrame is what a frame line gives, for the current process.
func (f *folder) parseFrame(line []byte) frameEntry {
	pc, raw, mod, ok := perlFrame(line)
	if !ok {
		return frameEntry{}
	}
	raw = stripOffset(raw)
	if len(raw) > 0 && raw[0] == '(' {
		return frameEntry{ok: true, skip: true} // process names
	}
	// Perl's split drops trailing empty fields.
	parts := raw
	for len(parts) >= 2 && bytes.HasSuffix(parts, arrow) {
		parts = parts[:len(parts)-2]
	}
	start := len(f.arena)
	for n := 0; len(parts) > 0; n++ {
		var fn []byte
		if i := bytes.Index(parts, arrow); i >= 0 {
			fn, parts = parts[:i], parts[i+2:]
		} else {
			fn, parts = parts, nil
		}
		f.scratch = tidyName(f.scratch[:0], fn, pc, mod, n > 0, f.isJava, f.opt)
		f.arena = append(f.arena, f.internName(f.scratch))
	}
	return frameEntry{ok: true, ids: f.arena[start:len(f.arena):len(f.arena)]}
}

func (f *folder) internName(b []byte) uint32 {
	if id, ok := f.names[string(b)]; ok {
		return id
	}
	id := uint32(len(f.nameList))
	s := string(b)
	f.names[s] = id
	f.nameList = append(f.nameList, s)
	return id
}

// endOfStack is the blank line: the stack is counted and the state reset.
func (f *folder) endOfStack() {
	if !f.hasPname {
		return
	}
	k := f.key[:0]
	for g := len(f.gstart) - 1; g >= 0; g-- {
		end := len(f.ids)
		if g+1 < len(f.gstart) {
			end = int(f.gstart[g+1])
		}
		for _, id := range f.ids[f.gstart[g]:end] {
			k = binary.LittleEndian.AppendUint32(k, id)
		}
	}
	f.key = k
	seq, ok := f.seqs[string(k)]
	if !ok {
		seq = uint32(len(f.seqList))
		s := string(k)
		f.seqs[s] = seq
		f.seqList = append(f.seqList, s)
	}
	f.lastSeq = seq
	n := f.period
	if f.mult > 1 {
		n *= f.mult
	}
	f.count(f.pnameID, seq, n)
	f.ids, f.gstart, f.hasPname = f.ids[:0], f.gstart[:0], false
}

// count adds n to the stack (pname, seq), leaving where it is counted in
// lastPname, lastIdx.
func (f *folder) count(pname, seq uint32, n uint64) {
	key := uint64(pname)<<32 | uint64(seq)
	i, ok := f.stacks[key]
	if ok {
		f.counts[i] += n
	} else {
		i = uint32(len(f.counts))
		f.stacks[key] = i
		f.stackKeys = append(f.stackKeys, key)
		f.counts = append(f.counts, n)
	}
	f.lastPname, f.lastIdx = pname, i
}
