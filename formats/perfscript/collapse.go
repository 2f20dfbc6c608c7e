package perfscript

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// CollapseOptions select what Collapse prints. They are the options of
// stackcollapse-perf.pl of the same names.
type CollapseOptions struct {
	PID    bool // append the PID to the process name: comm-PID ("?" when the input has none)
	TID    bool // append PID and TID: comm-PID/TID
	Kernel bool // annotate kernel frames with _[k]
	JIT    bool // annotate JIT frames (/tmp/perf-PID.map) with _[j]
	All    bool // all annotations (Kernel and JIT)
	Addrs  bool // include the address of frames without a symbol: [mod <addr>]
	// EventFilter keeps only events of this type (as perf script prints it,
	// e.g. "cycles" or "cpu-clock:pppH"). Empty keeps the type of the first
	// event seen, as stackcollapse-perf.pl does.
	EventFilter string
	// Warn receives what stackcollapse-perf.pl prints on stderr: lines it
	// does not recognise (with their line number) and the event-filter
	// notice. Nil discards them.
	Warn io.Writer
	// Strict makes an unrecognised line an error (a *SyntaxError) instead
	// of a warning.
	Strict bool
}

// MaxWarnings is how many unrecognised lines Collapse reports one by one
// before it only counts them.
const MaxWarnings = 20

// Collapse reads perf script text from r and writes folded stacks to w,
// byte-identical to `stackcollapse-perf.pl` with the same options: one line
// per distinct stack, "proc;root;...;leaf COUNT", sorted bytewise, COUNT
// being the sum of the events' periods (1 when perf printed none).
//
// The input is streamed in segments of about 512 KiB cut after blank lines
// (where the Perl script's state is back to its start), folded by one
// worker per CPU and merged in input order, so warnings and errors come out
// as a sequential reading would give them. Memory grows with the number of
// distinct stacks and frames (and is bounded for the caches), not with the
// input.
func Collapse(r io.Reader, w io.Writer, opt CollapseOptions) error {
	return collapse(r, w, opt, foldConfig{workers: collapseWorkers(), segSize: segSize, maxSeg: maxSeg, warmup: warmup})
}

// Collapser folds events given one at a time, as the text lines perf
// script would print for them, with what Collapse uses to fold text. A
// reader of perf's binary perf.data prints each distinct stack once, as
// perf script would, and folds it with the number of times it occurred, so
// that its output is byte-identical to perf script piped into Collapse.
type Collapser struct {
	opt CollapseOptions
	f   *folder
	seg segment // what the last Fold warned about
	m   merger
}

// NewCollapser returns an empty Collapser.
func NewCollapser(opt CollapseOptions) *Collapser {
	if opt.All {
		opt.Kernel, opt.JIT = true, true
	}
	c := &Collapser{opt: opt}
	c.f = newFolder(&c.opt)
	c.m = merger{opt: &c.opt, noLines: true}
	return c
}

// Fold folds n identical events: header is the event's header line, frames
// its frame lines (leaf first), without newlines, as perf script prints
// them; the event is ended as by a blank line. Warnings and errors have no
// line number.
func (c *Collapser) Fold(header []byte, frames [][]byte, n uint64) error {
	f := c.f
	c.seg.warns, c.seg.nwarn, c.seg.noticed, c.seg.err = c.seg.warns[:0], 0, false, nil
	f.seg, f.line = &c.seg, 0
	// Perl tries the frame expression on a line it did not take for a
	// header; the frame lines go to the frame expression as they are.
	failed := f.header(header) == notHeader && !f.frame(header) && f.unrecognized(header) == lineFailed
	for _, fr := range frames {
		if failed {
			break
		}
		failed = !f.frame(fr) && f.unrecognized(fr) == lineFailed
	}
	if !failed {
		f.mult = n
		f.endOfStack()
		f.mult = 0
	}
	return c.m.merge(&c.seg)
}

// Write writes the folded stacks, sorted, and the count of unrecognised
// lines not shown one by one to Warn.
func (c *Collapser) Write(w io.Writer) error {
	c.m.finish()
	return writeFolded(w, []*folder{c.f})
}

func collapse(r io.Reader, w io.Writer, opt CollapseOptions, cfg foldConfig) error {
	return collapseCut(&cutter{r: r}, w, opt, cfg)
}

func collapseCut(c *cutter, w io.Writer, opt CollapseOptions, cfg foldConfig) error {
	if opt.All {
		opt.Kernel, opt.JIT = true, true
	}
	folders, err := fold(c, &opt, cfg)
	if err != nil {
		return err
	}
	return writeFolded(w, folders)
}

// collapseWorkers is how many goroutines fold segments: one per CPU Go may
// use, at most 8. Each worker fills caches of its own, so the work of
// reading a new event once is repeated per worker; measured on 2 CPUs only
// (docs/perf.md), hence the cap.
func collapseWorkers() int {
	return min(runtime.GOMAXPROCS(0), 8)
}

