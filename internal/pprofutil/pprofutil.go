// Package pprofutil holds small helpers around google/pprof's profile
// package that every part of profcap needs.
package pprofutil

import (
	"fmt"

	"github.com/google/pprof/profile"
)

// Merge merges profiles like profile.Merge, but never panics: profiles from
// outside may lack a period type (profile.Merge dereferences it) or be
// inconsistent in ways CheckValid does not catch.
func Merge(ps ...*profile.Profile) (merged *profile.Profile, err error) {
	for i, p := range ps {
		if p == nil {
			return nil, fmt.Errorf("profile %d is nil", i)
		}
		if p.PeriodType == nil {
			p.PeriodType = &profile.ValueType{}
		}
		for _, st := range p.SampleType {
			if st == nil {
				return nil, fmt.Errorf("profile %d has a nil sample type", i)
			}
		}
	}
	defer func() {
		if r := recover(); r != nil {
			merged, err = nil, fmt.Errorf("merging profiles: %v", r)
		}
	}()
	return profile.Merge(ps)
}

// Delta returns after − before for two cumulative profiles of one process,
// dropping stacks that did not change.
func Delta(before, after *profile.Profile) (*profile.Profile, error) {
	b := before.Copy()
	b.Scale(-1)
	d, err := Merge(after, b)
	if err != nil {
		return nil, fmt.Errorf("subtracting the start snapshot: %w", err)
	}
	keep := d.Sample[:0]
	for _, s := range d.Sample {
		for _, v := range s.Value {
			if v != 0 {
				keep = append(keep, s)
				break
			}
		}
	}
	d.Sample = keep
	d = d.Compact()
	return d, nil
}

// LabelSamples sets the string label key=value on every sample of p.
func LabelSamples(p *profile.Profile, key, value string) {
	for _, s := range p.Sample {
		if s.Label == nil {
			s.Label = map[string][]string{}
		}
		s.Label[key] = []string{value}
	}
}

// Merger merges many profiles one at a time without the quadratic cost of
// merging each into a growing accumulator (profile.Merge copies all of its
// inputs, so folding n profiles into one costs O(n²)). It keeps at most one
// partial merge per power of two, like a binary counter: each profile is
// copied O(log n) times, and memory holds about twice the final merge.
type Merger struct {
	levels []*profile.Profile // levels[i] merges 2^i inputs, or is nil
	first  *profile.Profile   // the first input, which every other must match
}

// Add merges p in. A profile incompatible with the first one added
// (other sample or period types) is an error, and nothing is added.
func (m *Merger) Add(p *profile.Profile) error {
	if p == nil {
		return fmt.Errorf("profile is nil")
	}
	if m.first == nil {
		m.first = p
	} else if err := compatible(m.first, p); err != nil {
		return err
	}
	carry := p
	for i := 0; ; i++ {
		if i == len(m.levels) {
			m.levels = append(m.levels, carry)
			return nil
		}
		if m.levels[i] == nil {
			m.levels[i] = carry
			return nil
		}
		mg, err := Merge(m.levels[i], carry)
		if err != nil {
			// Compatible profiles that still do not merge: keep both
			// unmerged at the top (Result tries again) rather than lose
			// inputs already added.
			m.levels = append(m.levels, carry)
			return nil
		}
		m.levels[i] = nil
		carry = mg
	}
}

// Result merges what was added; nil if nothing was.
func (m *Merger) Result() (*profile.Profile, error) {
	var ps []*profile.Profile
	for _, p := range m.levels {
		if p != nil {
			ps = append(ps, p)
		}
	}
	switch len(ps) {
	case 0:
		return nil, nil
	case 1:
		return ps[0], nil
	}
	return Merge(ps...)
}

// compatible says why a and b cannot be merged (as profile.Merge checks):
// their sample types or period types differ.
func compatible(a, b *profile.Profile) error {
	vt := func(v *profile.ValueType) string {
		if v == nil {
			return ""
		}
		return v.Type + "/" + v.Unit
	}
	if vt(a.PeriodType) != vt(b.PeriodType) {
		return fmt.Errorf("incompatible period types %s and %s", vt(a.PeriodType), vt(b.PeriodType))
	}
	if len(a.SampleType) != len(b.SampleType) {
		return fmt.Errorf("incompatible sample types: %d and %d values", len(a.SampleType), len(b.SampleType))
	}
	for i := range a.SampleType {
		if vt(a.SampleType[i]) != vt(b.SampleType[i]) {
			return fmt.Errorf("incompatible sample types %s and %s", vt(a.SampleType[i]), vt(b.SampleType[i]))
		}
	}
	return nil
}
