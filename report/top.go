package report

import (
	"fmt"
	"sort"
	"strings"

	"github.com/google/pprof/profile"
)

// Func is one row of a top-functions table.
type Func struct {
	Name        string
	Self, Total int64
	SelfPct     float64
	TotalPct    float64
}

// Top returns the n functions with the most self and the most total value at
// sample index idx, and the profile's total. Inlined frames count as their
// own functions; a function recursing counts once per sample in total.
func Top(p *profile.Profile, idx, n int) (bySelf, byTotal []Func, total int64) {
	self := map[string]int64{}
	tot := map[string]int64{}
	seen := map[string]bool{}
	for _, s := range p.Sample {
		v := s.Value[idx]
		if v == 0 {
			continue
		}
		total += v
		clear(seen)
		leaf := true
		for _, loc := range s.Location {
			names := locationNames(loc)
			for _, name := range names { // innermost (inlined) first
				if leaf {
					self[name] += v
					leaf = false
				}
				if !seen[name] {
					seen[name] = true
					tot[name] += v
				}
			}
		}
	}
	mk := func(m map[string]int64, bySelfValue bool) []Func {
		fs := make([]Func, 0, len(m))
		for name := range m {
			f := Func{Name: name, Self: self[name], Total: tot[name]}
			if total != 0 {
				f.SelfPct = 100 * float64(f.Self) / float64(total)
				f.TotalPct = 100 * float64(f.Total) / float64(total)
			}
			fs = append(fs, f)
		}
		sort.Slice(fs, func(i, j int) bool {
			a, b := fs[i].Total, fs[j].Total
			if bySelfValue {
				a, b = fs[i].Self, fs[j].Self
			}
			if a != b {
				return abs(a) > abs(b)
			}
			return fs[i].Name < fs[j].Name
		})
		if len(fs) > n {
			fs = fs[:n]
		}
		return fs
	}
	return mk(self, true), mk(tot, false), total
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// locationNames names a location's frames, innermost first.
func locationNames(loc *profile.Location) []string {
	if len(loc.Line) == 0 {
		if loc.Mapping != nil && loc.Mapping.File != "" {
			return []string{fmt.Sprintf("%s+0x%x", baseName(loc.Mapping.File), loc.Address-loc.Mapping.Start+loc.Mapping.Offset)}
		}
		return []string{fmt.Sprintf("0x%x", loc.Address)}
	}
	out := make([]string, 0, len(loc.Line))
	for _, l := range loc.Line {
		if l.Function != nil && l.Function.Name != "" {
			out = append(out, l.Function.Name)
		} else {
			out = append(out, "[unknown]")
		}
	}
	return out
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// isKernel reports whether a location is in the kernel (perf's
// [kernel.kallsyms] mapping, or a kernel-half address).
func isKernel(loc *profile.Location) bool {
	if loc.Mapping != nil && strings.HasPrefix(loc.Mapping.File, "[kernel") {
		return true
	}
	return loc.Address >= 0xffff800000000000
}

// UserLeaves returns a copy of p whose stacks start at their innermost
// user-space frame: for off-CPU profiles, where every stack ends in the
// scheduler, "top by self" then names the code that blocked.
func UserLeaves(p *profile.Profile) *profile.Profile {
	q := p.Copy()
	for _, s := range q.Sample {
		i := 0
		for i < len(s.Location)-1 && isKernel(s.Location[i]) {
			i++
		}
		s.Location = s.Location[i:]
	}
	return q
}
