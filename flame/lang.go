package flame

import (
	"strings"
)

// Lang is the language or runtime a frame belongs to, guessed from its name,
// source file and mapping. It only picks colours.
type Lang uint8

const (
	LangOther  Lang = iota
	LangGo          // Go
	LangRust        // Rust
	LangC           // C and C++
	LangKernel      // the Linux kernel
	LangJIT         // JIT-compiled code: JavaScript, JVM
	LangPython      // Python
	LangRuby        // Ruby
	LangGroup       // a synthetic group frame (--group-by)
)

var langNames = [...]string{"other", "go", "rust", "c", "kernel", "jit", "python", "ruby", "group"}

func (l Lang) String() string {
	if int(l) < len(langNames) {
		return langNames[l]
	}
	return "other"
}

var (
	rustHash = lazyRE(`::h[0-9a-f]{16}$`)
	// Go: "pkg.Func", "pkg.(*T).M", "example.com/x/pkg.Func.func1".
	// Go: "pkg.Func", "pkg.(*T).M", "pkg.T.M" (a value receiver),
	// "example.com/x/pkg.Func.func1", "pkg.F-fm" (a method value),
	// "pkg.f.abi0" (assembly), "pkg.F[...]" (generic).
	goName = lazyRE(`^(?:[\w.\-~]+/)*[\w\-~]+\.(?:\(\*?\w+(?:\[[^\]]*\])?\)\.|\w+(?:\[[^\]]*\])?\.)?\w+(?:\[[^\]]*\])?(?:\.(?:func\d+|gowrap\d+|\d+))*(?:-fm|-range\d+)?(?:\.abi[01])?$`)
	// GCC's clones of a C function: "f.isra.0", "f.part.3", "f.cold".
	cClone = lazyRE(`\.(?:isra|part|constprop|cold|lto_priv|localalias)(?:\.\d+)*$`)
)

// classify guesses a frame's language. The cheap signals come first: the
// source file's extension, then the mapping, then the shape of the name.
func classify(name, file, mapping string) Lang {
	switch ext(file) {
	case ".go":
		return LangGo
	case ".rs":
		return LangRust
	case ".c", ".cc", ".cpp", ".cxx", ".h", ".hpp", ".hh":
		return LangC
	case ".py", ".pyx":
		return LangPython
	case ".rb":
		return LangRuby
	case ".js", ".mjs", ".cjs", ".ts", ".java", ".kt", ".scala":
		return LangJIT
	}
	switch {
	case strings.HasSuffix(name, "_[k]") || strings.Contains(mapping, "kernel.kallsyms") || strings.Contains(mapping, "vmlinux"):
		return LangKernel
	case strings.HasSuffix(name, "_[j]") || strings.Contains(mapping, "perf-") && strings.HasSuffix(mapping, ".map") || strings.HasPrefix(mapping, "[JIT") || strings.HasPrefix(mapping, "//anon"):
		return LangJIT
	case strings.Contains(name, ".py:") || strings.Contains(name, ".py)"):
		return LangPython
	case strings.Contains(name, ".rb:") || strings.Contains(name, "<internal:"):
		return LangRuby
	case strings.HasPrefix(name, "LazyCompile:") || strings.HasPrefix(name, "JS:") || strings.HasPrefix(name, "Builtin:") || strings.HasPrefix(name, "Interpreted "):
		return LangJIT
	case strings.Contains(name, "::"):
		if rustHash.MatchString(name) || strings.Contains(name, "{{closure}}") ||
			strings.HasPrefix(name, "std::") && !strings.Contains(name, "(") && !strings.Contains(name, "__") ||
			strings.HasPrefix(name, "core::") || strings.HasPrefix(name, "alloc::") || strings.HasPrefix(name, "tokio::") ||
			strings.HasPrefix(name, "<") && strings.Contains(name, " as ") {
			return LangRust
		}
		return LangC
	case cClone.MatchString(name):
		return LangC
	case strings.HasPrefix(name, "runtime.") || strings.HasPrefix(name, "main.") || goName.MatchString(name) && strings.Contains(name, "."):
		return LangGo
	case strings.Contains(mapping, ".so") || strings.HasPrefix(name, "__") || strings.HasPrefix(name, "pthread_") || strings.HasPrefix(name, "_start"):
		return LangC
	}
	return LangOther
}

func ext(file string) string {
	i := strings.LastIndexByte(file, '.')
	if i < 0 || strings.ContainsRune(file[i:], '/') {
		return ""
	}
	return strings.ToLower(file[i:])
}
