package symbolize

import (
	"strconv"
	"strings"
)

// demangleRustV0 demangles a Rust v0 symbol (_R…) the way libiberty's
// rust-demangle.c does without DMGL_VERBOSE, so as perf shows it: no crate
// disambiguators, no instantiating crate, no const types; closures as
// {closure#N}. ok is false for what does not parse (perf then shows the
// mangled name).
func demangleRustV0(name string) (string, bool) {
	if !strings.HasPrefix(name, "_R") || len(name) < 3 || !(name[2] >= 'A' && name[2] <= 'Z') {
		return "", false
	}
	sym := name[2:]
	for i := 0; i < len(sym); i++ {
		c := sym[i]
		if c == '.' {
			sym = sym[:i] // a ".llvm.…" suffix is ignored
			break
		}
		if !(c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return "", false
		}
	}
	d := &v0{sym: sym}
	d.path(true)
	if !d.err && d.next < len(d.sym) {
		d.skip = true // the instantiating crate
		d.path(false)
	}
	if d.err || d.next != len(d.sym) {
		return "", false
	}
	return d.out.String(), true
}

const v0MaxRecursion = 1024

type v0 struct {
	sym       string
	next      int
	err, skip bool
	depth     int
	lifetimes uint64 // bound_lifetime_depth
	out       strings.Builder
}

func (d *v0) peek() byte {
	if d.next < len(d.sym) {
		return d.sym[d.next]
	}
	return 0
}

func (d *v0) eat(c byte) bool {
	if d.peek() == c {
		d.next++
		return true
	}
	return false
}

func (d *v0) nextc() byte {
	c := d.peek()
	if c == 0 {
		d.err = true
	} else {
		d.next++
	}
	return c
}

func (d *v0) print(s string) {
	if !d.err && !d.skip {
		d.out.WriteString(s)
	}
}

func (d *v0) int62() uint64 {
	if d.eat('_') {
		return 0
	}
	var x uint64
	for !d.eat('_') && !d.err {
		c := d.nextc()
		x *= 62
		switch {
		case c >= '0' && c <= '9':
			x += uint64(c - '0')
		case c >= 'a' && c <= 'z':
			x += 10 + uint64(c-'a')
		case c >= 'A' && c <= 'Z':
			x += 36 + uint64(c-'A')
		default:
			d.err = true
			return 0
		}
	}
	return x + 1
}

func (d *v0) optInt62(tag byte) uint64 {
	if !d.eat(tag) {
		return 0
	}
	return 1 + d.int62()
}

func (d *v0) hexNibbles() (uint64, int) {
	var v uint64
	n := 0
	for !d.eat('_') {
		c := d.nextc()
		v <<= 4
		switch {
		case c >= '0' && c <= '9':
			v |= uint64(c - '0')
		case c >= 'a' && c <= 'f':
			v |= 10 + uint64(c-'a')
		default:
			d.err = true
			return 0, 0
		}
		n++
	}
	return v, n
}

type v0ident struct {
	ascii, puny string
	ok          bool
}

func (d *v0) ident() v0ident {
	var id v0ident
	isPuny := d.eat('u')
	c := d.nextc()
	if c < '0' || c > '9' {
		d.err = true
		return id
	}
	n := int(c - '0')
	if c != '0' {
		for d.peek() >= '0' && d.peek() <= '9' {
			n = n*10 + int(d.nextc()-'0')
			if n > len(d.sym) {
				d.err = true
				return id
			}
		}
	}
	d.eat('_')
	start := d.next
	if start+n > len(d.sym) {
		d.err = true
		return id
	}
	d.next += n
	id.ascii = d.sym[start:d.next]
	if isPuny {
		i := strings.LastIndexByte(id.ascii, '_')
		p := id.ascii
		a := ""
		if i >= 0 {
			a, p = id.ascii[:i], id.ascii[i+1:]
		}
		if p == "" {
			d.err = true
			return id
		}
		id.ascii, id.puny = a, p
	}
	id.ok = id.ascii != "" || id.puny != ""
	return id
}

func (d *v0) printIdent(id v0ident) {
	if d.err || d.skip {
		return
	}
	if id.puny == "" {
		d.print(id.ascii)
		return
	}
	// Punycode (RFC 3492) insertions into the ASCII part.
	out := []rune(id.ascii)
	const base, tmin, tmax, skew = 36, 1, 26, 38
	damp, bias, i, c := 700, 72, 0, 0x80
	p := id.puny
	for pos := 0; pos < len(p); {
		delta, w := 0, 1
		for k := base; ; k += base {
			t := k - bias
			t = max(tmin, min(t, tmax))
			if pos >= len(p) {
				return // libiberty prints nothing of an unfinished delta
			}
			ch := p[pos]
			pos++
			var dg int
			switch {
			case ch >= 'a' && ch <= 'z':
				dg = int(ch - 'a')
			case ch >= '0' && ch <= '9':
				dg = 26 + int(ch-'0')
			default:
				d.err = true
				return
			}
			delta += dg * w
			w *= base - t
			if dg < t {
				break
			}
			if delta > 1<<30 || w > 1<<30 {
				d.err = true
				return
			}
		}
		n := len(out) + 1
		i += delta
		c += i / n
		i %= n
		if c > 0x10ffff {
			d.err = true
			return
		}
		out = append(out, 0)
		copy(out[i+1:], out[i:])
		out[i] = rune(c)
		if pos == len(p) {
			break
		}
		i++
		delta /= damp
		damp = 2
		delta += delta / n
		k := 0
		for delta > ((base-tmin)*tmax)/2 {
			delta /= base - tmin
			k += base
		}
		bias = k + ((base-tmin+1)*delta)/(delta+skew)
	}
	d.print(string(out))
}

