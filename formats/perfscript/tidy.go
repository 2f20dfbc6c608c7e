package perfscript

import "bytes"

var (
	unknownSym = []byte("[unknown]")
	arrow      = []byte("->")
	anonNS     = []byte("anonymous namespace)")
	inlineTag  = []byte("_[i]")
	jitTag     = []byte("_[j]")
)

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

// tidyName appends the cleaned-up name of one frame to dst, as
// stackcollapse-perf.pl cleans it.
func tidyName(dst, f, pc, mod []byte, inlined, isJava bool, opt *CollapseOptions) []byte {
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
		if opt.Addrs {
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
	if isJava && bytes.IndexByte(name, '/') >= 0 && len(name) > 0 && name[0] == 'L' {
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
	case opt.Kernel && (len(mod) > 0 && mod[0] == '[' || bytes.HasSuffix(mod, []byte("vmlinux"))) && !bytes.Contains(mod, []byte("unknown")):
		dst = append(dst, "_[k]"...)
	case opt.JIT && isPerfMap(mod):
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
