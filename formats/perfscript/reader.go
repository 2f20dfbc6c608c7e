package perfscript

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// MaxLineLen is the longest line the reader accepts. perf prints one frame
// per line; even C++ template symbols stay far below this, so a longer line
// means the input is not perf script text.
const MaxLineLen = 4 << 20

// Event is one event of perf script text: a header line and the lines
// indented under it (frames, and srclines with -F +srcline).
//
// The byte slices point into the Reader's buffers and are valid until the
// next call to Next.
type Event struct {
	Line   int    // line number of the first line (1-based)
	Header []byte // the header line; nil when frames follow a blank line directly
	Lines  []Line // the indented lines under the header, in input order
	// Terminated is true when a blank line ended the event, as perf script
	// ends every event. An event cut short by the next header or by the end
	// of the input has Terminated false.
	Terminated bool
}

// Line is one line of input with its number.
type Line struct {
	N    int
	Text []byte
}

// Reader reads perf script text one event at a time, streaming: it holds
// one event in memory, never the whole input. Comment lines (starting with
// '#', as `perf script --header` prints them) are skipped.
type Reader struct {
	br   *bufio.Reader
	line int // number of the last line read

	buf  []byte   // text of the current event's lines
	offs [][3]int // line number, start, end into buf; [0] is the header when hasHeader
	long []byte   // assembles lines longer than the bufio buffer

	pending     []byte // a header line read ahead: it starts the next event
	pendingLine int
	havePending bool

	ev  Event
	err error

	noFinalNewline bool
}

// Truncated reports, after Next returned io.EOF, whether the input ended in
// the middle of a line (perf script ends every line with a newline, so the
// input was cut short).
func (r *Reader) Truncated() (line int, ok bool) { return r.line, r.noFinalNewline }

// NewReader returns a Reader reading from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 256<<10)}
}

// isSpace reports whether c is white space as Perl's \s defines it for byte
// strings (stackcollapse-perf.pl's notion, which the collapser must match).
func isSpace(c byte) bool { return spaceTab[c] }

// spaceTab and wordTab classify bytes as Perl's \s and \w do (ASCII): a
// table lookup is the parser's hottest test.
var spaceTab, wordTab = func() (s, w [256]bool) {
	for _, c := range []byte(" \t\n\v\f\r") {
		s[c] = true
	}
	for c := 0; c < 256; c++ {
		w[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
	}
	return
}()

// readLine returns the next line without its '\n'. The slice is valid until
// the next call.
func (r *Reader) readLine() ([]byte, error) {
	b, err := r.br.ReadSlice('\n')
	if err == nil {
		r.line++
		return b[:len(b)-1], nil
	}
	if errors.Is(err, bufio.ErrBufferFull) {
		r.long = append(r.long[:0], b...)
		for {
			b, err = r.br.ReadSlice('\n')
			r.long = append(r.long, b...)
			if len(r.long) > MaxLineLen {
				r.line++
				return nil, &SyntaxError{Line: r.line, Msg: fmt.Sprintf("line longer than %d bytes: not perf script text", MaxLineLen)}
			}
			if err == nil {
				r.line++
				return r.long[:len(r.long)-1], nil
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		b = r.long
	}
	if err == io.EOF && len(b) > 0 {
		r.line++
		r.noFinalNewline = true
		return b, nil // last line without a newline
	}
	return nil, err
}

// Next returns the next event, or io.EOF after the last one. A read error
// or an overlong line is returned as is (a *SyntaxError for the latter).
func (r *Reader) Next() (*Event, error) {
	if r.err != nil {
		return nil, r.err
	}
	r.buf = r.buf[:0]
	r.offs = r.offs[:0]
	hasHeader := false
	terminated := false
	first := 0
	add := func(n int, text []byte) {
		if first == 0 {
			first = n
		}
		start := len(r.buf)
		r.buf = append(r.buf, text...)
		r.offs = append(r.offs, [3]int{n, start, len(r.buf)})
	}
	if r.havePending {
		r.havePending = false
		hasHeader = true
		add(r.pendingLine, r.pending)
	}
	for {
		b, err := r.readLine()
		if err != nil {
			if err != io.EOF {
				r.err = err
				return nil, err
			}
			r.err = io.EOF
			if len(r.offs) == 0 {
				return nil, io.EOF
			}
			break
		}
		if len(b) > 0 && b[0] == '#' {
			continue
		}
		if len(b) == 0 {
			if len(r.offs) == 0 {
				continue
			}
			terminated = true
			break
		}
		if !isSpace(b[0]) {
			if len(r.offs) > 0 {
				r.pending = append(r.pending[:0], b...)
				r.pendingLine = r.line
				r.havePending = true
				break
			}
			hasHeader = true
		}
		add(r.line, b)
	}
	ev := &r.ev
	ev.Line = first
	ev.Header = nil
	ev.Lines = ev.Lines[:0]
	ev.Terminated = terminated
	for i, o := range r.offs {
		text := r.buf[o[1]:o[2]:o[2]]
		if i == 0 && hasHeader {
			ev.Header = text
			continue
		}
		ev.Lines = append(ev.Lines, Line{N: o[0], Text: text})
	}
	return ev, nil
}

// trimRight drops trailing white space.
func trimRight(b []byte) []byte {
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func trimLeft(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	return b
}

var _ = bytes.IndexByte

// nextSample returns the next event that has a header, parsed: blank
// events are skipped; io.EOF at a clean end; a *SyntaxError for input cut
// in the middle of a line or frame lines with no header before them.
func (r *Reader) nextSample() (*Event, Header, error) {
	for {
		ev, err := r.Next()
		if err == io.EOF {
			if n, ok := r.Truncated(); ok {
				return nil, Header{}, &SyntaxError{Line: n, Msg: "input ends in the middle of a line (truncated?)"}
			}
			return nil, Header{}, io.EOF
		}
		if err != nil {
			return nil, Header{}, err
		}
		if ev.Header == nil {
			if onlyBlank(ev.Lines) {
				continue
			}
			return nil, Header{}, syntaxErr(ev.Line, ev.Lines[0].Text, "frame line without an event header before it")
		}
		h, err := ParseHeader(ev.Line, ev.Header)
		return ev, h, err
	}
}
