package report

import (
	"fmt"
	"strings"
	"time"

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
func countNoun(typ string) string {
	switch typ {
	case "goroutine", "goroutines":
		return "goroutine"
	case "contentions":
		return "contention"
	case "samples", "sample":
		return "sample"
	case "polls":
		return "poll"
	case "alloc_objects", "inuse_objects", "objects":
		return "object"
	case "tasks":
		return "task"
	case "wakeups", "wakes":
		return "wake-up"
	case "":
		return "sample"
	}
	return strings.TrimSuffix(typ, "s")
}

// countText is "1 goroutine", "142 goroutines", "1,024 samples".
func countText(v int64, noun string) string {
	s := groupDigits(v)
	if v == 1 || v == -1 {
		return s + " " + noun
	}
	switch {
	case strings.HasSuffix(noun, "s"), strings.HasSuffix(noun, "x"), strings.HasSuffix(noun, "ch"):
		return s + " " + noun + "es"
	}
	return s + " " + noun + "s"
}

func groupDigits(v int64) string {
	s := fmt.Sprint(v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// describePeriod says how a profile of kind k was sampled, in its unit:
// "10.1 ms (99 Hz)", "every context switch", "1 contention", "one sample
// per 512 KiB allocated". "" when the profile says nothing meaningful.
func describePeriod(k bundle.Kind, p *profile.Profile) string {
	if k == bundle.OffCPU {
		// perf's sched_switch events are not sampled: every switch is
		// recorded (its period of 1 ns is a unit, not a rate).
		if p.PeriodType == nil || p.Period <= 1 {
			return "every context switch"
		}
	}
	if p.PeriodType == nil || p.Period <= 0 {
		return ""
	}
	switch p.PeriodType.Unit {
	case "nanoseconds", "microseconds", "milliseconds", "seconds":
		mul := map[string]float64{"nanoseconds": 1, "microseconds": 1e3, "milliseconds": 1e6, "seconds": 1e9}[p.PeriodType.Unit]
		ns := float64(p.Period) * mul
		if ns < 1000 {
			return "every event"
		}
		d := time.Duration(ns)
		return fmt.Sprintf("%s (%.0f Hz)", pprofutil.FormatValue(int64(d), "nanoseconds"), 1e9/ns)
	case "bytes":
		return "one sample per " + pprofutil.FormatValue(p.Period, "bytes") + " allocated"
	case "", "count":
		return countText(p.Period, countNoun(p.PeriodType.Type))
	}
	return fmt.Sprintf("%d %s", p.Period, p.PeriodType.Unit)
}

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
