// Package pyroscope pushes the profiles of a capture bundle to Grafana
// Pyroscope through its connect push API (push.v1.PusherService/Push), with
// labels that tie every series to its target and capture, the capture's
// time range, bounded retries, and a state file (pushed.json) inside the
// bundle so that an interrupted or failed push can be run again and sends
// only what did not go.
//
// Typical use (what `profcap push` and `profcap record --push` do):
//
//	creds, err := pyroscope.DefaultCredentialSource().Resolve()
//	...
//	rep, err := pyroscope.Push(ctx, bundleDir, pyroscope.Options{
//		Server:      "https://pyroscope.example:4040",
//		Credentials: creds,
//	})
//
// rep lists every profile with its outcome; err is a *PushError naming the
// profiles that did not go when some failed.
package pyroscope

import (
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
)

// Label names profcap adds to every series.
const (
	LabelServiceName = "service_name"
	LabelCapture     = "profcap_capture"
	LabelKind        = "profcap_kind"
	LabelTarget      = "profcap_target"
	LabelName        = "__name__"
	LabelDelta       = "__delta__"
)

// Label is one series label.
type Label struct {
	Name, Value string
}

// Item is one profile of a bundle as it would be pushed.
type Item struct {
	Target string // target name in the bundle
	Kind   string // profcap kind (cpu, heap, ...)
	Name   string // Pyroscope __name__ (process_cpu, memory, ...)
	// Labels are the series labels, sorted by name, including __name__
	// and, for profiles that are already deltas, __delta__="false".
	Labels []Label
	Start  time.Time // the profile's time range (TimeNanos, DurationNanos)
	End    time.Time
	ID     string // stable profile id (RawSample.ID), a UUID derived from bundle id, target and kind
	Path   string // profile path inside the bundle
	Delta  bool   // the profile already covers a window (sent with __delta__="false")
}

// LabelString formats the labels the way Pyroscope and Grafana show a
// series selector: {a="1", b="2"}.
func (it Item) LabelString() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range it.Labels {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%q", l.Name, l.Value)
	}
	b.WriteByte('}')
	return b.String()
}

// MetricName maps a profcap kind onto the __name__ Pyroscope's own clients
// use for it, so that Grafana's profile type picker shows the series next to
// those of Pyroscope's SDKs (process_cpu, memory, mutex, block, goroutines).
// Kinds Pyroscope has no name for keep their own (wall, offcpu, async).
func MetricName(kind string) string {
	switch kind {
	case "cpu":
		return "process_cpu"
	case "heap", "allocs":
		return "memory"
	case "goroutine":
		return "goroutines"
	case "mutex", "block", "wall", "offcpu", "async":
		return kind
	}
	return sanitizeName(kind)
}

// idNamespace is the UUID namespace of profcap profile ids (a random v4
// UUID fixed once; changing it would make every bundle push again).
var idNamespace = [16]byte{0x4f, 0x1c, 0x8e, 0x52, 0x9a, 0x3d, 0x4b, 0x07, 0x86, 0x21, 0xd5, 0x60, 0x2e, 0xb9, 0x73, 0xaa}

