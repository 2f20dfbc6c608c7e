//go:build linux && amd64

package ebpf

import "github.com/profcap/profcap/symbolize"

// symbols is the collector's symbolizer: the symbolize package, which
// every native collector and importer uses (ELF .symtab and .dynsym,
// MiniDebugInfo, separate debug files by build-id or debuglink, perf maps
// and jitdumps of JIT code, the vDSO, /proc/kallsyms; C++ and Rust names
// demangled as perf does), without source lines: a flame graph shows
// names.
type symbols struct {
	s *symbolize.Symbolizer
}

func newSymbolizer() symbolizer {
	return &symbols{s: symbolize.New(symbolize.Options{NoLines: true})}
}

func (y *symbols) Snapshot(pid int) error  { return y.s.Snapshot(pid) }
func (y *symbols) Inherit(pid, parent int) { y.s.Inherit(pid, parent) }
func (y *symbols) Notes() []string         { return y.s.Notes() }

func (y *symbols) User(pid int, addrs []uint64) []Frame { return frames(y.s.User(pid, addrs)) }

func (y *symbols) Kernel(addrs []uint64) []Frame { return frames(y.s.Kernel(addrs)) }

func frames(in []symbolize.Frame) []Frame {
	out := make([]Frame, len(in))
	for i, f := range in {
		out[i] = Frame{Function: f.Function, File: f.File, Line: f.Line, Module: f.Module, BuildID: f.BuildID, Offset: f.Offset, Known: f.Known}
		if !f.Known && f.InFunc {
			out[i].Function = f.Name() // a nameless function, by its start
		}
	}
	return out
}
