// Package report writes report.html: one self-contained page (no network
// fetch of any kind) that opens on the answer — per kind the total, the
// idle share and the top functions, what the cluster waits on, which
// instance differs from its peers, and which profiles are incomplete —
// then a timeline of the window, per kind the merged flame graph, the top
// functions and one graph per target, the outlier view and the capture
// status of every target and kind. Summarize computes the same answer for
// the manifest and the terminal.
package report

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/flame"
)

// TopN is how many functions the top tables list.
const TopN = 20

// report.tmpl is the page's body, report.css its style and report.js its
// script (the timeline); the page shell around them is flame's
// (flame.WritePage), the one every page shares.
//
//go:embed report.tmpl
var pageTemplate string

//go:embed report.css
var pageStyle string

//go:embed report.js
var pageScript string

var tmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct":     func(f float64) string { return fmt.Sprintf("%.1f%%", f) },
	"share":   pctText,
	"lower":   strings.ToLower,
	"short":   flame.ShortName,
	"fn":      fnHTML,
	"pts":     func(f float64) string { return fmt.Sprintf("%.0f", f) },
	"p":       pText,
	"f1":      func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"count":   func(n int, noun string) string { return countText(int64(n), noun) },
	"sub100":  func(f float64) float64 { return 100 - f },
	"targets": targetList,
	"sub":     func(a, b int) int { return a - b },
	"cov":     covText,
	"script": func() template.JS {
		return template.JS(pageScript)
	},
}).Parse(pageTemplate))

// fnHTML is a function name for a table cell: the short name, breakable
// only after a separator (never mid-word), the full name in its title.
func fnHTML(name string) template.HTML {
	short := flame.ShortName(name)
	var b strings.Builder
	b.WriteString(`<span class="fn" title="`)
	b.WriteString(template.HTMLEscapeString(name))
	b.WriteString(`">`)
	start := 0
	for i := 0; i < len(short); i++ {
		c := short[i]
		if c == '.' || c == '/' || c == ':' || c == '(' || c == '<' || c == ',' {
			b.WriteString(template.HTMLEscapeString(short[start : i+1]))
			if c != '(' && c != '<' {
				b.WriteString("<wbr>")
			}
			start = i + 1
		}
	}
	b.WriteString(template.HTMLEscapeString(short[start:]))
	b.WriteString("</span>")
	return template.HTML(b.String())
}

type kindSection struct {
	Kind       bundle.Kind
	Summary    bundle.KindSummary
	Wait       *bundle.WaitSummary
	Unit       string
	SampleType string
	Total      string
	Period     string
	Merged     template.HTML
	Targets    []targetGraph
	BySelf     []row
	ByTotal    []row
	Warnings   []string
	Error      string
	SelfTitle  string // what the first table ranks by
}

type targetGraph struct {
	Name  string
	Graph template.HTML
	Error string
}

type row struct {
	Name        string
	Via, In     string
	Self, Total string
	SelfPct     float64
	TotalPct    float64
}

type statusRow struct {
	Target   *bundle.Target
	First    bool
	Profile  *bundle.Profile
	Period   string
	Recorded string // the profile's total count in its unit ("57 samples", "26 goroutines")
	Stacks   int
}

type page struct {
	M           *bundle.Manifest
	S           *bundle.Summary
	Window      string
	Kinds       []kindSection
	Outliers    []outlierGroup
	Differ      []bundle.OutlierSummary
	DifferTop   []bundle.OutlierSummary // the first few, for the first screen
	Incomplete  []incGroup
	Compared    int // outlier groups compared
	AlikeGroups int // of them, those in which every instance is alike
	Timeline    timeline
	Status      []statusRow
	Problems    int
}

// Write renders dir/report.html from the bundle's manifest and profiles.
func Write(dir string, m *bundle.Manifest) error {
	var buf bytes.Buffer
	if err := Render(&buf, dir, m); err != nil {
		return err
	}
	tmp := filepath.Join(dir, ".report.html.tmp")
	if err := os.WriteFile(tmp, buf.Bytes(), bundle.FileMode); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "report.html"))
}

