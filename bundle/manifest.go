// Package bundle reads and writes capture bundles: a directory with
// manifest.json, one gzipped pprof file per target and kind under targets/,
// the per-kind merges under merged/, and report.html.
package bundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/pprof/profile"
)

// Schema identifies the manifest format.
const Schema = "profcap.bundle/v1"

// ManifestFile is the manifest's name inside a bundle.
const ManifestFile = "manifest.json"

// Manifest describes a bundle. The JSON keys are part of the bundle format
// (docs/bundle.md); new keys may be added, none removed or renamed.
type Manifest struct {
	Schema   string    `json:"schema"`
	ID       string    `json:"id"`
	Created  string    `json:"created"` // RFC 3339
	Status   Status    `json:"status"`  // ok, partial, failed, capturing
	Reason   string    `json:"reason,omitempty"`
	Window   Window    `json:"window"`
	Workload *Workload `json:"workload"`
	Targets  []*Target `json:"targets"`
	Merged   []Merged  `json:"merged"`
	Report   string    `json:"report"`
	Profcap  string    `json:"profcap,omitempty"` // version that wrote it
	Skew     float64   `json:"max_start_skew_seconds"`
	Warnings []string  `json:"warnings,omitempty"`
	Summary  *Summary  `json:"summary,omitempty"`
}

// Window is the capture window.
type Window struct {
	Start            string  `json:"start"` // RFC 3339 with nanoseconds
	End              string  `json:"end"`
	RequestedSeconds float64 `json:"requested_seconds"`
	EndedEarly       string  `json:"ended_early,omitempty"` // why the window ended before its deadline
}

// Workload is the command run as the workload (profcap record -- CMD).
type Workload struct {
	Command  []string `json:"command"`
	ExitCode int      `json:"exit_code"`
	Seconds  float64  `json:"seconds"`
	Error    string   `json:"error,omitempty"`
}

// Target is one target's entry.
type Target struct {
	Name     string            `json:"name"`
	Labels   map[string]string `json:"labels"`
	Status   Status            `json:"status"` // ok, partial, failed, capturing
	PID      int               `json:"pid,omitempty"`
	CPU      *CPUUse           `json:"cpu,omitempty"`
	Notes    []string          `json:"notes,omitempty"`
	Profiles []*Profile        `json:"profiles"`
}

// CPUUse is a local target's CPU use (all threads, user+system, in cores)
// during a short baseline just before the window and during the window, so
// a reader can tell whether the capture itself moved it.
type CPUUse struct {
	BaselineSeconds float64 `json:"baseline_seconds"`
	BaselineCores   float64 `json:"baseline_cores"`
	WindowCores     float64 `json:"window_cores"`
	Error           string  `json:"error,omitempty"`
}

// Profile is one captured (or failed) profile.
type Profile struct {
	Kind      Kind   `json:"kind"`
	Collector string `json:"collector"`
	Status    Status `json:"status"` // ok, partial, failed, unsupported, pending
	Path      string `json:"path,omitempty"`
	Samples   int    `json:"samples"`
	Error     string `json:"error"`
	Note      string `json:"note,omitempty"`
	Start     string `json:"start,omitempty"`
	End       string `json:"end,omitempty"`
	Bytes     int64  `json:"bytes,omitempty"`
	// Period is the sampling period the profile reports (e.g. "10ms
	// (100 Hz)" for a Go CPU profile): the rate used.
	Period string `json:"period,omitempty"`
	// Coverage is the share of the window a profile of a window kind
	// really sampled, when under 99% (below MinCoverage it is partial).
	Coverage float64 `json:"coverage,omitempty"`
}

// Merged is one kind merged across targets.
type Merged struct {
	Kind    Kind     `json:"kind"`
	Path    string   `json:"path"`
	Targets []string `json:"targets"`
}

// Read reads the manifest of the bundle in dir.
func Read(dir string) (*Manifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s is not a profcap bundle: no %s", dir, ManifestFile)
		}
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: invalid manifest: %v", filepath.Join(dir, ManifestFile), err)
	}
	if m.Schema != Schema {
		return nil, fmt.Errorf("%s: unknown bundle schema %q (want %q)", filepath.Join(dir, ManifestFile), m.Schema, Schema)
	}
	for _, t := range m.Targets {
		for _, p := range t.Profiles {
			if p.Path != "" && !Inside(p.Path) {
				return nil, fmt.Errorf("%s: profile path %q leaves the bundle", dir, p.Path)
			}
		}
	}
	for _, mg := range m.Merged {
		if !Inside(mg.Path) {
			return nil, fmt.Errorf("%s: merged path %q leaves the bundle", dir, mg.Path)
		}
	}
	return &m, nil
}

// IsBundle reports whether dir holds a manifest.
func IsBundle(dir string) bool {
	st, err := os.Stat(filepath.Join(dir, ManifestFile))
	return err == nil && st.Mode().IsRegular()
}

// Inside reports whether a manifest path stays inside the bundle.
func Inside(p string) bool {
	if p == "" || filepath.IsAbs(p) || strings.Contains(p, `\`) {
		return false
	}
	c := filepath.Clean(p)
	return c != "." && c != ".." && !strings.HasPrefix(c, "../")
}

// Kinds returns the kinds that have a merged profile, in manifest order.
func (m *Manifest) Kinds() []Kind {
	var ks []Kind
	for _, mg := range m.Merged {
		ks = append(ks, mg.Kind)
	}
	return ks
}

// MergedPath returns the merged profile of kind, relative to the bundle.
func (m *Manifest) MergedPath(kind Kind) (string, bool) {
	for _, mg := range m.Merged {
		if mg.Kind == kind {
			return mg.Path, true
		}
	}
	return "", false
}

// LoadProfile reads the profile at rel (a manifest path) inside the bundle dir.
func LoadProfile(dir, rel string) (*profile.Profile, error) {
	if !Inside(rel) {
		return nil, fmt.Errorf("profile path %q leaves the bundle", rel)
	}
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, rel), err)
	}
	return p, nil
}
