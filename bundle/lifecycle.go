package bundle

import (
	"fmt"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/internal/secret"
)

// The manifest's lifecycle: a capture plans its profiles (NewManifest,
// AddTarget, Plan, Unavailable), creates the bundle, records results as
// they arrive (Writer.Record), then finishes the window (Writer.Finish),
// adds merges and the report. Every rule about what a manifest says lives
// here, so producers only hand over results.

// NewManifest returns the manifest of a capture about to start.
func NewManifest(id string, created time.Time, requested time.Duration, version string) *Manifest {
	return &Manifest{
		Schema:  Schema,
		ID:      id,
		Created: created.UTC().Format(time.RFC3339),
		Status:  StatusCapturing,
		Window:  Window{RequestedSeconds: requested.Seconds()},
		Targets: []*Target{},
		Merged:  []Merged{},
		Profcap: version,
	}
}

// AddTarget adds a target whose window has not yet closed.
func (m *Manifest) AddTarget(name string, labels map[string]string, pid int) *Target {
	if labels == nil {
		labels = map[string]string{}
	}
	t := &Target{Name: name, Labels: labels, Status: StatusCapturing, PID: pid, Profiles: []*Profile{}}
	m.Targets = append(m.Targets, t)
	return t
}

// Target returns the target called name, or nil.
func (m *Manifest) Target(name string) *Target {
	for _, t := range m.Targets {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Profile returns the target's profile of kind k, or nil.
func (t *Target) Profile(k Kind) *Profile {
	for _, p := range t.Profiles {
		if p.Kind == k {
			return p
		}
	}
	return nil
}

// Plan records that collector will capture kind k of the target.
func (t *Target) Plan(k Kind, collector string) {
	t.Profiles = append(t.Profiles, &Profile{Kind: k, Collector: collector, Status: StatusPending})
}

// Unavailable records that no collector can capture kind k of the target
// although it was asked for.
func (t *Target) Unavailable(k Kind, reason string) {
	t.Profiles = append(t.Profiles, &Profile{Kind: k, Status: StatusUnsupported, Error: reason})
}

// Result is one profile's outcome as a capture hands it to the bundle.
type Result struct {
	Target    string
	Kind      Kind
	Collector string
	Status    Status
	Profile   *profile.Profile // written when Status is ok or partial
	Start     time.Time        // when sampling really started
	End       time.Time
	Err       error
	Note      string
}

// ProfilePath is where the profile of kind k of a target lives in a bundle.
// dirName is the target's directory name (targets.SafeName of its name).
func ProfilePath(dirName string, k Kind) string {
	return "targets/" + dirName + "/" + string(k) + ".pb.gz"
}

// Record writes r's profile at rel (when it has one worth keeping) and
// replaces the target's pending entry of that kind with the outcome. A
// profile that is invalid or cannot be written makes the entry failed, with
// the reason. It returns a copy of the entry as recorded.
func (w *Writer) Record(rel string, r Result) Profile {
	// Errors and notes quote what targets said and the URLs asked: no
	// password from a URL reaches the manifest.
	e := &Profile{Kind: r.Kind, Collector: r.Collector, Status: r.Status, Note: secret.RedactText(r.Note)}
	if !r.Start.IsZero() {
		e.Start = r.Start.UTC().Format(TimeFormat)
	}
	if !r.End.IsZero() {
		e.End = r.End.UTC().Format(TimeFormat)
	}
	if r.Err != nil {
		e.Error = secret.RedactText(r.Err.Error())
	}
	switch {
	case r.Profile != nil && r.Status.Kept():
		if err := r.Profile.CheckValid(); err != nil {
			e.Status, e.Error = StatusFailed, fmt.Sprintf("collector returned an invalid profile: %v", err)
		} else if n, err := w.WriteProfile(rel, r.Profile); err != nil {
			e.Status, e.Error = StatusFailed, fmt.Sprintf("writing profile: %v", err)
		} else {
			e.Path, e.Bytes, e.Samples = rel, n, len(r.Profile.Sample)
			e.Period = PeriodText(r.Kind, r.Profile)
		}
	case r.Status.Kept():
		e.Status, e.Error = StatusFailed, "collector returned no profile"
	}
	_ = w.Update(func(m *Manifest) {
		t := m.Target(r.Target)
		if t == nil {
			return
		}
		for i, p := range t.Profiles {
			if p.Kind == e.Kind && p.Status == StatusPending {
				t.Profiles[i] = e
				return
			}
		}
		t.Profiles = append(t.Profiles, e)
	})
	return *e
}

// StartWindow records when the window opened.
func (w *Writer) StartWindow(start time.Time) {
	_ = w.Update(func(m *Manifest) { m.Window.Start = start.UTC().Format(TimeFormat) })
}

// Ending is what a capture knows when its window has closed.
type Ending struct {
	End time.Time
	// EndedEarly says why the window ended before its deadline ("" if it
	// did not).
	EndedEarly string
	Workload   *Workload
	CPU        map[string]*CPUUse // by target name
	// Explicit says the kinds were asked for by name: a kind a target
	// cannot give is then a failure, not merely unsupported.
	Explicit bool
	// Reason is why the capture as a whole is incomplete ("interrupted",
	// "interrupted twice"), or "".
	Reason string
}

// Counts are a finished capture's profiles: Captured includes partial
// ones (kept, but incomplete); Failed what was asked for and not got;
// Unsupported what a target does not offer.
type Counts struct {
	Captured, Failed, Unsupported int
}

// Finish closes the window: profiles still pending fail ("no result"),
// every target and the bundle get their final status, and the skew of
// start times is computed. The manifest is written now.
func (w *Writer) Finish(e Ending) (Counts, error) {
	var c Counts
	_ = w.Update(func(m *Manifest) {
		m.Window.End = e.End.UTC().Format(TimeFormat)
		m.Window.EndedEarly = e.EndedEarly
		m.Workload = e.Workload
		for _, t := range m.Targets {
			t.CPU = e.CPU[t.Name]
			for _, p := range t.Profiles {
				if p.Status == StatusPending {
					p.Status, p.Error = StatusFailed, "no result: the capture was stopped"
				}
			}
		}
		m.checkCoverage(e.End)
		m.Skew = m.StartSkew()
		c = m.finalStatus(e.Explicit, e.Reason)
	})
	return c, w.Sync()
}

// MinCoverage is the share of the window a profile of a window kind must
// sample to be ok: one that started late or stopped early says less about
// the window than its numbers suggest.
const MinCoverage = 0.95

// checkCoverage sets the coverage of every kept profile of a window kind
// that sampled less than 99% of the window, and makes those under
// MinCoverage partial, saying by how much.
func (m *Manifest) checkCoverage(end time.Time) {
	start, err := time.Parse(TimeFormat, m.Window.Start)
	if err != nil || !end.After(start) {
		return
	}
	win := end.Sub(start)
	for _, t := range m.Targets {
		for _, p := range t.Profiles {
			if !p.Status.Kept() || !p.Kind.IsDelta() || p.Start == "" || p.End == "" {
				continue
			}
			ps, err1 := time.Parse(TimeFormat, p.Start)
			pe, err2 := time.Parse(TimeFormat, p.End)
			if err1 != nil || err2 != nil {
				continue
			}
			from, to := ps, pe
			if from.Before(start) {
				from = start
			}
			if to.After(end) {
				to = end
			}
			cov := float64(to.Sub(from)) / float64(win)
			cov = max(0, min(1, cov))
			if cov >= 0.99 {
				continue
			}
			p.Coverage = float64(int(cov*1000)) / 1000
			if cov < MinCoverage && p.Status == StatusOK {
				p.Status = StatusPartial
				msg := fmt.Sprintf("covers %.0f%% of the window (sampled %s to %s of %s)", cov*100,
					max(0, ps.Sub(start)).Round(time.Millisecond), min(win, pe.Sub(start)).Round(time.Millisecond), win.Round(time.Millisecond))
				if p.Error == "" {
					p.Error = msg
				} else {
					p.Error += "; " + msg
				}
			}
		}
	}
}

// finalStatus sets every target's status and the bundle's and counts the
// profiles.
func (m *Manifest) finalStatus(explicit bool, reason string) Counts {
	var c Counts
	for _, t := range m.Targets {
		ok, bad, partial := 0, 0, false
		for _, p := range t.Profiles {
			switch p.Status {
			case StatusOK:
				ok++
			case StatusPartial:
				bad++
				partial = true
				c.Captured++ // kept, but not complete
			case StatusUnsupported:
				c.Unsupported++
				// A kind the user asked for by name and did not get is a
				// failure; one that was merely on offer is not.
				if explicit {
					bad++
				}
			default:
				bad++
			}
		}
		c.Captured += ok
		c.Failed += bad
		switch {
		case partial:
			t.Status = StatusPartial
		case bad == 0 && ok > 0:
			t.Status = StatusOK
		case ok == 0:
			t.Status = StatusFailed
		default:
			t.Status = StatusPartial
		}
	}
	switch {
	case c.Captured == 0:
		m.Status = StatusFailed
	case c.Failed > 0 || reason != "":
		m.Status = StatusPartial
	default:
		m.Status = StatusOK
	}
	m.Reason = reason
	return c
}

// StartSkew is the largest difference between the start times of the same
// kind across targets: how far apart the "same" window really was.
// (Snapshots taken at the window's end start at its end, so kinds are not
// compared with each other.)
func (m *Manifest) StartSkew() float64 {
	first := map[Kind]time.Time{}
	last := map[Kind]time.Time{}
	skew := 0.0
	for _, t := range m.Targets {
		for _, p := range t.Profiles {
			if p.Path == "" || p.Start == "" {
				continue
			}
			st, err := time.Parse(TimeFormat, p.Start)
			if err != nil {
				continue
			}
			if f, ok := first[p.Kind]; !ok || st.Before(f) {
				first[p.Kind] = st
			}
			if l, ok := last[p.Kind]; !ok || st.After(l) {
				last[p.Kind] = st
			}
			skew = max(skew, last[p.Kind].Sub(first[p.Kind]).Seconds())
		}
	}
	return skew
}

// Interrupt records that the capture was stopped after its final statuses
// were set (during the merges or the report): the bundle becomes partial
// with reason. The manifest is written now.
func (w *Writer) Interrupt(reason string) {
	_ = w.Update(func(m *Manifest) {
		m.Reason = reason
		if m.Status == StatusOK {
			m.Status = StatusPartial
		}
	})
	_ = w.Sync()
}

// AddMerged records the merge of one kind across targets.
func (w *Writer) AddMerged(mg Merged) {
	_ = w.Update(func(m *Manifest) { m.Merged = append(m.Merged, mg) })
}

// SetReport records the report's file name and writes the manifest.
func (w *Writer) SetReport(name string) error {
	_ = w.Update(func(m *Manifest) { m.Report = name })
	return w.Sync()
}

// DescribePeriod says what sampling period a profile reports: the rate used.
func DescribePeriod(p *profile.Profile) string {
	if p.PeriodType == nil || p.Period <= 0 {
		return ""
	}
	switch p.PeriodType.Unit {
	case "nanoseconds":
		d := time.Duration(p.Period).Round(time.Microsecond)
		return fmt.Sprintf("%s (%.0f Hz)", d, 1e9/float64(p.Period))
	case "bytes":
		return fmt.Sprintf("one sample per %d KiB allocated", p.Period>>10)
	}
	return fmt.Sprintf("%d %s/%s", p.Period, p.PeriodType.Type, p.PeriodType.Unit)
}
