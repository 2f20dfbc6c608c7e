package taskdump

// Parsing of task-dump text: the reference service's format (rust/README.md,
// "/debug/tokio/dump (text format)") and tokio's own Display of a task's
// trace, the tree that tokio 1.54.1 writes in
// src/runtime/task/trace/tree.rs (`╼`/`└╼`/`├╼` lines, outermost first,
// U+00A0 no-break spaces in the indentation).

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ianlancetaylor/demangle"
)

// Dump is one parsed task dump.
type Dump struct {
	// From the reference service's header line ("# tokio task dump
	// service=NAME pid=PID unix_ns=NS tasks=N"); zero where absent.
	Service     string
	PID         int
	UnixNanos   int64
	HeaderTasks int // tasks the header announces (-1: no header)

	Tasks []Task
	// Cut says the body was longer than Limits.MaxBytes (it was read up
	// to there and the task the limit cut through was dropped) or had more
	// than Limits.MaxTasks tasks (the first ones are kept).
	Cut bool
	// Bytes is how much of the body was read.
	Bytes int64
	// FramesCut counts frames dropped from stacks deeper than
	// Limits.MaxFrames (the outermost ones); TracesCut traces dropped from
	// tasks with more than Limits.MaxTraces.
	FramesCut, TracesCut int
}

// Task is one task of a dump.
type Task struct {
	ID   string // tokio's task id, decimal
	Name string // "" when the dump gives none ("-")
	// Traces are the task's stacks, each innermost frame first: one per
	// tokio leaf future the task waits on. None: the task waits on
	// something tokio does not trace (or the binary has no symbols and the
	// dump is in tokio's tree format, which then prints nothing).
	Traces [][]Frame
}

// Frame is one frame of a trace.
type Frame struct {
	Func      string // demangled, hash suffix stripped; "" for an unnamed frame ("??")
	File      string
	Line, Col int64
	Addr      uint64 // for unnamed frames printed as "?? at 0xADDR"
}

// Limits bound what one dump may make profcap hold.
type Limits struct {
	MaxBytes  int64 // most of a body read (default 32 MiB); the rest is cut
	MaxLine   int   // longest line, bytes (default 64 KiB)
	MaxTasks  int   // most tasks kept (default 100,000); the rest are cut
	MaxTraces int   // most traces per task (default 256)
	MaxFrames int   // most frames per trace (default 1024; the innermost are kept)
	// MaxTotalFrames bounds the frames of all traces of one dump (default
	// 1,000,000): tokio's tree repeats a shared path for every leaf, so a
	// small tree can stand for many frames.
	MaxTotalFrames int
}

// DefaultLimits: real dumps have lines of a few KiB (deeply generic
// release-build names reach 2 KiB), a few traces per task, stacks of at
// most a few hundred frames and 1.5–2 KiB of text per task (the reference
// service's), so 32 MiB holds about 20,000 tasks of 30 frames. A hostile
// dump within them costs at most about 150 MiB (TestParseMemory).
var DefaultLimits = Limits{MaxBytes: 32 << 20, MaxLine: 64 << 10, MaxTasks: 100_000, MaxTraces: 256, MaxFrames: 1024, MaxTotalFrames: 1_000_000}

func (l Limits) orDefault() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultLimits.MaxBytes
	}
	if l.MaxLine <= 0 {
		l.MaxLine = DefaultLimits.MaxLine
	}
	if l.MaxTasks <= 0 {
		l.MaxTasks = DefaultLimits.MaxTasks
	}
	if l.MaxTraces <= 0 {
		l.MaxTraces = DefaultLimits.MaxTraces
	}
	if l.MaxFrames <= 0 {
		l.MaxFrames = DefaultLimits.MaxFrames
	}
	if l.MaxTotalFrames <= 0 {
		l.MaxTotalFrames = DefaultLimits.MaxTotalFrames
	}
	return l
}

// SyntaxError is a line of a dump profcap does not understand.
type SyntaxError struct {
	Line int    // 1-based
	Text string // the line, quoted (escaped) and shortened
	Msg  string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("line %d: %s: %s", e.Line, e.Msg, e.Text)
}

// Pos returns the line number of the error.
func (e *SyntaxError) Pos() int { return e.Line }

func syntaxErr(n int, line, msg string) error {
	t := line
	if len(t) > 120 {
		t = strings.ToValidUTF8(t[:120], "") + "…"
	}
	return &SyntaxError{Line: n, Text: strconv.Quote(t), Msg: msg}
}

// ErrNotDump is returned for input that does not start like a task dump.
var ErrNotDump = errors.New("not a tokio task dump")

