// Package jsonutil holds what the streaming JSON importers (firefox,
// speedscope) share.
package jsonutil

import (
	"fmt"
	"strconv"

	"github.com/go-json-experiment/json/jsontext"
)

// ParseNumber reads the JSON value v (a number, by its first byte) without
// allocating for the integers that make up nearly every column.
func ParseNumber(v jsontext.Value) (float64, bool) {
	b := []byte(v)
	neg := false
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	if len(b) > 0 && len(b) <= 15 {
		var n uint64
		i := 0
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			n = n*10 + uint64(b[i]-'0')
		}
		if i == len(b) {
			if neg {
				return -float64(n), true
			}
			return float64(n), true
		}
	}
	f, err := strconv.ParseFloat(string(v), 64)
	return f, err == nil
}

// Int32s is an append-only list of int32 kept in fixed-size blocks, so a
// long column grows without the copies (and the transient 2× peak) of
// append on one slice.
type Int32s struct {
	blocks [][]int32
	n      int
}

const chunkSize = 1 << 16

// Add appends v.
func (c *Int32s) Add(v int32) {
	if c.n%chunkSize == 0 {
		c.blocks = append(c.blocks, make([]int32, 0, chunkSize))
	}
	b := &c.blocks[len(c.blocks)-1]
	*b = append(*b, v)
	c.n++
}

// At returns the i-th value.
func (c *Int32s) At(i int) int32 { return c.blocks[i/chunkSize][i%chunkSize] }

// Len is the number of values.
func (c *Int32s) Len() int { return c.n }

// Walker reads a JSON document token by token, keeping the path of what it
// is reading for error messages. Importers embed it in their parsers.
type Walker struct {
	D    *jsontext.Decoder
	Path string // e.g. "threads[2].samples.stack"
	// NewError makes the importer's error type.
	NewError func(offset int64, path, msg string) error
}

// Errf makes the reader's error for the current offset and path.
func (p *Walker) Errf(format string, args ...any) error {
	return p.NewError(p.D.InputOffset(), p.Path, fmt.Sprintf(format, args...))
}

// At sets the JSON path errors name; the returned func restores the old one.
func (p *Walker) At(path string) func() {
	old := p.Path
	p.Path = path
	return func() { p.Path = old }
}

// KindName names a token kind for messages.
func KindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 'f', 't':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return "nothing"
}

// Object reads an object, calling field for each member; field must consume
// the member's value (skip unknown ones with p.D.SkipValue).
func (p *Walker) Object(field func(name string) error) error {
	tok, err := p.D.ReadToken()
	if err != nil {
		return err
	}
	if tok.Kind() != '{' {
		return p.Errf("want an object, got %s", KindName(tok.Kind()))
	}
	for p.D.PeekKind() != '}' {
		tok, err := p.D.ReadToken()
		if err != nil {
			return err
		}
		if err := field(tok.String()); err != nil {
			return err
		}
	}
	_, err = p.D.ReadToken()
	return err
}

// Array reads an array, calling elem for each element (which must consume it).
func (p *Walker) Array(elem func(i int) error) error {
	tok, err := p.D.ReadToken()
	if err != nil {
		return err
	}
	if tok.Kind() != '[' {
		return p.Errf("want an array, got %s", KindName(tok.Kind()))
	}
	for i := 0; p.D.PeekKind() != ']'; i++ {
		if p.D.PeekKind() == 0 {
			// Let ReadToken report the syntax error or EOF.
			if _, err := p.D.ReadToken(); err != nil {
				return err
			}
			return p.Errf("malformed array")
		}
		if err := elem(i); err != nil {
			return err
		}
	}
	_, err = p.D.ReadToken()
	return err
}

// ReadNumber reads a number or null; kind is the value's kind.
func (p *Walker) ReadNumber() (f float64, kind jsontext.Kind, err error) {
	v, err := p.D.ReadValue()
	if err != nil {
		return 0, 0, err
	}
	kind = v.Kind()
	if kind != '0' {
		return 0, kind, nil
	}
	f, ok := ParseNumber(v)
	if !ok {
		return 0, kind, p.Errf("bad number %.40s", v)
	}
	return f, kind, nil
}

// FormatError is a problem with the content of a file, with the byte offset
// where it was found and the JSON path it concerns.
type FormatError struct {
	Format string // names the reader, e.g. "speedscope"
	Offset int64  // byte offset in the (decompressed) JSON
	Path   string // e.g. "threads[2].samples.stack"
	Msg    string
}

func (e *FormatError) Error() string {
	if e.Path != "" && e.Offset <= 0 { // found while assembling, after reading
		return fmt.Sprintf("%s: %s: %s", e.Format, e.Path, e.Msg)
	}
	if e.Path == "" {
		return fmt.Sprintf("%s: at byte %d: %s", e.Format, e.Offset, e.Msg)
	}
	return fmt.Sprintf("%s: %s (at byte %d): %s", e.Format, e.Path, e.Offset, e.Msg)
}

// Pos returns the byte offset of the error.
func (e *FormatError) Pos() int64 { return e.Offset }
