package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/google/pprof/profile"
)

// Summary is what a capture found, in the terms its report opens with:
// per kind the total, the idle share and the top functions; what the
// cluster waits on; which instances differ from their peers; and which
// profiles are missing or cover less than the window. It is written into
// the manifest ("summary") so that other tools can read the answer
// without parsing profiles (docs/bundle.md).
type Summary struct {
	// WindowSeconds is the window's real length (end − start).
	WindowSeconds float64 `json:"window_seconds"`
	// Profiles counts the manifest's profile entries by outcome; they add
	// up to the profiles requested.
	Profiles ProfileCounts `json:"profiles"`
	Kinds    []KindSummary `json:"kinds"`
	// Waits are, per kind that measures waiting, the code that waits
	// most (idle excluded).
	Waits []WaitSummary `json:"waiting_on"`
	// Outliers are the instances that differ from the other instances of
	// their role, most different first, for every kind compared; Differs
	// says which are beyond noise.
	Outliers []OutlierSummary `json:"outliers"`
	// Incomplete lists every profile that failed or covers less than
	// the window.
	Incomplete []IncompleteProfile `json:"incomplete"`
}

// ProfileCounts counts profile entries: OK + Partial + Failed +
// Unsupported = Requested.
type ProfileCounts struct {
	Requested   int `json:"requested"`
	OK          int `json:"ok"`
	Partial     int `json:"partial"`
	Failed      int `json:"failed"`
	Unsupported int `json:"unsupported"`
}

// KindSummary is one kind across the cluster (its merged profile).
type KindSummary struct {
	Kind       Kind   `json:"kind"`
	SampleType string `json:"sample_type"` // the pprof sample type summed: cpu, delay, inuse_space, ...
	Unit       string `json:"unit"`        // its unit: nanoseconds, bytes, count
	Total      int64  `json:"total"`
	Text       string `json:"text"` // Total as a person reads it: "3.48 s", "142 goroutines"
	Targets    int    `json:"targets"`
	// IdleShare is the share (0 to 1) of Total in idle stacks: runtime
	// threads and goroutines waiting for work (docs/flame.md, "Idle").
	IdleShare float64 `json:"idle_share"`
	Idle      []Share `json:"idle,omitempty"` // by reason
	// Attribution says what Top counts: "self" (the innermost frame) or
	// "waiting code" (the first frame of user code above the runtime's
	// waiting machinery).
	Attribution string `json:"attribution"`
	// Top are the functions with the largest share of the non-idle total.
	Top []Share `json:"top"`
}

// Share is a function's (or a reason's) part of a total.
type Share struct {
	Name  string  `json:"name"`  // full name
	Short string  `json:"short"` // shortened for display
	Value int64   `json:"value"`
	Share float64 `json:"share"`         // 0 to 1, of the non-idle total
	Via   string  `json:"via,omitempty"` // for waits: the call waited in
	In    string  `json:"in,omitempty"`  // for self time in a system frame: the user code it ran for
}

// WaitSummary is what the code of one kind waits on.
type WaitSummary struct {
	Kind       Kind    `json:"kind"`
	SampleType string  `json:"sample_type"`
	Total      int64   `json:"total"` // non-idle waiting
	Text       string  `json:"text"`
	Top        []Share `json:"top"`
}

// OutlierSummary compares one instance with the others of its role.
type OutlierSummary struct {
	Role   string `json:"role"`
	Kind   Kind   `json:"kind"`
	Target string `json:"target"`
	Peers  int    `json:"peers"`
	// Distance is the total variation distance, in percentage points,
	// between the instance's distribution of time over functions and its
	// peers'; Noise is the mean distance of random sets of as many
	// observations; Score is Distance minus Noise, at least 0.
	Distance float64 `json:"distance"`
	Noise    float64 `json:"noise"`
	Score    float64 `json:"score"`
	// PValue is the permutation test's: the share of random sets of as
	// many observations, drawn from the instance and its peers together,
	// at least as far from the rest.
	PValue float64 `json:"p_value"`
	// Observations is how many observations of the instance were
	// tested: on-CPU ticks, √c for c wall-clock ticks, blocking events or
	// tasks of one stack, or recorded stacks (docs/flame.md, "Outliers").
	Observations int `json:"observations"`
	// Slots is how many time slots of the window (a quarter second for
	// the eBPF collector's cpu, else a second) the instance's observations
	// were drawn in as whole blocks by the permutation test (each slot
	// together: the ticks of one request or step are not independent),
	// where its samples say when they were taken; 0: drawn one by one.
	Slots int `json:"slots,omitempty"`
	// Differs is PValue under 0.002 and Score at least 10 points, with
	// at least two peers: with one, a difference shows in both instances
	// and says nothing of which is off, so it is PairDiffers instead.
	Differs     bool `json:"differs"`
	PairDiffers bool `json:"pair_differs,omitempty"`
	// Function is the one whose share differs most; Share and RoleShare
	// its share in the instance and in its peers.
	Function  string  `json:"function"`
	Short     string  `json:"short"`
	Share     float64 `json:"share"`
	RoleShare float64 `json:"role_share"`
}

