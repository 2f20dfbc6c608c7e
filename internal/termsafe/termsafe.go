// Package termsafe makes text from outside (frame names, target names,
// error bodies, URLs) safe to print on a terminal: every control character
// a terminal acts on is shown as an escape instead, so a profile cannot
// set the window title, clear the screen, move the cursor or reorder what
// is displayed.
package termsafe

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// needs reports whether r must be escaped: C0 controls (but not the
// caller's own newlines: see String), DEL, C1 controls (U+0080–U+009F,
// which include the 8-bit CSI U+009B), and the bidirectional overrides
// and isolates that reorder text (U+202A–U+202E, U+2066–U+2069) and the
// Arabic letter mark.
func needs(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f:
		return true
	case r >= 0x80 && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x061c, r == 0x200e, r == 0x200f:
		return true
	}
	return false
}

// String returns s with every terminal control character escaped (\x1b,
// \u009b, \u202e), invalid UTF-8 bytes as \xNN, and tabs and newlines
// too: one value from outside is always one line.
func String(s string) string {
	if !unsafe(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80 && needs(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case needs(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Lines is String for text that is meant to span lines (a message the
// caller wrote with newlines): newlines are kept, everything else that a
// terminal acts on is escaped.
func Lines(s string) string {
	if !unsafe(s) {
		return s
	}
	parts := strings.Split(s, "\n")
	for i, p := range parts {
		parts[i] = String(p)
	}
	return strings.Join(parts, "\n")
}

// Message makes an error message safe and short for a terminal: Lines,
// with every line longer than max runes cut (input echoed back in an
// error, a 5,000-character bad name, is shown by its start).
func Message(s string, max int) string {
	parts := strings.Split(s, "\n")
	for i, p := range parts {
		parts[i] = Cut(p, max)
	}
	return strings.Join(parts, "\n")
}

// Cut returns String(s) cut to at most max runes with "…" and the number
// of bytes left out, for input that may be long (a bad name echoed in an
// error).
func Cut(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return String(s)
	}
	n := 0
	for i := range s {
		if n == max {
			return String(s[:i]) + fmt.Sprintf("…(%d more bytes)", len(s)-i)
		}
		n++
	}
	return String(s)
}

func unsafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c >= 0x80 {
			// Bytes ≥ 0x80 are most often harmless UTF-8; check properly.
			return slowUnsafe(s[i:])
		}
	}
	return false
}

func slowUnsafe(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || needs(r) {
			return true
		}
		i += size
	}
	return false
}

// JSON escapes, inside encoded JSON, the characters encoding/json leaves
// raw that a terminal acts on (DEL, C1 controls, bidirectional overrides)
// as \uXXXX, which is the same JSON value. encoding/json already escapes
// C0 controls; invalid UTF-8 it has replaced.
func JSON(b []byte) []byte {
	if !unsafe(string(b)) {
		return b
	}
	var out strings.Builder
	s := string(b)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if needs(r) {
			fmt.Fprintf(&out, `\u%04x`, r)
		} else {
			out.WriteString(s[i : i+size])
		}
		i += size
	}
	return []byte(out.String())
}