// ProfileID returns the stable id of one profile of a bundle: a name-based
// (version 5, SHA-1) UUID of bundle id, target and kind. Pyroscope reads
// RawSample.ID as a UUID.
func ProfileID(bundleID, target, kind string) string {
	h := sha1.New()
	h.Write(idNamespace[:])
	h.Write([]byte(bundleID + "\x00" + target + "\x00" + kind))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// Plan lists the profiles of the bundle with manifest m that a push
// sends: every target's profiles with status ok or partial, in manifest
// order. The merged profiles are left out: they add up the targets' own and
// would count every sample twice.
func Plan(m *bundle.Manifest) ([]Item, error) {
	if m.ID == "" {
		return nil, fmt.Errorf("bundle has no id")
	}
	winStart, _ := time.Parse(bundle.TimeFormat, m.Window.Start)
	winEnd, _ := time.Parse(bundle.TimeFormat, m.Window.End)
	var items []Item
	for _, t := range m.Targets {
		for _, p := range t.Profiles {
			if p.Status != bundle.StatusOK && p.Status != bundle.StatusPartial {
				continue
			}
			if p.Path == "" || !bundle.Inside(p.Path) {
				return nil, fmt.Errorf("target %s: %s profile has no valid path in the manifest", t.Name, p.Kind)
			}
			start, err := parseTime(p.Start, winStart)
			if err != nil {
				return nil, fmt.Errorf("target %s: %s profile: start: %w", t.Name, p.Kind, err)
			}
			end, err := parseTime(p.End, winEnd)
			if err != nil {
				return nil, fmt.Errorf("target %s: %s profile: end: %w", t.Name, p.Kind, err)
			}
			if start.IsZero() || end.IsZero() {
				return nil, fmt.Errorf("target %s: %s profile: no time range in the manifest", t.Name, p.Kind)
			}
			if end.Before(start) {
				end = start
			}
			it := Item{
				Target: t.Name,
				Kind:   string(p.Kind),
				Name:   MetricName(string(p.Kind)),
				Start:  start,
				End:    end,
				ID:     ProfileID(m.ID, t.Name, string(p.Kind)),
				Path:   path.Clean(p.Path),
				Delta:  p.Kind.IsDelta(),
			}
			it.Labels = seriesLabels(m.ID, t, it)
			items = append(items, it)
		}
	}
	return items, nil
}

func parseTime(s string, def time.Time) (time.Time, error) {
	if s == "" {
		return def, nil
	}
	return time.Parse(bundle.TimeFormat, s)
}

// seriesLabels builds the labels of one profile's series. Target labels come
// first, with names made valid for Pyroscope (letters, digits and _, not
// starting with a digit) and reserved names (__*) dropped; profcap's own
// labels override target labels of the same name.
func seriesLabels(captureID string, t *bundle.Target, it Item) []Label {
	set := map[string]string{}
	keys := make([]string, 0, len(t.Labels))
	for k := range t.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic when two names sanitize alike: the first wins
	for _, k := range keys {
		n := sanitizeName(k)
		if strings.HasPrefix(n, "__") {
			continue
		}
		if _, dup := set[n]; !dup {
			set[n] = t.Labels[k]
		}
	}
	service := t.Name
	switch {
	case t.Labels["service_name"] != "":
		service = t.Labels["service_name"]
	case t.Labels["service"] != "":
		service = t.Labels["service"]
	}
	set[LabelServiceName] = service
	set[LabelTarget] = t.Name
	set[LabelCapture] = captureID
	set[LabelKind] = it.Kind
	set[LabelName] = it.Name
	if it.Delta {
		set[LabelDelta] = "false"
	}
	ls := make([]Label, 0, len(set))
	for k, v := range set {
		ls = append(ls, Label{Name: k, Value: strings.ToValidUTF8(v, "\uFFFD")})
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].Name < ls[j].Name })
	return ls
}

