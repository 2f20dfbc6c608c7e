package pprofutil

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/google/pprof/profile"
)

// SampleIndex finds the sample type named name (or its number), defaulting
// to the profile's default sample type, else the last one as pprof does.
func SampleIndex(p *profile.Profile, name string) (int, error) {
	if len(p.SampleType) == 0 {
		return 0, fmt.Errorf("profile has no sample types")
	}
	if name == "" {
		name = p.DefaultSampleType
		if name == "" {
			return len(p.SampleType) - 1, nil
		}
	}
	for i, st := range p.SampleType {
		if st.Type == name {
			return i, nil
		}
	}
	if n, err := strconv.Atoi(name); err == nil && n >= 0 && n < len(p.SampleType) {
		return n, nil
	}
	return 0, fmt.Errorf("sample index %q not in profile (it has %s)", name, TypeList(p))
}

// TypeList lists a profile's sample types as type/unit, for messages.
func TypeList(p *profile.Profile) string {
	var s []string
	for _, st := range p.SampleType {
		s = append(s, st.Type+"/"+st.Unit)
	}
	return strings.Join(s, ", ")
}

// FormatValue prints v in unit: times as ns/µs/ms/s, bytes in binary
// multiples, everything else as a count.
func FormatValue(v int64, unit string) string {
	f := float64(v)
	switch unit {
	case "nanoseconds", "microseconds", "milliseconds", "seconds":
		mul := map[string]float64{"nanoseconds": 1, "microseconds": 1e3, "milliseconds": 1e6, "seconds": 1e9}[unit]
		ns := f * mul
		switch a := math.Abs(ns); {
		case a >= 1e9:
			return fmt.Sprintf("%.2f s", ns/1e9)
		case a >= 1e6:
			return fmt.Sprintf("%.2f ms", ns/1e6)
		case a >= 1e3:
			return fmt.Sprintf("%.2f µs", ns/1e3)
		}
		return fmt.Sprintf("%.0f ns", ns)
	case "bytes":
		switch a := math.Abs(f); {
		case a >= 1<<30:
			return fmt.Sprintf("%.2f GiB", f/(1<<30))
		case a >= 1<<20:
			return fmt.Sprintf("%.2f MiB", f/(1<<20))
		case a >= 1<<10:
			return fmt.Sprintf("%.2f KiB", f/(1<<10))
		}
		return fmt.Sprintf("%d B", v)
	}
	name := unit
	if name == "" || name == "count" {
		name = "samples"
	}
	return fmt.Sprintf("%d %s", v, name)
}