// Parse reads one dump in either format (detected per task), at most
// Limits.MaxBytes of it: a longer body is cut there, the task the cut went
// through is dropped and Dump.Cut is set. Parse never panics; every line
// it does not understand is a *SyntaxError naming it; an error of r (a
// deadline) is returned as is.
func Parse(r io.Reader, l Limits) (*Dump, error) {
	l = l.orDefault()
	p := &parser{l: l, d: &Dump{HeaderTasks: -1}, names: map[string]string{}}
	lr := &limitReader{r: r, left: l.MaxBytes}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, min(4096, l.MaxLine+2)), l.MaxLine+2) // +2: the line end
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if atEOF && lr.cut && bytes.IndexByte(data, '\n') < 0 {
			return 0, nil, nil // the line the cut went through
		}
		return bufio.ScanLines(data, atEOF)
	})
	for sc.Scan() {
		p.n++
		line := sc.Bytes()
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if err := p.line(line); err != nil {
			if err == errTooManyTasks {
				p.d.Cut, p.d.Bytes = true, lr.n
				return p.d, nil
			}
			return nil, err
		}
	}
	err := sc.Err()
	if lr.cut && (err == nil || errors.Is(err, errSizeLimit)) {
		p.d.Cut, p.d.Bytes = true, lr.n
		p.task = nil // possibly incomplete
		return p.d, nil
	}
	if err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, syntaxErr(p.n+1, "", fmt.Sprintf("line longer than %d bytes", l.MaxLine))
		}
		return nil, err
	}
	if p.task != nil {
		p.finish()
	}
	if p.n == 0 {
		return nil, fmt.Errorf("%w: empty", ErrNotDump)
	}
	p.d.Bytes = lr.n
	return p.d, nil
}

var (
	errSizeLimit    = errors.New("dump larger than the size limit")
	errTooManyTasks = errors.New("more tasks than the limit")
)

// limitReader reads at most left bytes and then, if r has more, sets cut.
type limitReader struct {
	r    io.Reader
	left int64
	n    int64
	cut  bool
}

func (l *limitReader) Read(b []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		for {
			n, err := l.r.Read(one[:])
			if n > 0 {
				l.cut = true
				return 0, errSizeLimit
			}
			if err != nil {
				return 0, err
			}
		}
	}
	if int64(len(b)) > l.left {
		b = b[:l.left]
	}
	n, err := l.r.Read(b)
	l.left -= int64(n)
	l.n += int64(n)
	return n, err
}

type format int

const (
	fmtUnknown format = iota
	fmtText           // "  trace K" and 4-space frame lines
	fmtTree           // tokio's tree
)

type parser struct {
	l      Limits
	d      *Dump
	n      int // line number
	task   *Task
	fmt    format
	trace  []Frame // text format: the trace being read
	inTr   bool
	path   []Frame // tree format: frames from the root to the current node
	leaf   bool    // tree format: path ends at a node not yet known to have children
	frames int     // frames kept in traces so far
	names  map[string]string
}

func (p *parser) intern(s string) string {
	if v, ok := p.names[s]; ok {
		return v
	}
	if len(p.names) < 1<<16 {
		p.names[s] = s
	}
	return s
}

const (
	nbsp = '\u00a0'
	mark = '╼'
)

func (p *parser) line(b []byte) error {
	if !utf8.Valid(b) {
		if p.n == 1 {
			return fmt.Errorf("%w: %v", ErrNotDump, syntaxErr(p.n, string(b), "not UTF-8"))
		}
		return syntaxErr(p.n, string(b), "not UTF-8")
	}
	s := string(b)
	switch {
	case s == "":
		if p.task != nil {
			p.finish()
		}
		return nil
	case strings.HasPrefix(s, "#"):
		if p.task != nil {
			return syntaxErr(p.n, s, "comment inside a task block")
		}
		if rest, ok := strings.CutPrefix(s, "# tokio task dump"); ok {
			return p.header(rest)
		}
		return nil
	case strings.HasPrefix(s, "task "):
		if p.task != nil {
			p.finish() // a block without its empty line
		}
		return p.taskLine(s)
	}
	if p.task == nil {
		if p.n == 1 {
			return fmt.Errorf("%w: %v", ErrNotDump, syntaxErr(p.n, s, "expected '# tokio task dump' or 'task id=…'"))
		}
		return syntaxErr(p.n, s, "expected 'task id=…' or an empty line")
	}
	if rest, ok := strings.CutPrefix(s, "  trace "); ok {
		if p.fmt == fmtTree {
			return syntaxErr(p.n, s, "'trace' line inside a tree")
		}
		if _, err := strconv.ParseUint(rest, 10, 32); err != nil {
			return syntaxErr(p.n, s, "bad trace number")
		}
		p.fmt = fmtText
		p.endTrace()
		p.inTr = true
		return nil
	}
	if rest, ok := strings.CutPrefix(s, "    "); ok && p.fmt == fmtText {
		if !p.inTr {
			return syntaxErr(p.n, s, "frame outside a trace")
		}
		if len(p.trace) >= p.l.MaxFrames || p.frames+len(p.trace) >= p.l.MaxTotalFrames {
			p.d.FramesCut++ // outer frames beyond the limit
			return nil
		}
		f, ok := parseFrame(rest)
		if !ok {
			return syntaxErr(p.n, s, "bad frame")
		}
		p.trace = append(p.trace, p.internFrame(f))
		return nil
	}
	if p.fmt == fmtText {
		return syntaxErr(p.n, s, "expected a frame (4 spaces in), 'trace K' or an empty line")
	}
	return p.treeLine(s)
}

