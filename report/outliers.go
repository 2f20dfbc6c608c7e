package report

import (
	"fmt"
	"html/template"
	"math"
	"regexp"
	"sort"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/flame"
	"github.com/profcap/profcap/internal/pprofutil"
)

// An outlier row compares one instance with the merge of its peers (the
// other instances of the same role) over the same window.
type outlier struct {
	Target string
	Score  float64 // half the L1 distance between self-time shares: 0 same shape, 100 nothing in common
	Grew   string  // the function whose share grew most
	GrewBy float64 // by how many percentage points
	Graph  template.HTML
	Error  string
}

type outlierGroup struct {
	Role string
	Kind bundle.Kind
	Rows []outlier
}

var instanceSuffix = regexp.MustCompile(`-\d+$`)

// roleOf is a target's role: its "role" label, else its name without a
// trailing instance number (worker-rust-2 → worker-rust).
func roleOf(t *bundle.Target) string {
	if r := t.Labels["role"]; r != "" {
		return r
	}
	return instanceSuffix.ReplaceAllString(t.Name, "")
}

// outlierKinds are compared per instance; instant snapshots (heap,
// goroutine) say less about a window and are left out to keep the page light.
var outlierKinds = map[bundle.Kind]bool{bundle.CPU: true, bundle.Wall: true, bundle.OffCPU: true, bundle.Async: true}

// outliers builds, for every role with at least two instances and every
// time kind, each instance diffed against the merge of its peers.
func outliers(dir string, m *bundle.Manifest) []outlierGroup {
	groups := map[string][]*bundle.Target{}
	var roles []string
	for _, t := range m.Targets {
		r := roleOf(t)
		if groups[r] == nil {
			roles = append(roles, r)
		}
		groups[r] = append(groups[r], t)
	}
	var out []outlierGroup
	for _, role := range roles {
		members := groups[role]
		if len(members) < 2 {
			continue
		}
		for _, mg := range m.Merged {
			if !outlierKinds[mg.Kind] {
				continue
			}
			if g := outlierGroupFor(dir, role, mg.Kind, members); len(g.Rows) >= 2 {
				out = append(out, g)
			}
		}
	}
	return out
}

func outlierGroupFor(dir, role string, kind bundle.Kind, members []*bundle.Target) outlierGroup {
	g := outlierGroup{Role: role, Kind: kind}
	type inst struct {
		name string
		p    *profile.Profile
	}
	var insts []inst
	var all *profile.Profile
	for _, t := range members {
		for _, p := range t.Profiles {
			if p.Kind != kind || p.Path == "" {
				continue
			}
			pr, err := bundle.LoadProfile(dir, p.Path)
			if err != nil {
				continue
			}
			insts = append(insts, inst{t.Name, pr})
			if all == nil {
				all = pr.Copy()
			} else if mg, err := pprofutil.Merge(all, pr); err == nil {
				all = mg
			}
		}
	}
	if len(insts) < 2 || all == nil {
		return g
	}
	idx, err := pprofutil.SampleIndex(all, "")
	if err != nil {
		return g
	}
	for _, in := range insts {
		row := outlier{Target: in.name}
		peers, err := pprofutil.Delta(in.p, all) // everyone but this instance
		if err != nil {
			row.Error = err.Error()
			g.Rows = append(g.Rows, row)
			continue
		}
		row.Score, row.Grew, row.GrewBy = distance(in.p, peers, idx)
		opt := flame.Options{Title: fmt.Sprintf("%s %s vs its %d peers", in.name, kind, len(insts)-1)}
		if t, err := flame.NewDiffTree(peers, in.p, opt); err != nil {
			row.Error = err.Error()
		} else if h, err := flame.Embed(fmt.Sprintf("outlier-%s-%s", kind, in.name), t, opt); err != nil {
			row.Error = err.Error()
		} else {
			row.Graph = h
		}
		g.Rows = append(g.Rows, row)
	}
	sort.SliceStable(g.Rows, func(i, j int) bool { return g.Rows[i].Score > g.Rows[j].Score })
	return g
}

// distance compares the self-time shares by function of a and b: half the
// L1 distance in percent (0: the same shape; 100: nothing in common), and
// the function whose share grew most in a.
func distance(a, b *profile.Profile, idx int) (score float64, grew string, by float64) {
	sa, ta := selfShares(a, idx)
	sb, tb := selfShares(b, idx)
	if ta == 0 || tb == 0 {
		return 0, "", 0
	}
	seen := map[string]bool{}
	sum := 0.0
	for f, v := range sa {
		seen[f] = true
		d := v/ta - sb[f]/tb
		sum += math.Abs(d)
		if d*100 > by {
			grew, by = f, d*100
		}
	}
	for f, v := range sb {
		if !seen[f] {
			sum += v / tb
		}
	}
	return 50 * sum, grew, by
}

func selfShares(p *profile.Profile, idx int) (map[string]float64, float64) {
	m := map[string]float64{}
	total := 0.0
	for _, s := range p.Sample {
		if idx >= len(s.Value) || len(s.Location) == 0 {
			continue
		}
		v := float64(s.Value[idx])
		total += v
		m[locationNames(s.Location[0])[0]] += v
	}
	return m, total
}
