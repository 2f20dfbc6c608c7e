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