func (p *parser) internFrame(f Frame) Frame {
	f.Func = p.intern(f.Func)
	f.File = p.intern(f.File)
	return f
}

func (p *parser) header(rest string) error {
	if p.d.HeaderTasks >= 0 || len(p.d.Tasks) > 0 {
		return syntaxErr(p.n, "# tokio task dump"+rest, "second header")
	}
	p.d.HeaderTasks = 0
	for _, kv := range strings.Fields(rest) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch k {
		case "service":
			p.d.Service = clean(v, 128)
		case "pid":
			p.d.PID, _ = strconv.Atoi(v)
		case "unix_ns":
			p.d.UnixNanos, _ = strconv.ParseInt(v, 10, 64)
		case "tasks":
			p.d.HeaderTasks, _ = strconv.Atoi(v)
			p.d.HeaderTasks = max(0, p.d.HeaderTasks)
		}
	}
	return nil
}

func (p *parser) taskLine(s string) error {
	rest, ok := strings.CutPrefix(s, "task id=")
	if !ok {
		return syntaxErr(p.n, s, "expected 'task id=ID name=NAME'")
	}
	id, name, _ := strings.Cut(rest, " ")
	if id == "" || len(id) > 20 || strings.Trim(id, "0123456789") != "" {
		return syntaxErr(p.n, s, "task id is not a decimal number")
	}
	if name != "" {
		n, ok := strings.CutPrefix(name, "name=")
		if !ok {
			return syntaxErr(p.n, s, "expected 'name=' after the task id")
		}
		name = n
	}
	if name == "-" {
		name = ""
	}
	if len(p.d.Tasks) >= p.l.MaxTasks {
		return errTooManyTasks
	}
	p.task = &Task{ID: p.intern(id), Name: p.intern(clean(name, 256))}
	p.fmt = fmtUnknown
	return nil
}

// treeLine reads one line of tokio's tree: the root "╼ FRAME", a child
// "PREFIX└╼ FRAME" or "PREFIX├╼ FRAME" whose marker sits at column 3·depth
// (in characters; PREFIX is spaces, no-break spaces and │). tokio writes a
// task's several roots without a newline between them, so a "╼ " later on
// a line starts a new root.
func (p *parser) treeLine(s string) error {
	rs := []rune(s)
	col := -1
	for i, r := range rs {
		if r == mark {
			col = i
			break
		}
		switch r {
		case ' ', nbsp, '│':
			continue
		case '└', '├':
			if i+1 < len(rs) && rs[i+1] == mark {
				continue
			}
		}
		return syntaxErr(p.n, s, "not a frame, trace or tree line")
	}
	if col < 0 {
		return syntaxErr(p.n, s, "not a frame, trace or tree line")
	}
	if col%3 != 0 || (col > 0 && rs[col-1] != '└' && rs[col-1] != '├') {
		return syntaxErr(p.n, s, "tree marker out of place")
	}
	depth := col / 3
	if depth > len(p.path) {
		return syntaxErr(p.n, s, fmt.Sprintf("tree depth %d below a node of depth %d", depth, len(p.path)-1))
	}
	p.fmt = fmtTree
	rest := rs[col+1:]
	for {
		if len(rest) > 0 && (rest[0] == nbsp || rest[0] == ' ') {
			rest = rest[1:]
		} else if len(rest) > 0 {
			return syntaxErr(p.n, s, "no space after the tree marker")
		}
		// A later "╼ " starts another root.
		end := len(rest)
		for i := 0; i+1 < len(rest); i++ {
			if rest[i] == mark && (rest[i+1] == nbsp || rest[i+1] == ' ') {
				end = i
				break
			}
		}
		f, ok := parseFrame(string(rest[:end]))
		if !ok {
			return syntaxErr(p.n, s, "bad frame")
		}
		p.treeNode(depth, p.internFrame(f))
		if end == len(rest) {
			return nil
		}
		rest = rest[end+1:]
		depth = 0
	}
}

