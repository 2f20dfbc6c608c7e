package perfscript

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// refCollapse is the collapser as it was before the parallel one
// (formats/perfscript at 929188f): one event at a time from the Reader,
// every frame line matched and tidied anew, keys built as strings. It
// passed the conformance corpus and the fuzzers; the tests keep it as the
// oracle the fast collapser must agree with byte for byte (output, warnings
// and errors) on any input.
func refCollapse(r io.Reader, w io.Writer, opt CollapseOptions) error {
	c := newRefCollapser(opt)
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

type refCollapser struct {
	opt                     CollapseOptions
	counts                  map[string]*uint64
	filter                  []byte
	defaulted, warnedFilter bool
	warnings                int

	pname    []byte
	isJava   bool
	hasPname bool
	period   uint64
	funcs    []byte
	items    [][2]int
	groups   []int

	key []byte
}

func newRefCollapser(opt CollapseOptions) *refCollapser {
	if opt.All {
		opt.Kernel, opt.JIT = true, true
	}
	return &refCollapser{opt: opt, counts: make(map[string]*uint64), filter: []byte(opt.EventFilter)}
}

func (c *refCollapser) warn(n int, text []byte) error {
	if c.opt.Strict {
		return &SyntaxError{Line: n, Msg: "unrecognized line", Text: string(text)}
	}
	c.warnings++
	if c.opt.Warn != nil && c.warnings <= MaxWarnings {
		fmt.Fprintf(c.opt.Warn, "line %d: unrecognized line: %q\n", n, truncate(text, 120))
	}
	return nil
}

func (c *refCollapser) event(ev *Event) error {
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

func (c *refCollapser) header(n int, s []byte) error {
	comm, n1, n2, ok := perlHeader(s)
	if !ok {
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
	c.pname = appendPname(c.pname[:0], comm, pid, tid, &c.opt)
	c.isJava = isJavaComm(comm)
	c.hasPname = true
	return nil
}

func (c *refCollapser) endOfStack() {
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
	if v := c.counts[string(k)]; v != nil {
		*v += c.period
	} else {
		v := c.period
		c.counts[string(k)] = &v
	}
	c.funcs = c.funcs[:0]
	c.items = c.items[:0]
	c.groups = c.groups[:0]
	c.hasPname = false
}

func (c *refCollapser) frameLine(n int, s []byte) error {
	pc, raw, mod, ok := perlFrame(s)
	if !ok {
		return c.warn(n, s)
	}
	if !c.hasPname {
		return nil
	}
	raw = stripOffset(raw)
	if len(raw) > 0 && raw[0] == '(' {
		return nil
	}
	c.groups = append(c.groups, len(c.items))
	parts := raw
	for len(parts) >= 2 && bytes.HasSuffix(parts, arrow) {
		parts = parts[:len(parts)-2]
	}
	nInline := 0
	for len(parts) > 0 {
		var f []byte
		if i := bytes.Index(parts, arrow); i >= 0 {
			f, parts = parts[:i], parts[i+2:]
		} else {
			f, parts = parts, nil
		}
		start := len(c.funcs)
		c.funcs = tidyName(c.funcs, f, pc, mod, nInline > 0, c.isJava, &c.opt)
		c.items = append(c.items, [2]int{start, len(c.funcs)})
		nInline++
	}
	return nil
}

func (c *refCollapser) write(w io.Writer) error {
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