// sanitizeName maps s onto a Prometheus-style label name.
func sanitizeName(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
			b.WriteRune(r)
		case r >= '0' && r <= '9':
			if i == 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

// Prepared is a profile as it is pushed: the gzipped pprof and, per sample
// type, the profile type id Pyroscope files it under with the total of its
// values (what the server must give back for the profile).
type Prepared struct {
	Bytes  []byte
	Totals []Total
	// Uncompressed is the pprof's size before gzip, what the server's size
	// and rate limits count.
	Uncompressed int
}

// Total is the sum of one sample type's values in one profile.
type Total struct {
	Type  string // profile type id, e.g. process_cpu:cpu:nanoseconds:cpu:nanoseconds
	Value int64
}

// ProfileTypeID is the id Pyroscope gives a series' sample type:
// __name__:type:unit:period_type:period_unit.
func ProfileTypeID(name string, sampleType, periodType profile.ValueType) string {
	return name + ":" + sampleType.Type + ":" + sampleType.Unit + ":" + periodType.Type + ":" + periodType.Unit
}

// periodTypes are the period types of the profile type ids Pyroscope's
// own clients send for each kind (pyroscope-go, grafana-agent/Alloy's
// pprof scrape, the Java and eBPF profilers): the period type is the last
// two parts of the id, so a profile whose period type differs lands under
// an id no dashboard looks at. Kinds Pyroscope has no client for
// (offcpu, wakeup, async) take their main sample type.
var periodTypes = map[string]profile.ValueType{
	"cpu":       {Type: "cpu", Unit: "nanoseconds"},
	"wall":      {Type: "wallclock", Unit: "nanoseconds"},
	"offcpu":    {Type: "offcpu", Unit: "nanoseconds"},
	"wakeup":    {Type: "wakeup", Unit: "nanoseconds"},
	"async":     {Type: "busy", Unit: "nanoseconds"},
	"heap":      {Type: "space", Unit: "bytes"},
	"allocs":    {Type: "space", Unit: "bytes"},
	"goroutine": {Type: "goroutine", Unit: "count"},
	"mutex":     {Type: "contentions", Unit: "count"},
	"block":     {Type: "contentions", Unit: "count"},
}

// PeriodType returns the period type a profile of kind is pushed with;
// for a kind not in the table, the profile's own (or, when it has none,
// its default sample type).
func PeriodType(kind string, p *profile.Profile) profile.ValueType {
	if pt, ok := periodTypes[kind]; ok {
		return pt
	}
	// The pprof parser gives a profile without a period type an empty
	// one, never nil.
	if p.PeriodType != nil && (p.PeriodType.Type != "" || p.PeriodType.Unit != "") {
		return *p.PeriodType
	}
	if len(p.SampleType) == 0 {
		return profile.ValueType{}
	}
	st := p.SampleType[0]
	for _, s := range p.SampleType {
		if s.Type == p.DefaultSampleType {
			st = s
		}
	}
	return profile.ValueType{Type: st.Type, Unit: st.Unit}
}

// DefaultTypeID is the profile type id a kind's main sample type lands
// under, the one Grafana and pprof show by default
// (process_cpu:cpu:nanoseconds:cpu:nanoseconds for cpu), or "" for a kind
// profcap does not know.
func DefaultTypeID(kind string) string {
	types := KindSampleTypes(kind)
	if len(types) == 0 {
		return ""
	}
	return ProfileTypeID(MetricName(kind), types[mainSampleType(kind)], periodTypes[kind])
}

// KindSampleTypes lists the sample types profcap pushes for a kind, in
// the order its collectors write them, or nil for a kind it does not know.
func KindSampleTypes(kind string) []profile.ValueType {
	vt := func(t, u string) profile.ValueType { return profile.ValueType{Type: t, Unit: u} }
	switch kind {
	case "cpu":
		return []profile.ValueType{vt("samples", "count"), vt("cpu", "nanoseconds")}
	case "wall":
		return []profile.ValueType{vt("samples", "count"), vt("time", "nanoseconds")}
	case "offcpu":
		return []profile.ValueType{vt("offcpu", "nanoseconds")}
	case "wakeup":
		return []profile.ValueType{vt("wakeup", "nanoseconds")}
	case "async":
		return []profile.ValueType{vt("busy", "nanoseconds"), vt("scheduled", "nanoseconds"), vt("idle", "nanoseconds"), vt("polls", "count")}
	case "heap":
		return []profile.ValueType{vt("inuse_objects", "count"), vt("inuse_space", "bytes")}
	case "allocs":
		return []profile.ValueType{vt("alloc_objects", "count"), vt("alloc_space", "bytes")}
	case "goroutine":
		return []profile.ValueType{vt("goroutine", "count")}
	case "mutex", "block":
		return []profile.ValueType{vt("contentions", "count"), vt("delay", "nanoseconds")}
	}
	return nil
}

// mainSampleType is the index in KindSampleTypes of the kind's default
// sample type: the last (the Go runtime's and pprof's default), but the
// first for async (tokio-console's busy time).
func mainSampleType(kind string) int {
	if kind == "async" {
		return 0
	}
	return len(KindSampleTypes(kind)) - 1
}

// NoStack is the frame given to samples without a stack (goroutines the
// runtime could not unwind, a collector's "unknown"): Pyroscope drops
// samples with no location, which would make its totals short of the
// bundle's.
const NoStack = "[no stack]"

// Payload returns the item's profile gzipped as Prepare does.
func Payload(dir string, it Item) ([]byte, error) {
	pr, err := Prepare(dir, it)
	if err != nil {
		return nil, err
	}
	return pr.Bytes, nil
}

// Prepare loads the item's profile from the bundle in dir and returns it
// as it is pushed (the file in the bundle stays as it is):
//
//   - TimeNanos and DurationNanos set to the item's time range;
//   - for memory profiles only the half that belongs to the kind (in-use
//     for heap, allocations for allocs), so that Grafana's memory:alloc_*
//     and memory:inuse_* series each come from one kind and nothing is
//     counted twice;
//   - the period type of the kind's documented profile type ids
//     (PeriodType);
//   - sample label names made valid for Pyroscope (SanitizeLabelName; the
//     server turns sample labels into series labels, and v1.6 refuses a
//     name such as task.id); values made valid UTF-8;
//   - a NoStack frame for samples without a stack, which the server
//     would drop.
func Prepare(dir string, it Item) (*Prepared, error) {
	p, err := bundle.LoadProfile(dir, it.Path)
	if err != nil {
		return nil, err
	}
	p.TimeNanos = it.Start.UnixNano()
	p.DurationNanos = it.End.Sub(it.Start).Nanoseconds()
	switch it.Kind {
	case "heap":
		keepSampleTypes(p, "inuse_")
	case "allocs":
		keepSampleTypes(p, "alloc_")
	}
	pt := PeriodType(it.Kind, p)
	p.PeriodType = &pt
	sanitizeSampleLabels(p)
	fillEmptyStacks(p)
	if err := p.CheckValid(); err != nil {
		return nil, fmt.Errorf("%s: %w", it.Path, err)
	}
	pr := &Prepared{}
	for i, st := range p.SampleType {
		var sum int64
		for _, s := range p.Sample {
			if i < len(s.Value) {
				sum += s.Value[i]
			}
		}
		pr.Totals = append(pr.Totals, Total{Type: ProfileTypeID(it.Name, *st, pt), Value: sum})
	}
	var raw bytes.Buffer
	if err := p.WriteUncompressed(&raw); err != nil {
		return nil, fmt.Errorf("encoding %s: %w", it.Path, err)
	}
	pr.Uncompressed = raw.Len()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	pr.Bytes = buf.Bytes()
	return pr, nil
}

// SanitizeLabelName maps s onto a label name Pyroscope accepts,
// [a-zA-Z_][a-zA-Z0-9_]*: every other character becomes _, and a name
// starting with a digit gets a _ in front (task.id becomes task_id, as
// Pyroscope's own sanitizer since v1.14 does for dots).
func SanitizeLabelName(s string) string { return sanitizeName(s) }

// sanitizeSampleLabels renames sample labels Pyroscope would refuse and
// makes their values valid UTF-8. Two names that sanitize alike in one
// sample (task.id and task_id) are both kept, the renamed one with a
// numbered suffix, so no value is lost. Numeric labels are left alone:
// Pyroscope ignores them.
func sanitizeSampleLabels(p *profile.Profile) {
	for _, s := range p.Sample {
		if len(s.Label) == 0 {
			continue
		}
		keys := make([]string, 0, len(s.Label))
		clean := true
		for k, vs := range s.Label {
			keys = append(keys, k)
			if sanitizeName(k) != k {
				clean = false
			}
			for _, v := range vs {
				if !utf8.ValidString(v) {
					clean = false
				}
			}
		}
		if clean {
			continue
		}
		sort.Strings(keys)
		out := make(map[string][]string, len(s.Label))
		// Valid names first, so that a renamed one never takes their place.
		for _, pass := range []bool{true, false} {
			for _, k := range keys {
				n := sanitizeName(k)
				if (n == k) != pass {
					continue
				}
				for i := 2; out[n] != nil; i++ {
					n = sanitizeName(k) + "_" + strconv.Itoa(i)
				}
				vs := make([]string, len(s.Label[k]))
				for i, v := range s.Label[k] {
					vs[i] = strings.ToValidUTF8(v, "\uFFFD")
				}
				out[n] = vs
			}
		}
		s.Label = out
	}
}

// fillEmptyStacks gives samples without a location the NoStack frame.
func fillEmptyStacks(p *profile.Profile) {
	var loc *profile.Location
	for _, s := range p.Sample {
		if len(s.Location) > 0 {
			continue
		}
		if loc == nil {
			var maxFn, maxLoc uint64
			for _, f := range p.Function {
				maxFn = max(maxFn, f.ID)
			}
			for _, l := range p.Location {
				maxLoc = max(maxLoc, l.ID)
			}
			fn := &profile.Function{ID: maxFn + 1, Name: NoStack, SystemName: NoStack}
			p.Function = append(p.Function, fn)
			loc = &profile.Location{ID: maxLoc + 1, Line: []profile.Line{{Function: fn}}}
			if len(p.Mapping) > 0 {
				loc.Mapping = p.Mapping[0]
			}
			p.Location = append(p.Location, loc)
		}
		s.Location = []*profile.Location{loc}
	}
}

// keepSampleTypes drops the sample types not starting with prefix, unless
// that would drop them all, and the samples left with no value.
func keepSampleTypes(p *profile.Profile, prefix string) {
	var keep []int
	for i, st := range p.SampleType {
		if strings.HasPrefix(st.Type, prefix) {
			keep = append(keep, i)
		}
	}
	if len(keep) == 0 || len(keep) == len(p.SampleType) {
		return
	}
	types := make([]*profile.ValueType, len(keep))
	for j, i := range keep {
		types[j] = p.SampleType[i]
	}
	p.SampleType = types
	if !strings.HasPrefix(p.DefaultSampleType, prefix) {
		p.DefaultSampleType = ""
	}
	samples := p.Sample[:0]
	for _, s := range p.Sample {
		vals := make([]int64, len(keep))
		nonzero := false
		for j, i := range keep {
			if i < len(s.Value) {
				vals[j] = s.Value[i]
				nonzero = nonzero || vals[j] != 0
			}
		}
		if nonzero {
			s.Value = vals
			samples = append(samples, s)
		}
	}
	p.Sample = samples
	*p = *p.Compact()
}