// foldConfig sizes the pipeline (tests make segments small).
type foldConfig struct {
	workers int
	segSize int  // cut a segment after the last blank line once it holds this much
	maxSeg  int  // cut inside an event when there is no blank line in this much; > MaxLineLen
	warmup  int  // bytes folded by one worker before the others start from copies of its caches
	mapped  bool // the input is a mapped file (collapseBytes)
}

const (
	// segSize is the size of the input segments handed to the workers: big
	// enough that handing over costs nothing (a few µs each), small enough
	// that the few in flight keep memory flat.
	segSize = 512 << 10
	// maxSeg bounds a segment with no blank line in it: past it the segment
	// is cut at a line end and the rest of the event goes to the same
	// worker. It holds a whole line of MaxLineLen.
	maxSeg = MaxLineLen + segSize
	// warmup is how much one worker folds before the others start from
	// its caches: most of what a recording repeats has been seen by then
	// (a 10 s recording of a C++ program is 11 MB, 81% of its events
	// repeats of earlier ones, most of them in its first MBs).
	warmup = 4 << 20
)

var blankLine = []byte("\n\n")

// segment is a stretch of the input that ends after a blank line (or at the
// end of the input, or, when open is set, at a line end inside an event).
type segment struct {
	data   []byte
	buf    *[]byte // backing buffer, back to the pool once merged
	filter []byte  // the event filter known when the segment was cut; nil: none yet
	open   bool    // cut inside an event: the rest follows on next, for the same worker
	next   chan *segment
	long   bool  // a line longer than MaxLineLen follows data
	rerr   error // the read error that ended the input after data

	// Set by the worker; read by the merger once done is closed.
	lines   int // lines in data
	warns   []warning
	nwarn   int  // unrecognised lines in the segment (warns holds the first MaxWarnings)
	noticed bool // warns holds the event-filter notice
	err     error
	done    chan struct{}
}

// warning is one line of stderr: an unrecognised line, or the event-filter
// notice when event is set.
type warning struct {
	line  int // 1-based, within the segment
	text  []byte
	event []byte
}

// cutter reads the input and cuts it into segments. With whole set the
// input is all in memory (a mapped file): segments are slices of it, and
// nothing is read or copied.
type cutter struct {
	r           io.Reader
	whole       []byte
	ctx         context.Context // checked between segments of whole
	segSize     int
	maxSeg      int
	carry       []byte // input after the last cut
	eof         bool
	filter      []byte
	filterKnown bool
}

// next fills buf with the next segment; nil at the end of the input.
func (c *cutter) next(buf *[]byte) *segment {
	if c.whole != nil {
		return c.nextWhole()
	}
	if c.eof && len(c.carry) == 0 {
		return nil
	}
	data := append((*buf)[:0], c.carry...)
	c.carry = c.carry[:0]
	seg := &segment{buf: buf, done: make(chan struct{})}
	searched := 0 // data[:searched] has no blank line
	cut := -1
	for {
		if len(data) >= c.segSize || c.eof {
			from := max(searched-1, 0)
			if i := afterLastBlank(data[from:]); i >= 0 {
				cut = from + i
				break
			}
			searched = len(data)
			if c.eof {
				cut = len(data)
				break
			}
			if len(data) >= c.maxSeg {
				cut = bytes.LastIndexByte(data, '\n') + 1
				if len(data)-cut > MaxLineLen {
					seg.long = true
					c.eof = true
					data = data[:cut]
				} else {
					seg.open = true
				}
				break
			}
		}
		if len(data) == cap(data) {
			data = slices.Grow(data, c.segSize)
		}
		n, err := c.r.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			c.eof = true
		} else if err != nil {
			// Whole lines before the error are folded, as the line reader
			// did; the error follows them.
			cut = bytes.LastIndexByte(data, '\n') + 1
			data = data[:cut]
			seg.rerr = err
			c.eof = true
			break
		}
	}
	c.carry = append(c.carry, data[cut:]...)
	seg.data = data[:cut]
	*buf = data[:0]
	c.setFilter(seg)
	return seg
}

