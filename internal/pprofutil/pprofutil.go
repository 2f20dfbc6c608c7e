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
