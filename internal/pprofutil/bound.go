package pprofutil

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/pprof/profile"
)

// Limits bound what one profile from outside may hold once profcap keeps
// it. A profile past a limit is cut, never refused: its totals stay right
// (what is cut is summed into a marked frame) and a note says what was cut.
type Limits struct {
	// MaxDepth is the most frames a stack keeps: the leaf-most are kept
	// (where time is spent), the rest become one "[N frames cut]" root.
	MaxDepth int
	// MaxSamples is the most samples kept after identical stacks are
	// summed: the heaviest are kept, the rest summed into one
	// "[N lighter stacks cut]" sample.
	MaxSamples int
}

// DefaultLimits hold every real profile seen (deep Java and Rust async
// stacks reach a few hundred frames; a busy service a few hundred thousand
// distinct stacks) while keeping a hostile one to a few hundred MiB.
var DefaultLimits = Limits{MaxDepth: 1024, MaxSamples: 250_000}

// Bound cuts p to l in place and returns notes saying what was cut (each
// also added to p's comments after CutPrefix). The default sample type's
// value ranks samples.
func Bound(p *profile.Profile, l Limits) []string {
	var notes []string
	if l.MaxDepth > 1 {
		deep, maxSeen := 0, 0
		var cut *profile.Location
		for _, s := range p.Sample {
			if len(s.Location) <= l.MaxDepth {
				continue
			}
			if cut == nil {
				cut = synthetic(p, fmt.Sprintf("[frames cut below depth %d]", l.MaxDepth))
			}
			deep++
			maxSeen = max(maxSeen, len(s.Location))
			s.Location = append(s.Location[:l.MaxDepth-1:l.MaxDepth-1], cut)
		}
		if deep > 0 {
			notes = append(notes, fmt.Sprintf("%d stacks deeper than %d frames (up to %d) were cut to their %d leaf-most frames", deep, l.MaxDepth, maxSeen, l.MaxDepth-1))
		}
	}
	if l.MaxSamples > 1 && len(p.Sample) > l.MaxSamples {
		before := len(p.Sample)
		p.Sample = sumIdentical(p.Sample)
		if len(p.Sample) > l.MaxSamples {
			si := len(p.SampleType) - 1
			if idx, err := SampleIndex(p, ""); err == nil {
				si = idx
			}
			slices.SortStableFunc(p.Sample, func(a, b *profile.Sample) int {
				return cmp.Compare(abs(b.Value[si]), abs(a.Value[si]))
			})
			rest := p.Sample[l.MaxSamples-1:]
			sum := &profile.Sample{Value: make([]int64, len(p.SampleType)),
				Location: []*profile.Location{synthetic(p, fmt.Sprintf("[%d lighter stacks cut]", len(rest)))}}
			for _, s := range rest {
				for i, v := range s.Value {
					sum.Value[i] += v
				}
			}
			p.Sample = append(p.Sample[:l.MaxSamples-1:l.MaxSamples-1], sum)
			notes = append(notes, fmt.Sprintf("%d samples (%d distinct stacks) were more than %d: the %d lighter stacks are summed into one frame", before, l.MaxSamples-1+len(rest), l.MaxSamples, len(rest)))
		}
		*p = *p.Compact()
	}
	for _, n := range notes {
		p.Comments = append(p.Comments, CutPrefix+n)
	}
	return notes
}

// CutPrefix starts the profile comment of every cut Bound or ParseLimited
// made (it begins with the bundle's warning prefix, so the report lists it).
const CutPrefix = "warning: cut: "

// CutNotes returns what was cut from p, from its comments.
func CutNotes(p *profile.Profile) []string {
	var out []string
	for _, c := range p.Comments {
		if n, ok := strings.CutPrefix(c, CutPrefix); ok {
			out = append(out, n)
		}
	}
	return out
}

// synthetic adds a location with one function called name.
func synthetic(p *profile.Profile, name string) *profile.Location {
	var fid, lid uint64
	for _, f := range p.Function {
		fid = max(fid, f.ID)
	}
	for _, l := range p.Location {
		lid = max(lid, l.ID)
	}
	f := &profile.Function{ID: fid + 1, Name: name, SystemName: name}
	l := &profile.Location{ID: lid + 1, Line: []profile.Line{{Function: f}}}
	p.Function = append(p.Function, f)
	p.Location = append(p.Location, l)
	return l
}

// sumIdentical sums samples with the same stack and labels.
func sumIdentical(ss []*profile.Sample) []*profile.Sample {
	idx := make(map[string]*profile.Sample, len(ss))
	out := ss[:0]
	var b strings.Builder
	for _, s := range ss {
		b.Reset()
		for _, l := range s.Location {
			b.WriteString(strconv.FormatUint(l.ID, 36))
			b.WriteByte(',')
		}
		if len(s.Label) > 0 || len(s.NumLabel) > 0 {
			keys := make([]string, 0, len(s.Label))
			for k := range s.Label {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				fmt.Fprintf(&b, "|%q=%q", k, s.Label[k])
			}
			nkeys := make([]string, 0, len(s.NumLabel))
			for k := range s.NumLabel {
				nkeys = append(nkeys, k)
			}
			slices.Sort(nkeys)
			for _, k := range nkeys {
				fmt.Fprintf(&b, "|%q#%v%v", k, s.NumLabel[k], s.NumUnit[k])
			}
		}
		key := b.String()
		if prev, ok := idx[key]; ok && len(prev.Value) == len(s.Value) {
			for i, v := range s.Value {
				prev.Value[i] += v
			}
			continue
		}
		idx[key] = s
		out = append(out, s)
	}
	return out
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
