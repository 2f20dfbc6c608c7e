// Package report writes report.html: one self-contained page (no network
// fetch of any kind) with, per kind, the merged flame graph, one per target,
// the top functions, and the capture status of every target and kind.
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

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/flame"
	"github.com/profcap/profcap/internal/pprofutil"
)

// TopN is how many functions the top tables list.
const TopN = 20

// report.tmpl is the page's body and report.css its style; the page shell
// around them is flame's (flame.WritePage), the one every page shares.
//
//go:embed report.tmpl
var pageTemplate string

//go:embed report.css
var pageStyle string

var tmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct":   func(f float64) string { return fmt.Sprintf("%.1f%%", f) },
	"lower": strings.ToLower,
}).Parse(pageTemplate))

type kindSection struct {
	Kind       bundle.Kind
	Unit       string
	SampleType string
	Total      string
	Merged     template.HTML
	Targets    []targetGraph
	BySelf     []row
	ByTotal    []row
	Warnings   []string
	Error      string
	SelfNote   string // how "self" was counted, when not at the leaf
}

type targetGraph struct {
	Name  string
	Graph template.HTML
	Error string
}

type row struct {
	Name              string
	Self, Total       string
	SelfPct, TotalPct float64
}

type page struct {
	M        *bundle.Manifest
	Kinds    []kindSection
	Outliers []outlierGroup
	Problems int
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
	pg := page{M: m}
	for _, t := range m.Targets {
		for _, p := range t.Profiles {
			if p.Status == bundle.StatusFailed || p.Status == bundle.StatusPartial {
				pg.Problems++
			}
		}
	}
	for _, mg := range m.Merged {
		pg.Kinds = append(pg.Kinds, section(dir, m, mg))
	}
	pg.Outliers = outliers(dir, m)
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

func section(dir string, m *bundle.Manifest, mg bundle.Merged) kindSection {
	ks := kindSection{Kind: mg.Kind}
	p, err := bundle.LoadProfile(dir, mg.Path)
	if err != nil {
		ks.Error = err.Error()
		return ks
	}
	idx, err := pprofutil.SampleIndex(p, "")
	if err != nil {
		ks.Error = err.Error()
		return ks
	}
	st := p.SampleType[idx]
	ks.SampleType, ks.Unit = st.Type, st.Unit
	opt := flame.Options{Title: fmt.Sprintf("%s — all targets", mg.Kind)}
	if g, err := graph("merged-"+string(mg.Kind), p, opt); err != nil {
		ks.Error = err.Error()
	} else {
		ks.Merged = g
	}
	bySelf, byTotal, total := Top(p, idx, TopN)
	if mg.Kind == bundle.OffCPU {
		// Every off-CPU stack ends in the scheduler: rank by the code that
		// blocked instead.
		bySelf, _, _ = Top(UserLeaves(p), idx, TopN)
		ks.SelfNote = "innermost user-space frame (kernel frames skipped)"
	}
	ks.Total = pprofutil.FormatValue(total, st.Unit)
	for _, f := range bySelf {
		ks.BySelf = append(ks.BySelf, row{Name: f.Name, Self: pprofutil.FormatValue(f.Self, st.Unit), Total: pprofutil.FormatValue(f.Total, st.Unit), SelfPct: f.SelfPct, TotalPct: f.TotalPct})
	}
	for _, f := range byTotal {
		ks.ByTotal = append(ks.ByTotal, row{Name: f.Name, Self: pprofutil.FormatValue(f.Self, st.Unit), Total: pprofutil.FormatValue(f.Total, st.Unit), SelfPct: f.SelfPct, TotalPct: f.TotalPct})
	}
	p = nil // one profile in memory at a time
	for i, name := range mg.Targets {
		tg := targetGraph{Name: name}
		path := ""
		for _, t := range m.Targets {
			if t.Name != name {
				continue
			}
			for _, pr := range t.Profiles {
				if pr.Kind == mg.Kind && pr.Path != "" {
					path = pr.Path
				}
			}
		}
		tp, err := bundle.LoadProfile(dir, path)
		if err == nil {
			// Warnings (tokio-console lints) are per target: the merge
			// would fold identical tasks of different targets into one.
			for _, w := range warnings(tp) {
				ks.Warnings = append(ks.Warnings, name+": "+w)
			}
			tg.Graph, err = graph(fmt.Sprintf("t%d-%s", i, mg.Kind), tp, flame.Options{Title: fmt.Sprintf("%s — %s", mg.Kind, name)})
		}
		if err != nil {
			tg.Error = err.Error()
		}
		ks.Targets = append(ks.Targets, tg)
	}
	return ks
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
