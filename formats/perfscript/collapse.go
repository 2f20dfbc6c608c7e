package perfscript

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
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
// The input is streamed; memory grows with the number of distinct stacks,
// not with the input.
func Collapse(r io.Reader, w io.Writer, opt CollapseOptions) error {
	c := newCollapser(opt)
	rd := NewReader(r)
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := c.event(ev); err != nil {
			return err
		}
	}
	if c.warnings > MaxWarnings && c.opt.Warn != nil {
		fmt.Fprintf(c.opt.Warn, "%d more unrecognized lines not shown\n", c.warnings-MaxWarnings)
	}
	return c.write(w)
}

type collapser struct {
	opt                     CollapseOptions
	counts                  map[string]*uint64
	filter                  []byte
	defaulted, warnedFilter bool
	warnings                int

	// Perl state: the process name of the current event (nil when unset),
	// its period, and the frames so far.
	pname    []byte
	isJava   bool // the comm is "java": tidy Java class names
	hasPname bool
	period   uint64
	funcs    []byte   // all frame names of the current stack, concatenated
	items    [][2]int // each frame name's range in funcs
	groups   []int    // index into items where each frame line's names start

	key     []byte
	scratch []byte
	inline  [][2]int
	mult    uint64 // the current event stands for this many (Collapser.Fold); 0 is 1
}

func newCollapser(opt CollapseOptions) *collapser {
	if opt.All {
		opt.Kernel, opt.JIT = true, true
	}
	return &collapser{opt: opt, counts: make(map[string]*uint64), filter: []byte(opt.EventFilter)}
}

func (c *collapser) warn(n int, text []byte) error {
	if c.opt.Strict {
		return &SyntaxError{Line: n, Msg: "unrecognized line", Text: string(text)}
	}
	c.warnings++
	if c.opt.Warn != nil && c.warnings <= MaxWarnings {
		if n > 0 {
			fmt.Fprintf(c.opt.Warn, "line %d: unrecognized line: %q\n", n, truncate(text, 120))
		} else {
			fmt.Fprintf(c.opt.Warn, "unrecognized line: %q\n", truncate(text, 120))
		}
	}
	return nil
}

// Collapser folds events given one at a time, as text lines perf script
// would print for them; Collapse is a Collapser fed by a Reader. A reader of
// perf's binary perf.data prints each distinct stack once, as perf script
// would, and folds it with the number of times it occurred, so that its
// output is byte-identical to perf script piped into Collapse.
type Collapser struct{ c *collapser }

// NewCollapser returns an empty Collapser.
func NewCollapser(opt CollapseOptions) *Collapser { return &Collapser{c: newCollapser(opt)} }

// Fold folds n identical events: header is the event's header line, frames
// its frame lines (leaf first), without newlines, as perf script prints
// them; the event is ended as by a blank line. Warnings and errors have no
// line number.
func (c *Collapser) Fold(header []byte, frames [][]byte, n uint64) error {
	if err := c.c.header(0, header); err != nil {
		return err
	}
	for _, f := range frames {
		if err := c.c.frameLine(0, f); err != nil {
			return err
		}
	}
	c.c.mult = n
	c.c.endOfStack()
	c.c.mult = 0
	return nil
}

