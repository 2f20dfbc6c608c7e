package perfscript

import (
	"bytes"
	"regexp"
)

// The collapser must split lines exactly as stackcollapse-perf.pl does. Its
// three regular expressions are matched here by hand (fast paths, a few ns a
// line) and, where a fast path cannot decide, by the same expressions in Go's
// regexp, whose leftmost-first submatch semantics are Perl's. Perl's \s, \d
// and \w on byte strings are ASCII-only; the classes below spell that out.
// FuzzPerlMatchers checks the fast paths against the regexps.
//
// The expressions, from stackcollapse-perf.pl (FlameGraph @ 778d6d4b,
// CDDL-1.0; the frame's module is (.*) since FlameGraph#151, 2023, so a
// module path may hold blanks):
//
//	header: ^(\S.+?)\s+(\d+)\/*(\d+)*\s+
//	event:  :\s*(\d+)*\s+(\S+):\s*$
//	frame:  ^\s*(\w+)\s*(.+) \((.*)\)
const (
	reWS    = `[\t\n\v\f\r ]`
	reNonWS = `[^\t\n\v\f\r ]`
	reWord  = `[A-Za-z0-9_]`
)

var (
	headerRE = regexp.MustCompile(`^(` + reNonWS + `.+?)` + reWS + `+([0-9]+)/*([0-9]+)*` + reWS + `+`)
	eventRE  = regexp.MustCompile(`:` + reWS + `*([0-9]+)*` + reWS + `+(` + reNonWS + `+):` + reWS + `*$`)
	frameRE  = regexp.MustCompile(`^` + reWS + `*(` + reWord + `+)` + reWS + `*(.+) \((.*)\)`)
)

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isWord(c byte) bool { return wordTab[c] }

// perlHeader matches the header expression: comm ($1), the first number
// ($2) and the number after a slash ($3, nil when absent).
func perlHeader(s []byte) (comm, n1, n2 []byte, ok bool) {
	if len(s) < 2 || isSpace(s[0]) || s[0] == '\n' {
		return nil, nil, nil, false
	}
	// (\S.+?) ends at the first position e >= 2 from which the rest matches.
	// The rest begins with \s+, so e is in a run of white space, and every
	// e in one run sees the same rest: try each run once.
	i := 1
	for i < len(s) {
		if !isSpace(s[i]) {
			i++
			continue
		}
		a := i
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		b := i
		e := a
		if e < 2 {
			e = 2
		}
		if e >= b {
			continue
		}
		j := b
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if j == b || j == len(s) {
			continue
		}
		if isSpace(s[j]) {
			return s[:e], s[b:j], nil, true
		}
		if s[j] != '/' {
			continue
		}
		k := j
		for k < len(s) && s[k] == '/' {
			k++
		}
		m := k
		for m < len(s) && isDigit(s[m]) {
			m++
		}
		if m < len(s) && isSpace(s[m]) {
			if m > k {
				return s[:e], s[b:j], s[k:m], true
			}
			return s[:e], s[b:j], nil, true
		}
	}
	return nil, nil, nil, false
}

// perlEvent matches the event expression: the period ($1, nil when absent)
// and the event name ($2).
func perlEvent(s []byte) (period, event []byte, ok bool) {
	t := trimRight(s)
	if len(t) < 2 || t[len(t)-1] != ':' {
		return nil, nil, false
	}
	c := len(t) - 1
	st := c
	for st > 0 && !isSpace(t[st-1]) {
		st--
	}
	if st == c || st == 0 {
		return nil, nil, false
	}
	// Between the ':' that starts the match and the event there may only
	// be white space and one run of digits, so that ':' is the last
	// character before st that is neither.
	p := st - 1
	for p >= 0 && (isSpace(t[p]) || isDigit(t[p])) {
		p--
	}
	if p < 0 || t[p] != ':' {
		return nil, nil, false
	}
	m := t[p+1 : st]
	i := 0
	for i < len(m) && isSpace(m[i]) {
		i++
	}
	d := i
	for i < len(m) && isDigit(m[i]) {
		i++
	}
	digits := m[d:i]
	if i == len(m) && len(digits) > 0 {
		return nil, nil, false // \s+ needs one blank after the digits
	}
	for ; i < len(m); i++ {
		if !isSpace(m[i]) {
			return nil, nil, false
		}
	}
	if len(digits) == 0 {
		digits = nil
	}
	return digits, t[st:c], true
}

// perlFrame matches the frame expression: the address ($1), the symbol
// ($2) and the module ($3).
func perlFrame(s []byte) (pc, fn, mod []byte, ok bool) {
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	a := i
	for i < len(s) && isWord(s[i]) {
		i++
	}
	if i == a {
		return nil, nil, nil, false
	}
	pcEnd := i
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	k := i
	// With every quantifier before (.+) at its longest, (.*)\) runs to the
	// line's last ')' and (.+) to the rightmost " (" before it.
	last := bytes.LastIndexByte(s, ')')
	if last < 0 {
		return nil, nil, nil, false
	}
	for x := last - 2; x >= k+1; x-- {
		if s[x] == ' ' && s[x+1] == '(' {
			return s[a:pcEnd], s[k:x], s[x+2 : last], true
		}
	}
	// Perl would now backtrack into the quantifiers before (.+); rare
	// (frames without a symbol), so let the regexp decide.
	m := frameRE.FindSubmatchIndex(s)
	if m == nil {
		return nil, nil, nil, false
	}
	return s[m[2]:m[3]], s[m[4]:m[5]], s[m[6]:m[7]], true
}

// regexp versions, for the fuzz test.
func reHeader(s []byte) (comm, n1, n2 []byte, ok bool) {
	m := headerRE.FindSubmatchIndex(s)
	if m == nil {
		return nil, nil, nil, false
	}
	if m[6] >= 0 {
		n2 = s[m[6]:m[7]]
	}
	return s[m[2]:m[3]], s[m[4]:m[5]], n2, true
}

func reEvent(s []byte) (period, event []byte, ok bool) {
	m := eventRE.FindSubmatchIndex(s)
	if m == nil {
		return nil, nil, false
	}
	if m[2] >= 0 {
		period = s[m[2]:m[3]]
	}
	return period, s[m[4]:m[5]], true
}

// PerlHeader matches stackcollapse-perf.pl's header expression on line:
// the comm ($1), the first number ($2) and the number after a slash ($3,
// nil when absent). Note that a one-letter comm takes the fields after it
// into $1 (the expression wants two characters), as the Perl script does.
func PerlHeader(line []byte) (comm, n1, n2 []byte, ok bool) { return perlHeader(line) }
