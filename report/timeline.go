package report

import (
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/flame"
	"github.com/profcap/profcap/internal/pprofutil"
)

// The timeline: for every target and kind whose samples say when they were
// taken (bundle.SecondLabel), the total per second across the window, so
// that a spike or a stall shows; selecting a span draws the flame graph of
// that span (report.js builds it from the stacks embedded here). Below
// it, when each profile sampled, for the profiles that cover less than the
// window.

// maxSpanRecords bounds the per-second stack records a page embeds for
// span flame graphs (about 20 bytes each).
const maxSpanRecords = 200_000

type timeline struct {
	Seconds  int // the window in whole seconds
	Kinds    []tlKind
	Coverage []coverageRow
	Data     template.JS // JSON for report.js: the per-second stacks of each kind
	Missing  []string    // kinds captured without per-second data
}

type tlKind struct {
	Kind  bundle.Kind
	Unit  string
	Type  string
	Max   float64 // largest per-second value of a target, for the shared scale
	Rows  []tlRow
	Total tlRow
	Spans bool // stacks are embedded: spans can be drawn
}

type tlRow struct {
	Target string
	Values []float64
	Bars   []tlBar
	Peak   string // the largest second, as text
}

type tlBar struct {
	X, W, H float64 // percent of the row's width and height
	Title   string
}

type coverageRow struct {
	Target   string
	Kind     bundle.Kind
	X, W     float64 // percent of the window
	Coverage float64
	Title    string
}

// spanData is what report.js needs to draw the flame graph of a span.
type spanData struct {
	Kind    string            `json:"kind"`
	Title   string            `json:"title"`
	Types   []flame.ValueType `json:"types"`
	Names   []string          `json:"names"`
	Shorts  []string          `json:"shorts"`
	Langs   []int             `json:"langs"`
	Idle    int               `json:"idle"`
	Stacks  [][]int           `json:"stacks"`  // root first, name indices
	Targets []string          `json:"targets"` // row order
	// Recs holds stack, target, second, value, four numbers per record.
	Recs []float64 `json:"recs"`
}

func buildTimeline(dir string, m *bundle.Manifest) timeline {
	win := windowSeconds(m)
	tl := timeline{Seconds: int(math.Ceil(win - 1e-9))}
	if tl.Seconds < 1 {
		tl.Seconds = 1
	}
	start, _ := time.Parse(bundle.TimeFormat, m.Window.Start)
	var spans []spanData
	for _, mg := range m.Merged {
		if !mg.Kind.IsDelta() {
			continue
		}
		tk := tlKind{Kind: mg.Kind}
		sd := spanData{Kind: string(mg.Kind), Idle: -1}
		nameIdx := map[string]int{}
		stackIdx := map[string]int{}
		any := false
		for ti, t := range m.Targets {
			pr := t.Profile(mg.Kind)
			if pr == nil || pr.Path == "" {
				continue
			}
			p, err := bundle.LoadProfile(dir, pr.Path)
			if err != nil || !hasSeconds(p) {
				continue
			}
			idx, err := pprofutil.SampleIndex(p, "")
			if err != nil {
				continue
			}
			if tk.Unit == "" {
				tk.Unit, tk.Type = p.SampleType[idx].Unit, p.SampleType[idx].Type
				sd.Types = []flame.ValueType{{Type: tk.Type, Unit: tk.Unit}}
				sd.Title = fmt.Sprintf("%s, selected seconds", mg.Kind)
			} else if p.SampleType[idx].Type != tk.Type {
				continue
			}
			any = true
			row := tlRow{Target: t.Name, Values: make([]float64, tl.Seconds)}
			sd.Targets = append(sd.Targets, t.Name)
			st := flame.NewStacks()
			for _, s := range p.Sample {
				v := float64(s.Value[idx])
				if v == 0 {
					continue
				}
				sec, n := sampleSeconds(s)
				if n < 1 {
					n = 1
				}
				var key []int
				if len(sd.Recs) < 4*maxSpanRecords {
					key = stackKey(st.Leaf(s), string(mg.Kind), nameIdx, &sd)
				}
				sid := -1
				if key != nil {
					k := fmt.Sprint(key)
					id, ok := stackIdx[k]
					if !ok {
						id = len(sd.Stacks)
						stackIdx[k] = id
						sd.Stacks = append(sd.Stacks, key)
					}
					sid = id
				}
				for j := int64(0); j < n; j++ {
					x := int(sec + j)
					if x < 0 || x >= tl.Seconds {
						continue
					}
					row.Values[x] += v / float64(n)
					if sid >= 0 {
						sd.Recs = append(sd.Recs, float64(sid), float64(len(sd.Targets)-1), float64(x), v/float64(n))
					}
				}
			}
			_ = ti
			tk.Rows = append(tk.Rows, row)
		}
		if !any {
			if hasKept(m, mg.Kind) {
				tl.Missing = append(tl.Missing, string(mg.Kind))
			}
			continue
		}
		tk.Spans = len(sd.Recs) < 4*maxSpanRecords
		tk.Total = tlRow{Target: "all targets", Values: make([]float64, tl.Seconds)}
		for _, r := range tk.Rows {
			for i, v := range r.Values {
				tk.Total.Values[i] += v
				tk.Max = math.Max(tk.Max, v)
			}
		}
		totalMax := 0.0
		for _, v := range tk.Total.Values {
			totalMax = math.Max(totalMax, v)
		}
		bars(&tk.Total, totalMax, tk.Type, tk.Unit, start)
		for i := range tk.Rows {
			bars(&tk.Rows[i], tk.Max, tk.Type, tk.Unit, start)
		}
		tl.Kinds = append(tl.Kinds, tk)
		if tk.Spans {
			spans = append(spans, sd)
		} else {
			spans = append(spans, spanData{Kind: sd.Kind, Idle: -1})
		}
	}
	if len(spans) > 0 {
		data, err := json.Marshal(spans) // escapes <, >, &: inert in <script>
		if err == nil {
			tl.Data = template.JS(data)
		}
	}
	tl.Coverage = coverage(m, win, start)
	return tl
}

