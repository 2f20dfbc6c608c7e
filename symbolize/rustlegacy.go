package symbolize

import "strings"

// demangleRustLegacy demangles a legacy Rust symbol
// (_ZN...17h<16 hex digits>E) the way libiberty's rust-demangle.c does
// without DMGL_VERBOSE (so as perf shows it): the path joined with "::",
// $-escapes decoded, ".." as "::", the hash left out. ok is false for a name
// that is not one (it may then be C++).
func demangleRustLegacy(name string) (string, bool) {
	if !strings.HasPrefix(name, "_ZN") {
		return "", false
	}
	sym := name[3:]
	// A ".suffix" after the final E (".llvm.1234") is ignored.
	for i := 0; i < len(sym); i++ {
		c := sym[i]
		if c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '$' || c == '.' || c == ':' || c == '@' {
			continue
		}
		return "", false
	}
	n := len(sym)
	dotSuffix := true
	for n > 0 && !(dotSuffix && sym[n-1] == 'E') {
		dotSuffix = sym[n-1] == '.'
		n--
	}
	if n == 0 || sym[n-1] != 'E' {
		return "", false
	}
	sym = sym[:n-1]
	if len(sym) <= 19 || sym[len(sym)-19:len(sym)-16] != "17h" {
		return "", false
	}
	// First pass: the identifiers parse and the last is the hash.
	var idents []string
	for p := 0; p < len(sym); {
		id, next, ok := legacyIdent(sym, p)
		if !ok || id == "" {
			return "", false
		}
		idents = append(idents, id)
		p = next
	}
	if !isLegacyHash(idents[len(idents)-1]) {
		return "", false
	}
	var b strings.Builder
	for i, id := range idents[:len(idents)-1] {
		if i > 0 {
			b.WriteString("::")
		}
		writeLegacyIdent(&b, id)
	}
	return b.String(), true
}

func legacyIdent(sym string, p int) (string, int, bool) {
	if p >= len(sym) || sym[p] < '0' || sym[p] > '9' {
		return "", 0, false
	}
	n := int(sym[p] - '0')
	p++
	if n != 0 {
		for p < len(sym) && sym[p] >= '0' && sym[p] <= '9' {
			n = n*10 + int(sym[p]-'0')
			if n > len(sym) {
				return "", 0, false
			}
			p++
		}
	}
	if p+n > len(sym) {
		return "", 0, false
	}
	return sym[p : p+n], p + n, true
}

func isLegacyHash(id string) bool {
	if len(id) != 17 || id[0] != 'h' {
		return false
	}
	var seen uint16
	for i := 1; i < 17; i++ {
		c := id[i]
		switch {
		case c >= '0' && c <= '9':
			seen |= 1 << (c - '0')
		case c >= 'a' && c <= 'f':
			seen |= 1 << (c - 'a' + 10)
		default:
			return false
		}
	}
	count := 0
	for ; seen != 0; seen >>= 1 {
		count += int(seen & 1)
	}
	return count >= 5
}

func writeLegacyIdent(b *strings.Builder, id string) {
	// The mangler puts an underscore before an identifier starting with
	// an escape.
	if len(id) >= 2 && id[0] == '_' && id[1] == '$' {
		id = id[1:]
	}
	for len(id) > 0 {
		switch id[0] {
		case '$':
			c, n := legacyEscape(id)
			if n == 0 {
				b.WriteString(id) // unexpected escape: the rest verbatim
				return
			}
			b.WriteByte(c)
			id = id[n:]
		case '.':
			if len(id) >= 2 && id[1] == '.' {
				b.WriteString("::")
				id = id[2:]
			} else {
				b.WriteByte('.') // binutils 2.40 keeps a lone '.' (older ones printed '-')
				id = id[1:]
			}
		default:
			n := strings.IndexAny(id, "$.")
			if n < 0 {
				n = len(id)
			}
			b.WriteString(id[:n])
			id = id[n:]
		}
	}
}

// legacyEscape decodes "$SP$", "$C$", "$u7e$"…; n is 0 when e is not one.
func legacyEscape(e string) (byte, int) {
	if len(e) < 3 || e[0] != '$' {
		return 0, 0
	}
	e = e[1:]
	var c byte
	l := 0
	if e[0] == 'C' {
		c, l = ',', 1
	} else if len(e) > 2 {
		l = 2
		switch e[:2] {
		case "SP":
			c = '@'
		case "BP":
			c = '*'
		case "RF":
			c = '&'
		case "LT":
			c = '<'
		case "GT":
			c = '>'
		case "LP":
			c = '('
		case "RP":
			c = ')'
		default:
			if e[0] == 'u' && len(e) > 3 {
				l = 3
				hi, lo := hexNibble(e[1]), hexNibble(e[2])
				if hi < 0 || lo < 0 || hi > 7 {
					return 0, 0
				}
				c = byte(hi<<4 | lo)
				if c < 0x20 {
					return 0, 0
				}
			}
		}
	}
	if c == 0 || len(e) <= l || e[l] != '$' {
		return 0, 0
	}
	return c, 2 + l
}

func hexNibble(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}
