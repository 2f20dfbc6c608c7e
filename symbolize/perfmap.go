package symbolize

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
)

// A JIT symbol: code at [Start, Start+Size) named Name (from a perf map
// or a jitdump's JIT_CODE_LOAD record).
type JITSymbol struct {
	Start, Size uint64
	Name        string
	// File and Line from a jitdump's JIT_CODE_DEBUG_INFO, where given.
	File string
	Line int
}

// ParsePerfMapLine parses one line of a perf map (/tmp/perf-PID.map), the
// format Node's --perf-basic-prof, Python's -X perf and the JVM's agents
// write: "START SIZE NAME", START and SIZE in hex (with or without 0x),
// NAME the rest of the line, spaces included.
func ParsePerfMapLine(line []byte) (JITSymbol, error) {
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimRight(line, "\r")
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return JITSymbol{}, errors.New("perf map: want 'START SIZE NAME'")
	}
	start, err := parseHex(line[:sp])
	if err != nil {
		return JITSymbol{}, fmt.Errorf("perf map: start: %w", err)
	}
	rest := line[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return JITSymbol{}, errors.New("perf map: want 'START SIZE NAME'")
	}
	size, err := parseHex(rest[:sp])
	if err != nil {
		return JITSymbol{}, fmt.Errorf("perf map: size: %w", err)
	}
	name := rest[sp+1:]
	if len(name) == 0 {
		return JITSymbol{}, errors.New("perf map: no name")
	}
	return JITSymbol{Start: start, Size: size, Name: string(name)}, nil
}

func parseHex(b []byte) (uint64, error) {
	if len(b) > 2 && b[0] == '0' && (b[1] == 'x' || b[1] == 'X') {
		b = b[2:]
	}
	if len(b) == 0 || len(b) > 16 {
		return 0, errors.New("not a hex number")
	}
	return strconv.ParseUint(string(b), 16, 64)
}

// maxPerfMap bounds the perf map read (a long-running Node service with
// --perf-basic-prof writes a line per compiled function, never removing
// any; 1 GiB is millions of functions).
const maxPerfMap = 1 << 30

// jitTable is the JIT symbols of one process, sorted by start; of symbols
// at one address the one written last wins (code re-JITted at a reused
// address).
type jitTable struct {
	path string
	size int64 // file size when read; a grown file is read again
	syms []JITSymbol
	bad  int // lines that did not parse
}

// readPerfMap reads a perf map file.
func readPerfMap(path string) (*jitTable, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return readPerfMapFrom(f, path, st.Size())
}

func (t *jitTable) sort() {
	// Stable: of equal starts the later line stays later, and lookup takes
	// the last.
	slices.SortStableFunc(t.syms, func(a, b JITSymbol) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
}

// lookup returns the symbol containing addr, or nil.
func (t *jitTable) lookup(addr uint64) *JITSymbol {
	if t == nil {
		return nil
	}
	i, _ := slices.BinarySearchFunc(t.syms, addr, func(s JITSymbol, v uint64) int {
		if s.Start <= v {
			return -1
		}
		return 1
	})
	// t.syms[:i] start at or before addr; the nearest ones first.
	for k := i - 1; k >= 0 && k >= i-8; k-- {
		s := &t.syms[k]
		if addr >= s.Start && addr-s.Start < s.Size {
			return s
		}
	}
	return nil
}