// Render writes the report page for the bundle in dir to w.
func Render(w io.Writer, dir string, m *bundle.Manifest) error {
	win := windowSeconds(m)
	pg := page{M: m, S: &bundle.Summary{WindowSeconds: win, Profiles: countProfiles(m), Incomplete: incomplete(m)}}
	pg.Window = windowText(m, win)
	pg.Problems = len(pg.S.Incomplete)
	pg.Incomplete = groupIncomplete(pg.S.Incomplete)
	for _, mg := range m.Merged {
		ks := section(dir, m, mg, win)
		pg.Kinds = append(pg.Kinds, ks)
		if ks.Error == "" {
			pg.S.Kinds = append(pg.S.Kinds, ks.Summary)
		}
		if ks.Wait != nil {
			pg.S.Waits = append(pg.S.Waits, *ks.Wait)
		}
	}
	pg.Outliers = outliers(dir, m, true)
	pg.Compared = len(pg.Outliers)
	for _, g := range pg.Outliers {
		if !g.Rows[0].Differs && !g.Rows[0].PairDiffers {
			pg.AlikeGroups++
		}
	}
	pg.S.Outliers = outlierSummaries(pg.Outliers)
	for _, o := range pg.S.Outliers {
		if o.Differs {
			pg.Differ = append(pg.Differ, o)
		}
	}
	pg.DifferTop = pg.Differ[:min(len(pg.Differ), maxDifferLines)]
	pg.Timeline = buildTimeline(dir, m)
	pg.Status = statusRows(dir, m)
	var body bytes.Buffer
	if err := tmpl.Execute(&body, pg); err != nil {
		return err
	}
	return flame.WritePage(w, flame.Page{
		Title: "profcap capture " + m.ID,
		Style: template.CSS(strings.TrimSpace(pageStyle)),
		Body:  template.HTML(body.String()),
	})
}

// covText is a coverage, floored to a tenth of a percent: 0.989 is
// "98.9%", never "99%" for a profile listed as covering less.
func covText(c float64) string {
	return fmt.Sprintf("%.1f%%", float64(int(c*1000))/10)
}

// maxDifferLines is how many differing instances the first screen lists.
const maxDifferLines = 5

// windowText is the window as the header says it: its start and end, its
// real length and the length asked for.
func windowText(m *bundle.Manifest, win float64) string {
	st, err1 := time.Parse(bundle.TimeFormat, m.Window.Start)
	en, err2 := time.Parse(bundle.TimeFormat, m.Window.End)
	if err1 != nil || err2 != nil {
		return fmt.Sprintf("%g s requested", m.Window.RequestedSeconds)
	}
	s := fmt.Sprintf("%s → %s UTC (%.1f s", st.UTC().Format("2006-01-02 15:04:05.000"), en.UTC().Format("15:04:05.000"), win)
	if m.Window.RequestedSeconds > 0 && fmt.Sprintf("%.1f", win) != fmt.Sprintf("%.1f", m.Window.RequestedSeconds) {
		s += fmt.Sprintf("; %g s requested", m.Window.RequestedSeconds)
	}
	return s + ")"
}