// Write writes the folded stacks, sorted, and the count of unrecognised
// lines not shown one by one to Warn.
func (c *Collapser) Write(w io.Writer) error {
	if c.c.warnings > MaxWarnings && c.c.opt.Warn != nil {
		fmt.Fprintf(c.c.opt.Warn, "%d more unrecognized lines not shown\n", c.c.warnings-MaxWarnings)
	}
	return c.c.write(w)
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func (c *collapser) event(ev *Event) error {
	if ev.Header != nil {
		if err := c.header(ev.Line, ev.Header); err != nil {
			return err
		}
	}
	for _, l := range ev.Lines {
		if err := c.frameLine(l.N, l.Text); err != nil {
			return err
		}
	}
	if ev.Terminated {
		c.endOfStack()
	}
	return nil
}

func (c *collapser) header(n int, s []byte) error {
	comm, n1, n2, ok := perlHeader(s)
	if !ok {
		// Perl tries the frame expression on every line it did not take
		// for a header.
		return c.frameLine(n, s)
	}
	pid, tid := n1, n2
	if !perlTrue(tid) {
		tid, pid = pid, []byte("?")
	}
	period := uint64(1)
	if p, e, ok := perlEvent(s); ok {
		if len(c.filter) == 0 {
			c.filter = append(c.filter[:0], e...)
			c.defaulted = true
		} else if !bytes.Equal(e, c.filter) {
			if c.defaulted && !c.warnedFilter {
				if c.opt.Warn != nil {
					fmt.Fprintf(c.opt.Warn, "Filtering for events of type: %s\n", e)
				}
				c.warnedFilter = true
			}
			return nil
		}
		if perlTrue(p) {
			v, err := strconv.ParseUint(string(p), 10, 64)
			if err != nil {
				v = 1<<64 - 1
			}
			period = v
		}
	}
	c.period = period
	c.pname = append(c.pname[:0], comm...)
	c.isJava = string(comm) == "java"
	if c.opt.TID {
		c.pname = append(c.pname, '-')
		c.pname = append(c.pname, pid...)
		c.pname = append(c.pname, '/')
		c.pname = append(c.pname, tid...)
	} else if c.opt.PID {
		c.pname = append(c.pname, '-')
		c.pname = append(c.pname, pid...)
	}
	for i, b := range c.pname {
		if b == ' ' {
			c.pname[i] = '_'
		}
	}
	c.hasPname = true
	return nil
}

// perlTrue is Perl's truth of a captured string: defined, not "" and not "0".
func perlTrue(b []byte) bool { return len(b) > 0 && !(len(b) == 1 && b[0] == '0') }

func (c *collapser) endOfStack() {
	if !c.hasPname {
		return
	}
	k := append(c.key[:0], c.pname...)
	for g := len(c.groups) - 1; g >= 0; g-- {
		end := len(c.items)
		if g+1 < len(c.groups) {
			end = c.groups[g+1]
		}
		for _, it := range c.items[c.groups[g]:end] {
			k = append(k, ';')
			k = append(k, c.funcs[it[0]:it[1]]...)
		}
	}
	c.key = k
	add := c.period
	if c.mult > 1 {
		add *= c.mult
	}
	// Indexing with string(k) does not allocate; assigning would.
	if v := c.counts[string(k)]; v != nil {
		*v += add
	} else {
		v := add
		c.counts[string(k)] = &v
	}
	c.funcs = c.funcs[:0]
	c.items = c.items[:0]
	c.groups = c.groups[:0]
	c.hasPname = false
}

var (
	unknownSym = []byte("[unknown]")
	arrow      = []byte("->")
	anonNS     = []byte("anonymous namespace)")
	inlineTag  = []byte("_[i]")
	jitTag     = []byte("_[j]")
)

func (c *collapser) frameLine(n int, s []byte) error {
	pc, raw, mod, ok := perlFrame(s)
	if !ok {
		return c.warn(n, s)
	}
	if !c.hasPname {
		return nil
	}
	raw = stripOffset(raw)
	if len(raw) > 0 && raw[0] == '(' {
		return nil // process names
	}
	c.groups = append(c.groups, len(c.items))
	// Perl's split drops trailing empty fields.
	parts := raw
	for len(parts) >= 2 && bytes.HasSuffix(parts, arrow) {
		parts = parts[:len(parts)-2]
	}
	nInline := 0
	for len(parts) > 0 || nInline == 0 {
		if len(parts) == 0 {
			break
		}
		var f []byte
		if i := bytes.Index(parts, arrow); i >= 0 {
			f, parts = parts[:i], parts[i+2:]
		} else {
			f, parts = parts, nil
		}
		start := len(c.funcs)
		c.funcs = c.tidy(c.funcs, f, pc, mod, nInline > 0)
		c.items = append(c.items, [2]int{start, len(c.funcs)})
		nInline++
	}
	return nil
}

// stripOffset removes a trailing +0x<lowercase hex>.
func stripOffset(b []byte) []byte {
	// Only the last '+' can start a "+0x<hex>" that runs to the end.
	i := bytes.LastIndexByte(b, '+')
	if i < 0 || i+3 >= len(b) || b[i+1] != '0' || b[i+2] != 'x' {
		return b
	}
	for _, c := range b[i+3:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return b
		}
	}
	return b[:i]
}