// treeNode adds a node at depth: the path so far was a leaf if the new
// node is not its child. The path holds every frame from the root (as many
// as the input has lines); a trace keeps its innermost MaxFrames.
func (p *parser) treeNode(depth int, f Frame) {
	if depth < len(p.path) {
		p.emitPath()
		p.path = p.path[:depth]
	}
	p.path = append(p.path, f)
	p.leaf = true
}

func (p *parser) emitPath() {
	if !p.leaf || len(p.path) == 0 {
		return
	}
	p.leaf = false
	n := min(len(p.path), p.l.MaxFrames)
	p.d.FramesCut += len(p.path) - n
	if len(p.task.Traces) >= p.l.MaxTraces || p.frames+n > p.l.MaxTotalFrames {
		p.d.TracesCut++
		return
	}
	tr := make([]Frame, n)
	for i := range n {
		tr[i] = p.path[len(p.path)-1-i] // innermost first
	}
	p.addTrace(tr)
}

func (p *parser) endTrace() {
	if p.inTr {
		p.addTrace(p.trace)
		p.trace = nil
		p.inTr = false
	}
}

func (p *parser) addTrace(tr []Frame) {
	if len(p.task.Traces) >= p.l.MaxTraces || p.frames+len(tr) > p.l.MaxTotalFrames || (len(tr) == 0 && p.frames >= p.l.MaxTotalFrames) {
		p.d.TracesCut++
		return
	}
	p.frames += len(tr)
	p.task.Traces = append(p.task.Traces, tr)
}

func (p *parser) finish() {
	if p.fmt == fmtText {
		p.endTrace()
	} else {
		p.emitPath()
		p.path = p.path[:0]
	}
	p.d.Tasks = append(p.d.Tasks, *p.task)
	p.task = nil
	p.fmt = fmtUnknown
}

// parseFrame parses "FUNCTION at FILE:LINE:COL", "FUNCTION at FILE:LINE",
// "FUNCTION at FILE", "FUNCTION", "?? at 0xADDR" or "" (tokio's rendering
// of a symbol with neither name nor file).
func parseFrame(s string) (Frame, bool) {
	var f Frame
	name, loc, hasLoc := strings.Cut(s, " at ")
	if !hasLoc && strings.HasPrefix(s, "at ") {
		name, loc, hasLoc = "", s[3:], true
	}
	name = strings.TrimSpace(name)
	if hasLoc {
		loc = strings.TrimSpace(loc)
		if loc == "" {
			return f, false
		}
		if h, ok := strings.CutPrefix(loc, "0x"); ok && h != "" && len(h) <= 16 && strings.Trim(h, "0123456789abcdefABCDEF") == "" {
			f.Addr, _ = strconv.ParseUint(h, 16, 64)
		} else {
			f.File, f.Line, f.Col = splitLoc(loc)
		}
	}
	if name != "??" {
		f.Func = funcName(name)
	}
	return f, true
}

// splitLoc splits "FILE:LINE:COL" or "FILE:LINE"; anything else is a file.
func splitLoc(loc string) (string, int64, int64) {
	num := func(s string) (int64, bool) {
		if s == "" || len(s) > 9 || strings.Trim(s, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	i := strings.LastIndexByte(loc, ':')
	if i <= 0 {
		return clean(loc, 1024), 0, 0
	}
	last, ok := num(loc[i+1:])
	if !ok {
		return clean(loc, 1024), 0, 0
	}
	head := loc[:i]
	if j := strings.LastIndexByte(head, ':'); j > 0 {
		if line, ok := num(head[j+1:]); ok {
			return clean(head[:j], 1024), line, last
		}
	}
	return clean(head, 1024), last, 0
}

// funcName demangles a mangled name (Itanium C++, Rust legacy and v0) and
// strips a Rust hash suffix (::h0123456789abcdef).
func funcName(s string) string {
	if strings.HasPrefix(s, "_Z") || strings.HasPrefix(s, "_R") || strings.HasPrefix(s, "__Z") {
		s = demangle.Filter(s)
	}
	if i := strings.LastIndex(s, "::h"); i >= 0 && len(s)-i == 19 && strings.Trim(s[i+3:], "0123456789abcdef") == "" {
		s = s[:i]
	}
	return clean(s, 4096)
}

// clean makes outside text safe for labels and frame names: valid UTF-8,
// no control characters, bounded length.
func clean(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		s = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, s)
	}
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}
