package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
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
	// between the instance's distribution of self time (or waiting time)
	// over functions and its role's (the median share of each function
	// over the role's instances); Noise is the distance expected from
	// sampling alone at the instance's sample count; Score is Distance
	// minus Noise, at least 0.
	Distance float64 `json:"distance"`
	Noise    float64 `json:"noise"`
	Score    float64 `json:"score"`
	// PValue is a chi-square goodness-of-fit test of the instance's counts
	// against its role's distribution.
	PValue  float64 `json:"p_value"`
	Samples int     `json:"samples"` // the counts tested
	// Differs is PValue below the threshold (0.001 split over the role's
	// instances) and Score at least 10 points.
	Differs bool `json:"differs"`
	// Function is the one whose share differs most; Share and RoleShare
	// its share in the instance and in the role.
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
const (
	SecondLabel  = "window_second"
	SecondsLabel = "window_seconds"
	SecondUnit   = "seconds"
)
