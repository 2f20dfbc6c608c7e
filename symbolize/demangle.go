package symbolize

import (
	"fmt"
	"strings"

	"github.com/ianlancetaylor/demangle"
)

// Demangle returns a C++ or Rust (legacy and v0) symbol name demangled the
// way perf shows it (libiberty's cplus_demangle without DMGL_PARAMS):
// without the parameter list, return type, clone suffix (".cold",
// ".constprop.0") or the legacy Rust hash. Other names come back as they
// are.
func Demangle(name string) string {
	if !maybeMangled(name) {
		return name
	}
	// A symbol version ("_Znwm@GLIBCXX_3.4", "f@@V2") stays after the
	// demangled name, as c++filt keeps it.
	ver := ""
	if i := strings.IndexByte(name, '@'); i > 0 {
		name, ver = name[:i], name[i:]
	}
	// Legacy Rust first, as libiberty: its names are also valid C++ ones.
	if s, ok := demangleRustLegacy(name); ok {
		return s + ver
	}
	if strings.HasPrefix(name, "_R") {
		if s, ok := demangleRustV0(name); ok && s != "" {
			return s + ver
		}
		return name + ver // libiberty gives up, and perf shows it mangled
	}
	s, err := cxxDemangle(name)
	if err != nil || s == "" {
		return name + ver
	}
	// Known difference from libiberty: after an empty template parameter
	// pack ("llvm::AnalysisManager<llvm::Function>" is <Function, {}>)
	// libiberty closes brackets without the space ("…>>::run") that it and
	// this demangler put between "> >" everywhere else.
	return s + ver
}

// maybeMangled is a cheap test that saves the demangler most plain C and Go
// names.
func maybeMangled(name string) bool {
	if len(name) < 3 || name[0] != '_' {
		return false
	}
	switch name[1] {
	case 'Z', 'R':
		return true
	}
	return strings.HasPrefix(name, "__Z")
}

// cxxDemangle runs the C++ demangler, which panics on some malformed names
// (found by FuzzDemangle): names come from files profcap did not make.
func cxxDemangle(name string) (s string, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = "", fmt.Errorf("demangler panic: %v", r)
		}
	}()
	return demangle.ToString(name, demangle.NoParams, demangle.NoClones, demangle.NoRust)
}