func hasKept(m *bundle.Manifest, k bundle.Kind) bool {
	for _, t := range m.Targets {
		if p := t.Profile(k); p != nil && p.Status.Kept() {
			return true
		}
	}
	return false
}

func hasSeconds(p *profile.Profile) bool {
	for _, s := range p.Sample {
		if len(s.NumLabel[bundle.SecondLabel]) > 0 {
			return true
		}
	}
	return false
}

// sampleSeconds is a sample's first second in the window and how many
// seconds it spans.
//
// A sample without the label, in a profile whose other samples have it, is
// in second 0: pprof's encoding drops a numeric label of 0 that has no
// unit (collectors set NumUnit "seconds" to keep it).
func sampleSeconds(s *profile.Sample) (int64, int64) {
	sec, n := int64(0), int64(1)
	if v := s.NumLabel[bundle.SecondLabel]; len(v) > 0 {
		sec = v[0]
	}
	if v := s.NumLabel[bundle.SecondsLabel]; len(v) > 0 && v[0] > 1 {
		n = v[0]
	}
	return sec, n
}

// stackKey names a stack root first as name indices into sd, with the
// idle frames the flame graphs put above idle stacks.
func stackKey(leaf []flame.Frame, kind string, nameIdx map[string]int, sd *spanData) []int {
	id := func(name string, lang flame.Lang) int {
		i, ok := nameIdx[name]
		if !ok {
			i = len(sd.Names)
			nameIdx[name] = i
			sd.Names = append(sd.Names, name)
			short := flame.ShortName(name)
			if short == name {
				short = ""
			}
			sd.Shorts = append(sd.Shorts, short)
			sd.Langs = append(sd.Langs, int(lang))
		}
		return i
	}
	key := make([]int, 0, len(leaf)+2)
	if r := flame.IdleReason(kind, leaf); r != "" {
		sd.Idle = id(flame.IdleFrame, flame.LangGroup)
		key = append(key, sd.Idle, id(r, flame.LangGroup))
	}
	for i := len(leaf) - 1; i >= 0; i-- {
		key = append(key, id(leaf[i].Name, leaf[i].Lang))
	}
	return key
}

func bars(r *tlRow, maxV float64, typ, unit string, start time.Time) {
	n := len(r.Values)
	peak := 0
	for i, v := range r.Values {
		if v > r.Values[peak] {
			peak = i
		}
		if v <= 0 || maxV <= 0 {
			continue
		}
		title := fmt.Sprintf("second %d", i)
		if !start.IsZero() {
			title += " (" + start.Add(time.Duration(i)*time.Second).UTC().Format("15:04:05") + ")"
		}
		title += ": " + formatValue(int64(v), typ, unit)
		r.Bars = append(r.Bars, tlBar{X: 100 * float64(i) / float64(n), W: 100 / float64(n), H: 100 * v / maxV, Title: title})
	}
	if n > 0 {
		r.Peak = fmt.Sprintf("peak %s at second %d", formatValue(int64(r.Values[peak]), typ, unit), peak)
	}
}

// coverage lists the profiles of window kinds that sampled less than the
// window, placed on it.
func coverage(m *bundle.Manifest, win float64, start time.Time) []coverageRow {
	var out []coverageRow
	if start.IsZero() || win <= 0 {
		return nil
	}
	for _, t := range m.Targets {
		for _, p := range t.Profiles {
			if !p.Status.Kept() || !p.Kind.IsDelta() || p.Coverage == 0 || p.Coverage >= 0.99 {
				continue
			}
			ps, err1 := time.Parse(bundle.TimeFormat, p.Start)
			pe, err2 := time.Parse(bundle.TimeFormat, p.End)
			if err1 != nil || err2 != nil {
				continue
			}
			x := math.Max(0, ps.Sub(start).Seconds()/win)
			e := math.Min(1, pe.Sub(start).Seconds()/win)
			out = append(out, coverageRow{Target: t.Name, Kind: p.Kind, X: 100 * x, W: 100 * math.Max(0, e-x), Coverage: p.Coverage,
				Title: fmt.Sprintf("%s %s sampled %.1f s to %.1f s of the %.1f s window (%.0f%%)", t.Name, p.Kind, ps.Sub(start).Seconds(), pe.Sub(start).Seconds(), win, 100*p.Coverage)})
		}
	}
	return out
}