// tidy appends the cleaned-up name of one frame to dst, as
// stackcollapse-perf.pl cleans it.
func (c *collapser) tidy(dst, f, pc, mod []byte, inlined bool) []byte {
	start := len(dst)
	if bytes.Equal(f, unknownSym) {
		dst = append(dst, '[')
		if !bytes.Equal(mod, unknownSym) {
			m := mod
			if i := bytes.LastIndexByte(m, '/'); i >= 0 {
				m = m[i+1:]
			}
			dst = append(dst, m...)
		} else {
			dst = append(dst, "unknown"...)
		}
		if c.opt.Addrs {
			dst = append(dst, " <"...)
			dst = append(dst, pc...)
			dst = append(dst, '>')
		}
		dst = append(dst, ']')
	} else {
		dst = append(dst, f...)
	}
	// tidy_generic. One pass finds what needs tidying; most names need
	// nothing.
	name := dst[start:]
	var semi, paren, quote bool
	for _, b := range name {
		if tidyTab[b] {
			switch b {
			case ';':
				semi = true
			case '(':
				paren = true
			default:
				quote = true
			}
		}
	}
	if semi {
		for i, b := range name {
			if b == ';' {
				name[i] = ':'
			}
		}
	}
	if paren && !isGoMethod(name) {
		if cut := parenCut(name); cut >= 0 {
			dst = dst[:start+cut]
			name = dst[start:]
			quote = bytes.ContainsAny(name, `"'`)
		}
	}
	if quote {
		w := start
		for _, b := range dst[start:] {
			if b != '"' && b != '\'' {
				dst[w] = b
				w++
			}
		}
		dst = dst[:w]
		name = dst[start:]
	}
	// tidy_java
	if c.isJava && bytes.IndexByte(name, '/') >= 0 && len(name) > 0 && name[0] == 'L' {
		copy(dst[start:], dst[start+1:])
		dst = dst[:len(dst)-1]
		name = dst[start:]
	}
	// annotations
	switch {
	case inlined:
		if !bytes.Contains(name, inlineTag) {
			dst = append(dst, inlineTag...)
		}
	case c.opt.Kernel && (len(mod) > 0 && mod[0] == '[' || bytes.HasSuffix(mod, []byte("vmlinux"))) && !bytes.Contains(mod, []byte("unknown")):
		dst = append(dst, "_[k]"...)
	case c.opt.JIT && isPerfMap(mod):
		if !bytes.Contains(name, jitTag) {
			dst = append(dst, jitTag...)
		}
	}
	return dst
}

// tidyTab marks the bytes tidy_generic acts on.
var tidyTab = func() (t [256]bool) {
	for _, c := range []byte(`;("'`) {
		t[c] = true
	}
	return
}()

// isGoMethod matches \.\(.*\)\. (e.g. "net/http.(*Client).Do").
func isGoMethod(b []byte) bool {
	i := bytes.Index(b, []byte(".("))
	if i < 0 {
		return false
	}
	return bytes.Contains(b[i+2:], []byte(")."))
}

// parenCut is the index of the first '(' not opening "(anonymous
// namespace)", or -1.
func parenCut(b []byte) int {
	off := 0
	for {
		i := bytes.IndexByte(b[off:], '(')
		if i < 0 {
			return -1
		}
		i += off
		if !bytes.HasPrefix(b[i+1:], anonNS) {
			return i
		}
		off = i + 1
	}
}

// isPerfMap matches /tmp/perf-\d+\.map anywhere in mod.
func isPerfMap(mod []byte) bool {
	const p = "/tmp/perf-"
	off := 0
	for {
		i := bytes.Index(mod[off:], []byte(p))
		if i < 0 {
			return false
		}
		j := off + i + len(p)
		k := j
		for k < len(mod) && isDigit(mod[k]) {
			k++
		}
		if k > j && bytes.HasPrefix(mod[k:], []byte(".map")) {
			return true
		}
		off += i + 1
	}
}

func (c *collapser) write(w io.Writer) error {
	keys := make([]string, 0, len(c.counts))
	for k := range c.counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	bw := bufio.NewWriterSize(w, 64<<10)
	var num [24]byte
	for _, k := range keys {
		bw.WriteString(k)
		bw.WriteByte(' ')
		bw.Write(strconv.AppendUint(num[:0], *c.counts[k], 10))
		bw.WriteByte('\n')
	}
	return bw.Flush()
}