// IncompleteProfile is a profile that failed or covers less than the window.
type IncompleteProfile struct {
	Target   string  `json:"target"`
	Kind     Kind    `json:"kind"`
	Status   Status  `json:"status"`
	Coverage float64 `json:"coverage,omitempty"`
	Error    string  `json:"error,omitempty"`
}

// WriteSummary sets the summary of the bundle in dir and rewrites its
// manifest (atomically, as the capture writes it). It is for a bundle whose
// capture has finished; during a capture the Writer owns the manifest.
func WriteSummary(dir string, s *Summary) error {
	m, err := Read(dir)
	if err != nil {
		return err
	}
	m.Summary = s
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return fmt.Errorf("encoding the manifest: %w", err)
	}
	return WriteAtomic(filepath.Join(dir, ManifestFile), func(f io.Writer) error {
		_, err := f.Write(buf.Bytes())
		return err
	})
}

// Sample labels with which collectors say when a sample was taken, so
// that the report can draw a timeline of the window and a flame graph of
// any span of it. SecondLabel is a numeric label: the whole second of the
// window (0 is the second the window opened in) the sample's time falls
// in. A collector that only knows a span of seconds (one request of a
// sliced pprof capture) labels the span's first second and sets
// SecondsLabel to its length; the report spreads the value evenly. Both
// carry the unit SecondUnit: pprof's encoding drops a numeric label of 0
// that has no unit.
//
// A collector that counts samples by slots shorter than a second (eBPF's
// quarter seconds) also sets SlotLabel, the millisecond of the window its
// slot starts at (unit MillisecondUnit), so that the report's outlier test
// can draw a window's samples in more blocks than it has seconds.
const (
	SecondLabel     = "window_second"
	SecondsLabel    = "window_seconds"
	SecondUnit      = "seconds"
	SlotLabel       = "window_ms"
	MillisecondUnit = "milliseconds"
)

// PeriodText says how a profile of kind k was sampled, in its own unit:
// "10.1 ms (99 Hz)", "every context switch" (perf's off-CPU profiles
// record every switch; their period of 1 ns is a unit, not a rate), "1
// contention", "1 goroutine", "one sample per 512 KiB allocated"; ""
// when the profile says nothing meaningful (no period, or 0). It is what
// DescribePeriod should say; the report uses it.
func PeriodText(k Kind, p *profile.Profile) string {
	if k == OffCPU && (p.PeriodType == nil || p.Period <= 1) {
		return "every context switch"
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
		return fmt.Sprintf("%s (%.0f Hz)", durationText(ns), 1e9/ns)
	case "bytes":
		return "one sample per " + bytesText(p.Period) + " allocated"
	case "", "count":
		return CountText(p.Period, CountNoun(p.PeriodType.Type))
	}
	return fmt.Sprintf("%d %s", p.Period, p.PeriodType.Unit)
}

func durationText(ns float64) string {
	switch {
	case ns >= 1e9:
		return num2(ns/1e9) + " s"
	case ns >= 1e6:
		return num2(ns/1e6) + " ms"
	case ns >= 1e3:
		return num2(ns/1e3) + " µs"
	}
	return fmt.Sprintf("%.0f ns", ns)
}

func bytesText(b int64) string {
	f := float64(b)
	switch {
	case b >= 1<<30:
		return num2(f/(1<<30)) + " GiB"
	case b >= 1<<20:
		return num2(f/(1<<20)) + " MiB"
	case b >= 1<<10:
		return num2(f/(1<<10)) + " KiB"
	}
	return fmt.Sprintf("%d B", b)
}

// num2 is v with at most two decimals and no trailing zeros: 10, 10.1, 10.01.
func num2(v float64) string {
	s := strings.TrimRight(fmt.Sprintf("%.2f", v), "0")
	return strings.TrimSuffix(s, ".")
}

// CountNoun is what a count sample type counts, singular: "goroutine",
// "contention", "sample".
func CountNoun(typ string) string {
	switch typ {
	case "goroutine", "goroutines":
		return "goroutine"
	case "contentions":
		return "contention"
	case "samples", "sample", "":
		return "sample"
	case "polls":
		return "poll"
	case "alloc_objects", "inuse_objects", "objects":
		return "object"
	case "tasks":
		return "task"
	case "wakeups", "wakes":
		return "wake-up"
	}
	return strings.TrimSuffix(typ, "s")
}

// CountText is "1 goroutine", "142 goroutines", "1,024 samples".
func CountText(v int64, noun string) string {
	s := fmt.Sprint(v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if v == 1 || v == -1 {
		return b.String() + " " + noun
	}
	if strings.HasSuffix(noun, "s") || strings.HasSuffix(noun, "x") || strings.HasSuffix(noun, "ch") {
		return b.String() + " " + noun + "es"
	}
	return b.String() + " " + noun + "s"
}
