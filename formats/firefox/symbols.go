package firefox

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Symbols maps library debug names to their module offsets' function names.
// It is what a Tecken-style /symbolicate/v5 response (the API samply's and
// the Firefox Profiler's symbol servers speak) says about the addresses it
// was asked about.
type Symbols map[string]map[uint64]string

// maxSymbolResponse bounds a symbolication response read into memory.
const maxSymbolResponse = 256 << 20

// ParseSymbolicationResponse reads a /symbolicate/v5 response:
//
//	{"results":[{"stacks":[[{"module":"a.out","module_offset":"0x3ec3","function":"main",...}]]}]}
//
// Frames without a function (the server did not know the module) are left
// out.
func ParseSymbolicationResponse(r io.Reader) (Symbols, error) {
	var resp struct {
		Results []struct {
			Stacks [][]struct {
				Module       string `json:"module"`
				ModuleOffset string `json:"module_offset"`
				Function     string `json:"function"`
			} `json:"stacks"`
		} `json:"results"`
	}
	lr := &io.LimitedReader{R: r, N: maxSymbolResponse + 1}
	if err := json.NewDecoder(lr).Decode(&resp); err != nil {
		if lr.N <= 0 {
			return nil, fmt.Errorf("symbolication response: larger than %d bytes", maxSymbolResponse)
		}
		return nil, fmt.Errorf("symbolication response: %w", err)
	}
	if resp.Results == nil {
		return nil, fmt.Errorf("symbolication response: no \"results\" list")
	}
	s := Symbols{}
	for ri, res := range resp.Results {
		for si, st := range res.Stacks {
			for fi, f := range st {
				if f.Function == "" || f.Module == "" {
					continue
				}
				off, err := strconv.ParseUint(strings.TrimPrefix(f.ModuleOffset, "0x"), 16, 64)
				if err != nil {
					return nil, fmt.Errorf("symbolication response: results[%d].stacks[%d][%d]: module_offset %q is not a hex offset", ri, si, fi, f.ModuleOffset)
				}
				m := s[f.Module]
				if m == nil {
					m = map[uint64]string{}
					s[f.Module] = m
				}
				m[off] = f.Function
			}
		}
	}
	return s, nil
}

// Lookup names addr in lib, by the library's debug name (then its name).
// It fits Options.Symbolize.
func (s Symbols) Lookup(lib Lib, addr uint64) (string, bool) {
	for _, n := range []string{lib.DebugName, lib.Name} {
		if m := s[n]; m != nil {
			if f, ok := m[addr]; ok {
				return f, true
			}
		}
	}
	return "", false
}
