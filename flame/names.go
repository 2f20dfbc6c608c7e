package flame

import (
	"strings"
)

// Names a person reads. pprof shortens function names for its graphs
// (internal/graph.ShortenFunctionName: drop a Go package path, a Java
// package and argument list, a C++ namespace before a class); profcap does
// the same, and also drops what makes Rust and generic Go names long
// without telling a reader anything: the symbol hash and the type
// arguments. The full name stays in tooltips and tables' titles, and
// search and every computation use it.

var (
	// pprof's goRegExp: a package path before the package's last element.
	goPathRE = lazyRE(`^(?:[\w\-\.~]+/)+([^./][^.]*\..+)$`)
	// pprof's goVerRegExp: a module major version in a path.
	goVerRE = lazyRE(`^(.*?)/v(?:[2-9]|[1-9][0-9]+)([./].*)$`)
	// pprof's javaRegExp.
	javaRE = lazyRE(`^(?:[a-z]\w*\.)*([A-Z][\w\$]*\.(?:<init>|[a-z][\w\$]*(?:\$\d+)?))(?:(?:\()|$)`)
	// pprof's cppAnonymousPrefixRegExp.
	cppAnonRE = lazyRE(`^\(anonymous namespace\)::`)
	// A Rust legacy-mangling hash, "::h0123456789abcdef".
	rustHashRE = lazyRE(`::h[0-9a-f]{16}$`)
)

// ShortName shortens a function name for display, as pprof does:
// "github.com/profcap/profcap/internal/demo.(*worker).runStep" becomes
// "demo.(*worker).runStep", "tokio::runtime::task::harness::Harness<T,S>::poll::h0123456789abcdef"
// becomes "tokio::runtime::task::harness::Harness::poll", Go type
// arguments become "[…]". Names it does not recognise come back as they are.
func ShortName(name string) string {
	if name == "" || strings.HasPrefix(name, "[") {
		return name
	}
	if strings.Contains(name, "::") && !strings.Contains(name, " (") {
		return shortRust(name)
	}
	n := cppAnonRE.ReplaceAllString(name, "")
	if strings.ContainsAny(n, " \t") && !strings.Contains(n, "[go.shape") && !strings.Contains(n, "{") {
		// Python "fn (file.py:3)", Ruby "block in x - file.rb", JIT
		// "LazyCompile:~f file.js:1": not a function path.
		return n
	}
	n = goVerRE.ReplaceAllString(n, `${1}${2}`)
	n = shortGoTypeArgs(n)
	if m := goPathRE.FindStringSubmatch(n); m != nil && !strings.Contains(n, "+0x") {
		return m[1]
	}
	if m := javaRE.FindStringSubmatch(n); m != nil {
		return m[1]
	}
	return n
}

// shortGoTypeArgs replaces the type arguments of a generic Go function,
// "slices.partitionCmpFunc[go.shape.struct { ID int64 ... }]", by "[…]".
func shortGoTypeArgs(n string) string {
	if !strings.Contains(n, "[") {
		return n
	}
	var b strings.Builder
	depth := 0
	for _, r := range n {
		switch {
		case r == '[':
			if depth == 0 {
				b.WriteString("[…")
			}
			depth++
		case r == ']' && depth > 0:
			depth--
			if depth == 0 {
				b.WriteByte(']')
			}
		case depth == 0:
			b.WriteRune(r)
		}
	}
	if depth != 0 {
		return n // unbalanced: not type arguments
	}
	return b.String()
}

// shortRust drops the hash and the generic arguments of a Rust (or C++)
// path, keeping its modules: "<alloc::vec::Vec<T> as core::ops::Drop>::drop"
// becomes "<Vec as Drop>::drop".
func shortRust(n string) string {
	n = rustHashRE.ReplaceAllString(n, "")
	n = strings.TrimPrefix(n, "(anonymous namespace)::")
	if strings.HasPrefix(n, "<") {
		// A trait method "<Type as Trait>::method": name both by their
		// last segment, keep the method path.
		if end := matchingAngle(n, 0); end > 0 {
			inner := n[1:end]
			rest := n[end+1:]
			if ty, tr, ok := strings.Cut(inner, " as "); ok {
				inner = lastSegment(dropAngles(ty)) + " as " + lastSegment(dropAngles(tr))
			} else {
				inner = lastSegment(dropAngles(inner))
			}
			return "<" + inner + ">" + dropAngles(rest)
		}
	}
	// C++ with an argument list: keep pprof's behaviour (the name as it is,
	// without the anonymous namespace).
	if strings.Contains(n, "(") {
		return n
	}
	return dropAngles(n)
}

// dropAngles removes every balanced <...> group.
func dropAngles(s string) string {
	if !strings.Contains(s, "<") {
		return s
	}
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '<':
			depth++
		case c == '>' && depth > 0:
			// "->" in a closure type is not a bracket.
			if i > 0 && s[i-1] == '-' {
				continue
			}
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	if depth != 0 {
		return s
	}
	return b.String()
}

func matchingAngle(s string, open int) int {
	depth := 0
	for i := open; i < len(s); i++ {
		switch s[i] {
		case '<':
			depth++
		case '>':
			if i > 0 && s[i-1] == '-' {
				continue
			}
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

func lastSegment(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "::"); i >= 0 {
		return s[i+2:]
	}
	return s
}