func (d *v0) lifetime(lt uint64) {
	d.print("'")
	if lt == 0 {
		d.print("_")
		return
	}
	depth := d.lifetimes - lt
	if depth < 26 {
		d.print(string(rune('a' + depth)))
	} else {
		d.print("_" + strconv.FormatUint(depth, 10))
	}
}

func (d *v0) binder() {
	if d.err {
		return
	}
	n := d.optInt62('G')
	if n > 0 {
		d.print("for<")
		for i := uint64(0); i < n && !d.err; i++ {
			if i > 0 {
				d.print(", ")
			}
			d.lifetimes++
			d.lifetime(1)
		}
		d.print("> ")
	}
}

func (d *v0) enter() bool {
	d.depth++
	if d.depth > v0MaxRecursion {
		d.err = true
		return false
	}
	return true
}

func (d *v0) path(inValue bool) {
	if d.err {
		return
	}
	if !d.enter() {
		return
	}
	defer func() { d.depth-- }()
	switch tag := d.nextc(); tag {
	case 'C':
		d.optInt62('s')
		d.printIdent(d.ident())
	case 'N':
		ns := d.nextc()
		if !(ns >= 'a' && ns <= 'z' || ns >= 'A' && ns <= 'Z') {
			d.err = true
			return
		}
		d.path(inValue)
		dis := d.optInt62('s')
		name := d.ident()
		if ns >= 'A' && ns <= 'Z' {
			d.print("::{")
			switch ns {
			case 'C':
				d.print("closure")
			case 'S':
				d.print("shim")
			default:
				d.print(string(ns))
			}
			if name.ok {
				d.print(":")
				d.printIdent(name)
			}
			d.print("#" + strconv.FormatUint(dis, 10) + "}")
		} else if name.ok {
			d.print("::")
			d.printIdent(name)
		}
	case 'M', 'X', 'Y':
		if tag != 'Y' {
			d.optInt62('s')
			was := d.skip
			d.skip = true
			d.path(inValue)
			d.skip = was
		}
		d.print("<")
		d.typ()
		if tag != 'M' {
			d.print(" as ")
			d.path(false)
		}
		d.print(">")
	case 'I':
		d.path(inValue)
		if inValue {
			d.print("::")
		}
		d.print("<")
		for i := 0; !d.err && !d.eat('E'); i++ {
			if i > 0 {
				d.print(", ")
			}
			d.genericArg()
		}
		d.print(">")
	case 'B':
		back := d.int62()
		if !d.skip {
			old := d.next
			if back >= uint64(len(d.sym)) {
				d.err = true
				return
			}
			d.next = int(back)
			d.path(inValue)
			d.next = old
		}
	default:
		d.err = true
	}
}

func (d *v0) genericArg() {
	switch {
	case d.eat('L'):
		d.lifetime(d.int62())
	case d.eat('K'):
		d.constant()
	default:
		d.typ()
	}
}

var v0Basic = map[byte]string{
	'b': "bool", 'c': "char", 'e': "str", 'u': "()", 'a': "i8", 's': "i16", 'l': "i32", 'x': "i64", 'n': "i128", 'i': "isize",
	'h': "u8", 't': "u16", 'm': "u32", 'y': "u64", 'o': "u128", 'j': "usize", 'f': "f32", 'd': "f64", 'z': "!", 'p': "_", 'v': "...",
}

