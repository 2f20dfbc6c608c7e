package report

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/flame"
	"github.com/profcap/profcap/internal/pprofutil"
)

// TopShares is how many functions a kind's summary line names.
const TopShares = 3

// Summarize computes the bundle's summary (bundle.Summary): what the
// report's first screen says, for the manifest and the terminal. It reads
// the merged profiles and, for the outliers, every target's.
func Summarize(dir string, m *bundle.Manifest) (*bundle.Summary, error) {
	if m == nil {
		return nil, fmt.Errorf("no manifest")
	}
	s := &bundle.Summary{WindowSeconds: windowSeconds(m), Profiles: countProfiles(m), Incomplete: incomplete(m)}
	for _, mg := range m.Merged {
		p, err := bundle.LoadProfile(dir, mg.Path)
		if err != nil {
			continue
		}
		ka := analyze(mg.Kind, p, s.WindowSeconds)
		ka.summary.Targets = len(mg.Targets)
		s.Kinds = append(s.Kinds, ka.summary)
		if ka.wait != nil {
			s.Waits = append(s.Waits, *ka.wait)
		}
	}
	s.Outliers = outlierSummaries(outliers(dir, m, false))
	return s, nil
}

func outlierSummaries(gs []outlierGroup) []bundle.OutlierSummary {
	out := []bundle.OutlierSummary{}
	for _, g := range gs {
		for _, r := range g.Rows {
			out = append(out, bundle.OutlierSummary{Role: g.Role, Kind: g.Kind, Target: r.Target, Peers: len(g.Rows) - 1,
				Distance: round1(r.Distance), Noise: round1(r.Noise), Score: round1(r.Score), PValue: r.P, Observations: r.Samples, Slots: r.Slots,
				Differs: r.Differs, PairDiffers: r.PairDiffers, Function: r.Function, Short: flame.ShortName(r.Function), Share: r.Share, RoleShare: r.Base})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Differs != out[j].Differs {
			return out[i].Differs
		}
		if out[i].PairDiffers != out[j].PairDiffers {
			return out[i].PairDiffers
		}
		return out[i].Score > out[j].Score
	})
	return out
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// windowSeconds is the window's real length, else the requested one.
func windowSeconds(m *bundle.Manifest) float64 {
	st, err1 := time.Parse(bundle.TimeFormat, m.Window.Start)
	en, err2 := time.Parse(bundle.TimeFormat, m.Window.End)
	if err1 == nil && err2 == nil && en.After(st) {
		return en.Sub(st).Seconds()
	}
	return m.Window.RequestedSeconds
}

func countProfiles(m *bundle.Manifest) bundle.ProfileCounts {
	var c bundle.ProfileCounts
	for _, t := range m.Targets {
		for _, p := range t.Profiles {
			c.Requested++
			switch p.Status {
			case bundle.StatusOK:
				c.OK++
			case bundle.StatusPartial:
				c.Partial++
			case bundle.StatusUnsupported:
				c.Unsupported++
			default:
				c.Failed++
			}
		}
	}
	return c
}

// incomplete lists every profile that failed or covers less than the
// window (a kind no collector offers is not a failure unless asked for by
// name, when the capture records it as failed).
func incomplete(m *bundle.Manifest) []bundle.IncompleteProfile {
	out := []bundle.IncompleteProfile{}
	for _, t := range m.Targets {
		for _, p := range t.Profiles {
			bad := p.Status == bundle.StatusFailed || p.Status == bundle.StatusPartial || p.Status == bundle.StatusPending ||
				p.Status.Kept() && p.Coverage > 0 && p.Coverage < 0.99
			if !bad {
				continue
			}
			out = append(out, bundle.IncompleteProfile{Target: t.Name, Kind: p.Kind, Status: p.Status, Coverage: p.Coverage, Error: p.Error})
		}
	}
	return out
}

// kindAnalysis is one merged profile, attributed.
type kindAnalysis struct {
	summary bundle.KindSummary
	wait    *bundle.WaitSummary
	idx     int
	unit    string
	typ     string
	bySelf  []attrRow // by the attribution (self or waiting code), non-idle
	byTotal []Func    // inclusive, non-idle
}

type attrRow struct {
	Key, Via, In string
	Value        int64
	Share        float64 // of the non-idle total
}

// analyze attributes every sample of a merged profile of kind k: idle
// share by reason, top functions of the rest, and for waiting kinds what
// the code waits on.
func analyze(k bundle.Kind, p *profile.Profile, window float64) kindAnalysis {
	var ka kindAnalysis
	idx, err := pprofutil.SampleIndex(p, "")
	if err != nil {
		return ka
	}
	ka.idx, ka.typ, ka.unit = idx, p.SampleType[idx].Type, p.SampleType[idx].Unit
	a := newAttributor(k)
	var total, idle int64
	byIdle := map[string]int64{}
	type acc struct {
		v   int64
		via map[string]int64
		in  map[string]int64
	}
	by := map[string]*acc{}
	add := func(m map[string]*acc, key, via, in string, v int64) {
		x := m[key]
		if x == nil {
			x = &acc{via: map[string]int64{}, in: map[string]int64{}}
			m[key] = x
		}
		x.v += v
		if via != "" {
			x.via[via] += v
		}
		if in != "" {
			x.in[in] += v
		}
	}
	var rest []*profile.Sample // non-idle samples, for the inclusive table
	for _, s := range p.Sample {
		v := s.Value[idx]
		if v == 0 {
			continue
		}
		total += v
		at := a.attribute(s)
		if at.Idle != "" {
			idle += v
			byIdle[at.Idle] += v
			continue
		}
		rest = append(rest, s)
		add(by, at.Key, at.Via, at.In, v)
	}
	sum := ka.summary
	sum.Kind, sum.SampleType, sum.Unit, sum.Total = k, ka.typ, ka.unit, total
	sum.Text = kindTotalText(k, total, ka.typ, ka.unit, window)
	sum.Attribution = "self"
	if waitKind(k) {
		sum.Attribution = "waiting code"
	}
	if total != 0 {
		sum.IdleShare = float64(idle) / float64(total)
	}
	for r, v := range byIdle {
		sum.Idle = append(sum.Idle, bundle.Share{Name: r, Short: r, Value: v, Share: frac(v, total)})
	}
	sortShares(sum.Idle)
	nonIdle := total - idle
	for key, x := range by {
		ka.bySelf = append(ka.bySelf, attrRow{Key: key, Via: topKey(x.via), In: topKey(x.in), Value: x.v, Share: frac(x.v, nonIdle)})
	}
	sort.Slice(ka.bySelf, func(i, j int) bool {
		if a, b := abs(ka.bySelf[i].Value), abs(ka.bySelf[j].Value); a != b {
			return a > b
		}
		return ka.bySelf[i].Key < ka.bySelf[j].Key
	})
	for _, r := range ka.bySelf[:min(TopShares, len(ka.bySelf))] {
		sum.Top = append(sum.Top, bundle.Share{Name: r.Key, Short: flame.ShortName(r.Key), Value: r.Value, Share: r.Share, Via: r.Via, In: flame.ShortName(r.In)})
	}
	if sum.Top == nil {
		sum.Top = []bundle.Share{}
	}
	ka.summary = sum
	if len(rest) > 0 {
		q := &profile.Profile{SampleType: p.SampleType, Sample: rest}
		_, ka.byTotal, _ = Top(q, idx, TopN)
	}
	ka.wait = waitsOf(k, p, a)
	return ka
}

// waitsOf is what the code of a waiting kind waits on: its waiting
// samples (of the sample type that measures waiting) by the code that
// waits, idle excluded.
func waitsOf(k bundle.Kind, p *profile.Profile, a *attributor) *bundle.WaitSummary {
	typ := ""
	found := false
	for _, w := range waitsKinds {
		if w.Kind == k {
			typ, found = w.SampleType, true
		}
	}
	if !found {
		return nil
	}
	idx, err := pprofutil.SampleIndex(p, typ)
	if err != nil {
		if idx, err = pprofutil.SampleIndex(p, ""); err != nil {
			return nil
		}
	}
	ws := &bundle.WaitSummary{Kind: k, SampleType: p.SampleType[idx].Type, Top: []bundle.Share{}}
	by := map[string]int64{}
	via := map[string]map[string]int64{}
	for _, s := range p.Sample {
		v := s.Value[idx]
		if v <= 0 {
			continue
		}
		at := a.attribute(s)
		if at.Idle != "" || !at.Wait {
			continue
		}
		key := at.Key
		if k == bundle.Async {
			key = at.Key // the task
		}
		by[key] += v
		if at.Via != "" {
			if via[key] == nil {
				via[key] = map[string]int64{}
			}
			via[key][at.Via] += v
		}
		ws.Total += v
	}
	ws.Text = formatValue(ws.Total, ws.SampleType, p.SampleType[idx].Unit)
	var shares []bundle.Share
	for key, v := range by {
		shares = append(shares, bundle.Share{Name: key, Short: flame.ShortName(key), Value: v, Share: frac(v, ws.Total), Via: topKey(via[key])})
	}
	sortShares(shares)
	ws.Top = append(ws.Top, shares[:min(TopShares, len(shares))]...)
	return ws
}

func sortShares(s []bundle.Share) {
	sort.Slice(s, func(i, j int) bool {
		if s[i].Value != s[j].Value {
			return s[i].Value > s[j].Value
		}
		return s[i].Name < s[j].Name
	})
}

func topKey(m map[string]int64) string {
	best, bv := "", int64(0)
	for k, v := range m {
		if v > bv || v == bv && k < best {
			best, bv = k, v
		}
	}
	return best
}

func frac(v, total int64) float64 {
	if total == 0 {
		return 0
	}
	return float64(v) / float64(total)
}

// kindTotalText says a kind's total as a person reads it, short enough
// for one table cell: "3.48 s (0.35 cores)", "28.98 MiB in use".
func kindTotalText(k bundle.Kind, total int64, typ, unit string, window float64) string {
	v := formatValue(total, typ, unit)
	switch {
	case k == bundle.CPU && unit == "nanoseconds" && window > 0:
		return fmt.Sprintf("%s (%.2f cores)", v, float64(total)/1e9/window)
	case k == bundle.Heap && strings.HasPrefix(typ, "inuse"):
		return v + " in use"
	case k == bundle.Allocs && strings.HasPrefix(typ, "alloc"):
		return v + " allocated"
	case k == bundle.Async:
		return v + " " + typ
	}
	return v
}

// SummaryLines renders a summary as the lines record prints when it ends
// (and the report's first screen says): one line per kind, the waits, the
// instances that differ and the incomplete profiles. Names are shortened;
// the caller escapes them for a terminal.
func SummaryLines(s *bundle.Summary) []string {
	var out []string
	w := 0
	for _, k := range s.Kinds {
		w = max(w, len(k.Kind))
	}
	for _, k := range s.Kinds {
		line := fmt.Sprintf("%-*s %s", w, k.Kind, k.Text)
		if k.IdleShare > 0 {
			line += fmt.Sprintf(", %.0f%% idle", 100*k.IdleShare)
		}
		if len(k.Top) > 0 {
			line += "; top: " + sharesText(k.Top)
		}
		out = append(out, line)
	}
	var waits []string
	for _, ws := range s.Waits {
		if len(ws.Top) > 0 {
			waits = append(waits, fmt.Sprintf("  %-*s %s", w, ws.Kind, sharesText(ws.Top)))
		}
	}
	if len(waits) > 0 {
		out = append(out, "waiting on:")
		out = append(out, waits...)
	}
	var differ []string
	for _, o := range s.Outliers {
		if o.Differs {
			differ = append(differ, "  "+outlierText(o))
		}
	}
	if len(differ) > 0 {
		out = append(out, "instances that differ from their peers:")
		out = append(out, differ...)
	}
	// A pair that differs is one line: both rows say the same.
	var pairs []string
	seen := map[string]bool{}
	for _, o := range s.Outliers {
		if key := o.Role + "\x00" + string(o.Kind); o.PairDiffers && !seen[key] {
			seen[key] = true
			pairs = append(pairs, fmt.Sprintf("  %s (%s): %.0f points beyond noise, %s; a third instance would say which one is off",
				o.Role, o.Kind, o.Score, pText(o.PValue)))
		}
	}
	if len(pairs) > 0 {
		out = append(out, "roles whose two instances differ from each other:")
		out = append(out, pairs...)
	}
	return out
}

func sharesText(ss []bundle.Share) string {
	var parts []string
	for _, x := range ss {
		t := fmt.Sprintf("%s %s", x.Short, pctText(x.Share))
		if x.Via != "" {
			t += " (" + x.Via + ")"
		} else if x.In != "" && x.In != x.Short {
			t += " (in " + x.In + ")"
		}
		parts = append(parts, t)
	}
	return strings.Join(parts, ", ")
}

func pctText(f float64) string {
	switch p := 100 * f; {
	case p >= 9.95:
		return fmt.Sprintf("%.0f%%", p)
	case p >= 0.05:
		return fmt.Sprintf("%.1f%%", p)
	case p > 0:
		return "<0.1%"
	}
	return "0%"
}

func outlierText(o bundle.OutlierSummary) string {
	return fmt.Sprintf("%s (%s, %s): %.0f points beyond noise, %s over %s; %s %s vs %s in its peers",
		o.Target, o.Role, o.Kind, o.Score, pText(o.PValue), countText(int64(o.Observations), "observation"),
		o.Short, pctText(o.Share), pctText(o.RoleShare))
}

// pText is a p-value as people read it.
func pText(p float64) string {
	switch {
	case p < 0.0001:
		return "p < 0.0001"
	case p < 0.01:
		return fmt.Sprintf("p = %.4f", p)
	}
	return fmt.Sprintf("p = %.2f", p)
}

// incGroup is incomplete profiles alike but for their target, for the
// page and the terminal: "async partial on 5 targets: covers 92%".
type incGroup struct {
	Kind     bundle.Kind
	Status   bundle.Status
	Coverage float64
	Targets  []string
	Error    string // the first target's
}

var digitsRE = strings.NewReplacer("0", "", "1", "", "2", "", "3", "", "4", "", "5", "", "6", "", "7", "", "8", "", "9", "")

func groupIncomplete(list []bundle.IncompleteProfile) []incGroup {
	var out []incGroup
	at := map[string]int{}
	for _, p := range list {
		key := fmt.Sprintf("%s|%s|%.0f|%s", p.Kind, p.Status, 100*p.Coverage, digitsRE.Replace(p.Error))
		i, ok := at[key]
		if !ok {
			i = len(out)
			at[key] = i
			out = append(out, incGroup{Kind: p.Kind, Status: p.Status, Coverage: p.Coverage, Error: p.Error})
		}
		out[i].Targets = append(out[i].Targets, p.Target)
	}
	return out
}

// Text is the group as one line.
func (g incGroup) Text() string {
	s := fmt.Sprintf("%s %s on %s", g.Kind, g.Status, targetList(g.Targets))
	switch {
	case g.Error != "":
		s += ": " + g.Error
		if len(g.Targets) > 1 {
			s += " (" + g.Targets[0] + ")"
		}
	case g.Coverage > 0:
		s += fmt.Sprintf(": covers %s of the window", covText(g.Coverage))
	}
	return s
}

func targetList(ts []string) string {
	if len(ts) == 1 {
		return ts[0]
	}
	if len(ts) <= 4 {
		return strings.Join(ts, ", ")
	}
	return fmt.Sprintf("%d targets (%s, … %s)", len(ts), strings.Join(ts[:2], ", "), ts[len(ts)-1])
}