// nextWhole is next on an input held in memory: the same cuts as reading
// it segSize bytes at a time would make.
func (c *cutter) nextWhole() *segment {
	if len(c.whole) == 0 {
		return nil
	}
	seg := &segment{done: make(chan struct{})}
	if c.ctx != nil {
		if err := c.ctx.Err(); err != nil {
			seg.rerr = err
			c.whole = c.whole[:0]
			return seg
		}
	}
	rest := c.whole
	n := min(len(rest), c.segSize)
	searched := 0 // rest[:searched] has no blank line
	cut := -1
	for {
		from := max(searched-1, 0)
		if i := afterLastBlank(rest[from:n]); i >= 0 {
			cut = from + i
			break
		}
		searched = n
		if n == len(rest) {
			cut = n
			break
		}
		if n >= c.maxSeg {
			cut = bytes.LastIndexByte(rest[:n], '\n') + 1
			if n-cut > MaxLineLen {
				seg.long = true
				seg.data = rest[:cut]
				c.whole = c.whole[:0]
				c.setFilter(seg)
				return seg
			}
			seg.open = true
			break
		}
		n = min(len(rest), n+c.segSize)
	}
	seg.data = rest[:cut:cut]
	c.whole = rest[cut:]
	c.setFilter(seg)
	return seg
}

// setFilter notes the first event type seen, and gives seg the filter.
func (c *cutter) setFilter(seg *segment) {
	if !c.filterKnown {
		if e := firstEvent(seg.data); e != nil {
			c.filter = e
			c.filterKnown = true
		}
	}
	if c.filterKnown {
		seg.filter = c.filter
	}
}

// afterLastBlank is the index just past the last blank line in b (past the
// second newline of its last "\n\n"), or -1. One newline at a time from the
// end: the last event is a few KB, and LastIndexByte is vectorised where
// LastIndex of two bytes is not.
func afterLastBlank(b []byte) int {
	for i := len(b); i > 0; {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j <= 0 {
			return -1
		}
		if b[j-1] == '\n' {
			return j + 1
		}
		i = j
	}
	return -1
}

// firstEvent is the event of the first header in data that has one: the
// event stackcollapse-perf.pl keeps when no filter is given.
func firstEvent(data []byte) []byte {
	for len(data) > 0 {
		line := data
		if nl := bytes.IndexByte(data, '\n'); nl >= 0 {
			line, data = data[:nl], data[nl+1:]
		} else {
			data = nil
		}
		if len(line) == 0 || line[0] == '#' || isSpace(line[0]) {
			continue
		}
		if _, _, _, ok := perlHeader(line); ok {
			if _, e, ok := perlEvent(line); ok {
				return bytes.Clone(e)
			}
		}
	}
	return nil
}

// fold reads r and returns the workers' tables. Warnings go out in input
// order as segments are merged.
func fold(c *cutter, opt *CollapseOptions, cfg foldConfig) ([]*folder, error) {
	c.segSize, c.maxSeg = cfg.segSize, cfg.maxSeg
	if opt.EventFilter != "" {
		c.filter, c.filterKnown = []byte(opt.EventFilter), true
	}
	m := &merger{opt: opt}
	var buf []byte
	if c.whole == nil {
		buf = make([]byte, 0, cfg.segSize+cfg.segSize/4)
	}
	// The first cfg.warmup bytes are folded here, by one folder; the other
	// workers then start from copies of its caches, so what the input
	// repeats is not learnt once per worker.
	f := newFolder(opt)
	f.stable = c.whole != nil
	done := 0
	for seg := c.next(&buf); seg != nil; {
		f.foldSegment(seg, cfg.mapped)
		if err := m.merge(seg); err != nil {
			return nil, err
		}
		done += len(seg.data)
		open := seg.open
		if seg = c.next(seg.buf); seg != nil && cfg.workers > 1 && done >= cfg.warmup && !open {
			folders := []*folder{f}
			for range cfg.workers - 1 {
				folders = append(folders, f.clone())
			}
			return foldParallel(c, seg, m, folders, cfg)
		}
	}
	return []*folder{f}, m.finish()
}

// foldParallel folds with one worker per folder while this goroutine
// reads: it cuts the next segment while the workers fold the ones before,
// and merges the oldest segment in flight when it needs its buffer back
// (workers+1 buffers), so a segment costs two wake-ups, one each way. A
// segment cut inside an event goes with the rest of that event to the
// worker that folds its start.
func foldParallel(c *cutter, first *segment, m *merger, folders []*folder, cfg foldConfig) ([]*folder, error) {
	work := make(chan *segment, len(folders))
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for _, f := range folders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seg := range work {
				for {
					f.foldSegment(seg, cfg.mapped)
					close(seg.done)
					if !seg.open {
						break
					}
					select {
					case seg = <-seg.next:
					case <-quit:
						return
					}
				}
			}
		}()
	}
	var inflight []*segment // cut, not merged yet, in input order
	free := make([]*[]byte, 0, len(folders))
	for range len(folders) {
		var b []byte
		if c.whole == nil {
			b = make([]byte, 0, cfg.segSize+cfg.segSize/4)
		}
		free = append(free, &b)
	}
	var chain chan *segment // where the rest of an event cut open goes
	var err error
	for seg := first; seg != nil; {
		if seg.open {
			seg.next = make(chan *segment, 1)
		}
		if chain != nil {
			chain <- seg // buffered: its worker takes it once it has folded the start
		} else {
			work <- seg
		}
		chain = seg.next
		inflight = append(inflight, seg)
		if len(free) == 0 {
			old := inflight[0]
			inflight = inflight[1:]
			<-old.done
			if err = m.merge(old); err != nil {
				break
			}
			free = append(free, old.buf)
		}
		buf := free[len(free)-1]
		free = free[:len(free)-1]
		seg = c.next(buf)
	}
	close(work)
	if err == nil {
		for _, seg := range inflight {
			<-seg.done
			if err = m.merge(seg); err != nil {
				break
			}
		}
	}
	close(quit)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	return folders, m.finish()
}

