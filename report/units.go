package report

import (
	"fmt"
	"strings"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/pprofutil"
)

// Units that read right: times and bytes as pprofutil formats them, counts
// by what they count ("142 goroutines", "1 contention"), never "/count".

// formatValue prints v of sample type typ (unit unit).
func formatValue(v int64, typ, unit string) string {
	switch unit {
	case "", "count":
		return countText(v, countNoun(typ))
	}
	return pprofutil.FormatValue(v, unit)
}

// countNoun is what a count sample type counts, singular.
func countNoun(typ string) string { return bundle.CountNoun(typ) }

// countText is "1 goroutine", "142 goroutines", "1,024 samples".
func countText(v int64, noun string) string { return bundle.CountText(v, noun) }

// describePeriod says how a profile of kind k was sampled, in its unit.
func describePeriod(k bundle.Kind, p *profile.Profile) string { return bundle.PeriodText(k, p) }

// periodText rewrites a manifest period written by older versions
// ("0s (1000000000 Hz)", "1 contentions/count") when the profile itself
// cannot be read.
func periodText(k bundle.Kind, s string) string {
	switch {
	case k == bundle.OffCPU && strings.HasSuffix(s, "(1000000000 Hz)"):
		return "every context switch"
	case strings.HasSuffix(s, "(0 Hz)"):
		return ""
	}
	if n, rest, ok := strings.Cut(s, " "); ok && strings.HasSuffix(rest, "/count") {
		var v int64
		if _, err := fmt.Sscan(n, &v); err == nil {
			return countText(v, countNoun(strings.TrimSuffix(rest, "/count")))
		}
	}
	return s
}

// countIndex is the index of a profile's count sample type ("samples",
// "contentions"), or -1.
func countIndex(p *profile.Profile) int {
	for i, st := range p.SampleType {
		if st.Unit == "count" && (st.Type == "samples" || st.Type == "contentions" || st.Type == "goroutine" || st.Type == "polls") {
			return i
		}
	}
	return -1
}