func section(dir string, m *bundle.Manifest, mg bundle.Merged, win float64) kindSection {
	ks := kindSection{Kind: mg.Kind}
	p, err := bundle.LoadProfile(dir, mg.Path)
	if err != nil {
		ks.Error = err.Error()
		return ks
	}
	ka := analyze(mg.Kind, p, win)
	ka.summary.Targets = len(mg.Targets)
	ks.Summary, ks.Wait = ka.summary, ka.wait
	if len(p.SampleType) == 0 {
		ks.Error = "profile has no sample types"
		return ks
	}
	ks.SampleType, ks.Unit = ka.typ, ka.unit
	ks.Total = ka.summary.Text
	ks.Period = describePeriod(mg.Kind, p)
	opt := flame.Options{Title: fmt.Sprintf("%s — all targets", mg.Kind), Kind: string(mg.Kind), Icicle: true}
	if g, err := graph("merged-"+string(mg.Kind), p, opt); err != nil {
		ks.Error = err.Error()
	} else {
		ks.Merged = g
	}
	ks.SelfTitle = "by self"
	if waitKind(mg.Kind) {
		ks.SelfTitle = "by the code that waits"
	}
	nonIdle := ka.summary.Total - int64(float64(ka.summary.Total)*ka.summary.IdleShare+0.5)
	for _, r := range ka.bySelf[:min(TopN, len(ka.bySelf))] {
		ks.BySelf = append(ks.BySelf, row{Name: r.Key, Via: r.Via, In: r.In, Self: formatValue(r.Value, ka.typ, ka.unit), SelfPct: 100 * r.Share})
	}
	for _, f := range ka.byTotal {
		ks.ByTotal = append(ks.ByTotal, row{Name: f.Name, Self: formatValue(f.Self, ka.typ, ka.unit), Total: formatValue(f.Total, ka.typ, ka.unit),
			SelfPct: 100 * frac(f.Self, nonIdle), TotalPct: 100 * frac(f.Total, nonIdle)})
	}
	p = nil // one profile in memory at a time
	for i, name := range mg.Targets {
		tg := targetGraph{Name: name}
		path := ""
		if t := m.Target(name); t != nil {
			if pr := t.Profile(mg.Kind); pr != nil {
				path = pr.Path
			}
		}
		tp, err := bundle.LoadProfile(dir, path)
		if err == nil {
			// Warnings (tokio-console lints) are per target: the merge
			// would fold identical tasks of different targets into one.
			for _, w := range warnings(tp) {
				ks.Warnings = append(ks.Warnings, name+": "+w)
			}
			tg.Graph, err = graph(fmt.Sprintf("t%d-%s", i, mg.Kind), tp, flame.Options{Title: fmt.Sprintf("%s — %s", mg.Kind, name), Kind: string(mg.Kind), Icicle: true})
		}
		if err != nil {
			tg.Error = err.Error()
		}
		ks.Targets = append(ks.Targets, tg)
	}
	return ks
}

// statusRows is the capture status table: every profile of every target,
// with its period and its count in its own unit.
func statusRows(dir string, m *bundle.Manifest) []statusRow {
	var out []statusRow
	for _, t := range m.Targets {
		if len(t.Profiles) == 0 {
			out = append(out, statusRow{Target: t, First: true})
			continue
		}
		for i, pr := range t.Profiles {
			r := statusRow{Target: t, First: i == 0, Profile: pr, Period: periodText(pr.Kind, pr.Period), Stacks: pr.Samples}
			if pr.Path != "" {
				if p, err := bundle.LoadProfile(dir, pr.Path); err == nil {
					r.Period = describePeriod(pr.Kind, p)
					if ci := countIndex(p); ci >= 0 {
						var n int64
						for _, s := range p.Sample {
							n += s.Value[ci]
						}
						r.Recorded = countText(n, countNoun(p.SampleType[ci].Type))
					}
				}
			}
			out = append(out, r)
		}
	}
	return out
}

func graph(id string, p *profile.Profile, opt flame.Options) (template.HTML, error) {
	t, err := flame.NewTree(p, opt)
	if err != nil {
		return "", err
	}
	return flame.Embed(id, t, opt)
}

// warnings returns the profile comments that collectors mark as warnings.
func warnings(p *profile.Profile) []string {
	var ws []string
	for _, c := range p.Comments {
		if strings.HasPrefix(c, bundle.WarningPrefix) {
			ws = append(ws, strings.TrimPrefix(c, bundle.WarningPrefix))
		}
	}
	return ws
}