// merger replays the segments' warnings in input order, numbering lines
// from the start of the input.
type merger struct {
	opt      *CollapseOptions
	base     int // lines before the segment being merged
	warnings int
	noticed  bool
	noLines  bool // the lines have no numbers (Collapser.Fold)
}

func (m *merger) merge(seg *segment) error {
	shown := 0
	for _, w := range seg.warns {
		if w.event != nil {
			if !m.noticed && m.opt.Warn != nil {
				fmt.Fprintf(m.opt.Warn, "Filtering for events of type: %s\n", w.event)
			}
			m.noticed = true
			continue
		}
		shown++
		m.warnings++
		if m.opt.Warn != nil && m.warnings <= MaxWarnings {
			if m.noLines {
				fmt.Fprintf(m.opt.Warn, "unrecognized line: %q\n", w.text)
			} else {
				fmt.Fprintf(m.opt.Warn, "line %d: unrecognized line: %q\n", m.base+w.line, w.text)
			}
		}
	}
	m.warnings += seg.nwarn - shown
	if seg.err != nil {
		if se, ok := seg.err.(*SyntaxError); ok {
			se.Line += m.base
		}
		return seg.err
	}
	m.base += seg.lines
	if seg.long {
		return &SyntaxError{Line: m.base + 1, Msg: fmt.Sprintf("line longer than %d bytes: not perf script text", MaxLineLen)}
	}
	if seg.rerr != nil {
		return seg.rerr
	}
	return nil
}

func (m *merger) finish() error {
	if m.warnings > MaxWarnings && m.opt.Warn != nil {
		fmt.Fprintf(m.opt.Warn, "%d more unrecognized lines not shown\n", m.warnings-MaxWarnings)
	}
	return nil
}

// foldedLine is one output line before sorting.
type foldedLine struct {
	stack string
	n     uint64
}

// writeFolded writes the workers' stacks sorted bytewise, one line each;
// stacks several workers (or several id sequences) spell the same way are
// summed. Every stack is spelt into one buffer sized first (C++ stacks
// run to kilobytes: grown one by one, their builders were a sixth of the
// time on a 60 MB C++ input).
func writeFolded(w io.Writer, folders []*folder) error {
	n, size := 0, 0
	for _, f := range folders {
		n += len(f.stackKeys)
		for _, key := range f.stackKeys {
			size += len(f.pnameList[key>>32])
			seq := f.seqList[uint32(key)]
			for p := 0; p+4 <= len(seq); p += 4 {
				size += 1 + len(f.nameList[binary.LittleEndian.Uint32([]byte(seq[p:p+4]))])
			}
		}
	}
	lines := make([]foldedLine, 0, n)
	var sb strings.Builder
	sb.Grow(size)
	type span struct{ start, end int }
	spans := make([]span, 0, n)
	for _, f := range folders {
		for _, key := range f.stackKeys {
			start := sb.Len()
			sb.WriteString(f.pnameList[key>>32])
			seq := f.seqList[uint32(key)]
			for p := 0; p+4 <= len(seq); p += 4 {
				sb.WriteByte(';')
				sb.WriteString(f.nameList[binary.LittleEndian.Uint32([]byte(seq[p:p+4]))])
			}
			spans = append(spans, span{start, sb.Len()})
		}
	}
	all := sb.String()
	i := 0
	for _, f := range folders {
		for k := range f.stackKeys {
			lines = append(lines, foldedLine{stack: all[spans[i].start:spans[i].end], n: f.counts[k]})
			i++
		}
	}
	slices.SortFunc(lines, func(a, b foldedLine) int { return strings.Compare(a.stack, b.stack) })
	bw := bufio.NewWriterSize(w, 64<<10)
	var num [24]byte
	for i := 0; i < len(lines); {
		l := lines[i]
		for i++; i < len(lines) && lines[i].stack == l.stack; i++ {
			l.n += lines[i].n
		}
		bw.WriteString(l.stack)
		bw.WriteByte(' ')
		bw.Write(strconv.AppendUint(num[:0], l.n, 10))
		bw.WriteByte('\n')
	}
	return bw.Flush()
}