func (d *v0) typ() {
	if d.err {
		return
	}
	tag := d.nextc()
	if b, ok := v0Basic[tag]; ok {
		d.print(b)
		return
	}
	if !d.enter() {
		return
	}
	defer func() { d.depth-- }()
	switch tag {
	case 'R', 'Q':
		d.print("&")
		if d.eat('L') {
			if lt := d.int62(); lt != 0 {
				d.lifetime(lt)
				d.print(" ")
			}
		}
		if tag != 'R' {
			d.print("mut ")
		}
		d.typ()
	case 'P', 'O':
		d.print("*")
		if tag != 'P' {
			d.print("mut ")
		} else {
			d.print("const ")
		}
		d.typ()
	case 'A', 'S':
		d.print("[")
		d.typ()
		if tag == 'A' {
			d.print("; ")
			d.constant()
		}
		d.print("]")
	case 'T':
		d.print("(")
		i := 0
		for ; !d.err && !d.eat('E'); i++ {
			if i > 0 {
				d.print(", ")
			}
			d.typ()
		}
		if i == 1 {
			d.print(",")
		}
		d.print(")")
	case 'F':
		old := d.lifetimes
		d.binder()
		if d.eat('U') {
			d.print("unsafe ")
		}
		if d.eat('K') {
			abi := "C"
			if !d.eat('C') {
				id := d.ident()
				if id.ascii == "" || id.puny != "" {
					d.err = true
					d.lifetimes = old
					return
				}
				abi = id.ascii
			}
			d.print("extern \"" + strings.ReplaceAll(abi, "_", "-") + "\" ")
		}
		d.print("fn(")
		for i := 0; !d.err && !d.eat('E'); i++ {
			if i > 0 {
				d.print(", ")
			}
			d.typ()
		}
		d.print(")")
		if !d.eat('u') {
			d.print(" -> ")
			d.typ()
		}
		d.lifetimes = old
	case 'D':
		d.print("dyn ")
		old := d.lifetimes
		d.binder()
		for i := 0; !d.err && !d.eat('E'); i++ {
			if i > 0 {
				d.print(" + ")
			}
			d.dynTrait()
		}
		d.lifetimes = old
		if !d.eat('L') {
			d.err = true
			return
		}
		if lt := d.int62(); lt != 0 {
			d.print(" + ")
			d.lifetime(lt)
		}
	case 'B':
		back := d.int62()
		if !d.skip {
			old := d.next
			if back >= uint64(len(d.sym)) {
				d.err = true
				return
			}
			d.next = int(back)
			d.typ()
			d.next = old
		}
	default:
		d.next-- // the tag starts a path
		d.path(false)
	}
}

// pathMaybeOpenGenerics prints a trait's path leaving an I path's "<…"
// open for the associated type bindings that follow.
func (d *v0) pathMaybeOpenGenerics() bool {
	if d.err || !d.enter() {
		return false
	}
	defer func() { d.depth-- }()
	switch {
	case d.eat('B'):
		back := d.int62()
		if !d.skip {
			old := d.next
			if back >= uint64(len(d.sym)) {
				d.err = true
				return false
			}
			d.next = int(back)
			open := d.pathMaybeOpenGenerics()
			d.next = old
			return open
		}
		return false
	case d.eat('I'):
		d.path(false)
		d.print("<")
		for i := 0; !d.err && !d.eat('E'); i++ {
			if i > 0 {
				d.print(", ")
			}
			d.genericArg()
		}
		return true
	default:
		d.path(false)
		return false
	}
}

func (d *v0) dynTrait() {
	if d.err {
		return
	}
	open := d.pathMaybeOpenGenerics()
	for d.eat('p') {
		if !open {
			d.print("<")
		} else {
			d.print(", ")
		}
		open = true
		d.printIdent(d.ident())
		d.print(" = ")
		d.typ()
	}
	if open {
		d.print(">")
	}
}

func (d *v0) constant() {
	if d.err || !d.enter() {
		return
	}
	defer func() { d.depth-- }()
	if d.eat('B') {
		back := d.int62()
		if !d.skip {
			old := d.next
			if back >= uint64(len(d.sym)) {
				d.err = true
				return
			}
			d.next = int(back)
			d.constant()
			d.next = old
		}
		return
	}
	switch d.nextc() {
	case 'p':
		d.print("_")
	case 'h', 't', 'm', 'y', 'o', 'j':
		d.constUint()
	case 'a', 's', 'l', 'x', 'n', 'i':
		if d.eat('n') {
			d.print("-")
		}
		d.constUint()
	case 'b':
		v, n := d.hexNibbles()
		switch {
		case n != 1:
			d.err = true
		case v == 0:
			d.print("false")
		case v == 1:
			d.print("true")
		default:
			d.err = true
		}
	case 'c':
		v, n := d.hexNibbles()
		if n == 0 || n > 8 {
			d.err = true
			return
		}
		d.print("'")
		switch {
		case v == '\t':
			d.print(`\t`)
		case v == '\r':
			d.print(`\r`)
		case v == '\n':
			d.print(`\n`)
		case v > ' ' && v < '~':
			d.print(string(rune(v)))
		default:
			d.print(`\u{` + strconv.FormatUint(v, 16) + "}")
		}
		d.print("'")
	default:
		d.err = true
	}
}

func (d *v0) constUint() {
	if d.err {
		return
	}
	start := d.next
	v, n := d.hexNibbles()
	switch {
	case n > 16:
		d.print("0x" + d.sym[start:start+n])
	case n > 0:
		d.print(strconv.FormatUint(v, 10))
	default:
		d.err = true
	}
}
