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

// Outliers: each instance of a role against the other instances of that
// role, over the same window. For on-CPU time the comparison is of self
// time by the innermost user-space function; for waiting kinds (wall
// clock, off-CPU, block, await points, async idle time) of waiting time by
// the code that waits (attr.go), idle stacks left out. Distances between
// distributions estimated from a few dozen samples are mostly noise (two
// identical orchestrators with 26 samples each differ by 70 points of
// total variation), so every row carries its sample count, the distance
// expected from sampling alone, and a chi-square test (stats.go); only an
// instance beyond both is said to differ.

// An outlier row compares one instance with its role.
type outlier struct {
	Target   string
	Samples  int     // counts tested
	Distance float64 // points
	Noise    float64 // points
	Score    float64 // Distance − Noise, points, at least 0
	P        float64
	Differs  bool
	Function string // the function whose share differs most
	Share    float64
	Base     float64
	Graph    template.HTML
	Error    string
}

type outlierGroup struct {
	Role      string
	Kind      bundle.Kind
	Basis     string // what is compared, for the heading
	Rows      []outlier
	Threshold float64 // p below which an instance differs
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

// outlierKinds are compared per instance, with the sample type compared.
// Instant snapshots (heap, goroutine) say less about a window.
var outlierKinds = []struct {
	Kind       bundle.Kind
	SampleType string
}{{bundle.CPU, ""}, {bundle.Wall, ""}, {bundle.OffCPU, ""}, {bundle.Block, "delay"}, {bundle.Async, "idle"}, {bundle.Await, ""}, {bundle.Wakeup, ""}}

// Outlier thresholds: an instance differs when its chi-square p-value is
// under differP split over the role's instances (Bonferroni) and its
// distance exceeds the noise by minScore points: with thousands of samples
// a test finds differences too small to matter.
const (
	differP  = 0.001
	minScore = 10
)

// outliers builds, for every role with at least two instances and every
// compared kind, each instance against its role. graphs adds a diff flame
// graph per instance (the page has them, the summary does not need them).
func outliers(dir string, m *bundle.Manifest, graphs bool) []outlierGroup {
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
		for _, ok := range outlierKinds {
			if _, merged := m.MergedPath(ok.Kind); !merged {
				continue
			}
			if g := outlierGroupFor(dir, role, ok.Kind, ok.SampleType, members, graphs); len(g.Rows) >= 2 {
				out = append(out, g)
			}
		}
	}
	// The groups with an instance that differs first, most different first.
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Rows[0], out[j].Rows[0]
		if a.Differs != b.Differs {
			return a.Differs
		}
		return a.Score > b.Score
	})
	return out
}

// instanceCounts is one instance's distribution: counts by key.
type instanceCounts struct {
	name   string
	p      *profile.Profile
	counts map[string]float64
	n      int
}

func outlierGroupFor(dir, role string, kind bundle.Kind, sampleType string, members []*bundle.Target, graphs bool) outlierGroup {
	g := outlierGroup{Role: role, Kind: kind}
	switch {
	case kind == bundle.CPU:
		g.Basis = "self time by innermost user-space function"
	case kind == bundle.Async:
		g.Basis = "idle (waiting) time by task"
	default:
		g.Basis = "waiting time by the code that waits, idle left out"
	}
	var insts []instanceCounts
	for _, t := range members {
		pr := t.Profile(kind)
		if pr == nil || pr.Path == "" {
			continue
		}
		p, err := bundle.LoadProfile(dir, pr.Path)
		if err != nil {
			continue
		}
		c, n, err := distribution(kind, sampleType, p)
		if err != nil || n == 0 {
			continue
		}
		insts = append(insts, instanceCounts{name: t.Name, p: p, counts: c, n: n})
	}
	if len(insts) < 2 {
		return g
	}
	cs := make([]map[string]float64, len(insts))
	for i := range insts {
		cs[i] = insts[i].counts
	}
	fits := compareInstances(cs)
	g.Threshold = differP / float64(len(insts))
	for i, in := range insts {
		f := fits[i]
		row := outlier{Target: in.name, Samples: in.n, Distance: 100 * f.Distance, Noise: 100 * f.Noise, P: f.P,
			Function: f.Worst, Share: f.Share, Base: f.Base}
		row.Score = math.Max(0, row.Distance-row.Noise)
		row.Differs = f.P < g.Threshold && row.Score >= minScore
		if graphs {
			row.Graph, row.Error = peerDiff(insts, i, kind, sampleType)
		}
		g.Rows = append(g.Rows, row)
	}
	sort.SliceStable(g.Rows, func(i, j int) bool {
		a, b := g.Rows[i], g.Rows[j]
		if a.Differs != b.Differs {
			return a.Differs
		}
		if a.Score != b.Score {
			return a.Score > b.Score
		}
		return a.P < b.P
	})
	return g
}

// distribution is a profile's counts by key for the outlier test, and how
// many observations they stand for. The counts keep the profile's shares
// of value (time, bytes) by key; their total is the number of independent
// observations: sampling ticks for cpu, events for block, tasks for async,
// else the number of distinct stacks recorded (wall-clock ticks of one
// parked goroutine are not independent of each other).
func distribution(kind bundle.Kind, sampleType string, p *profile.Profile) (map[string]float64, int, error) {
	idx, err := pprofutil.SampleIndex(p, sampleType)
	if err != nil {
		if sampleType == "" {
			return nil, 0, err
		}
		if idx, err = pprofutil.SampleIndex(p, ""); err != nil {
			return nil, 0, err
		}
	}
	ci := -1
	if kind == bundle.CPU || kind == bundle.Block || kind == bundle.Mutex {
		ci = countIndex(p)
	}
	a := newAttributor(kind)
	value := map[string]float64{}
	var total float64
	var n int64
	for _, s := range p.Sample {
		v := s.Value[idx]
		if v <= 0 {
			continue
		}
		var key string
		switch kind {
		case bundle.CPU:
			key = userSpaceLeaf(a.frames(s))
		case bundle.Async:
			key = a.attribute(s).Key
		default:
			at := a.attribute(s)
			if at.Idle != "" || !at.Wait {
				continue
			}
			key = at.Key
		}
		value[key] += float64(v)
		total += float64(v)
		switch {
		case ci >= 0:
			n += s.Value[ci]
		case kind == bundle.Async && len(s.NumLabel["tasks"]) > 0:
			n += s.NumLabel["tasks"][0]
		default:
			n++
		}
	}
	if total == 0 || n == 0 {
		return nil, 0, nil
	}
	for k := range value {
		value[k] = value[k] / total * float64(n)
	}
	return value, int(n), nil
}

// userSpaceLeaf is the innermost frame that is not the kernel's.
func userSpaceLeaf(fs []flame.Frame) string {
	for _, f := range fs {
		if f.Lang != flame.LangKernel {
			return f.Name
		}
	}
	if len(fs) > 0 {
		return fs[0].Name
	}
	return "[no frames]"
}

// peerDiff is the diff flame graph of instance i against the merge of the
// others.
func peerDiff(insts []instanceCounts, i int, kind bundle.Kind, sampleType string) (template.HTML, string) {
	var m pprofutil.Merger
	for j, in := range insts {
		if j != i {
			if err := m.Add(in.p.Copy()); err != nil {
				return "", err.Error()
			}
		}
	}
	peers, err := m.Result()
	if err != nil || peers == nil {
		return "", fmt.Sprint("merging the peers: ", err)
	}
	opt := flame.Options{Title: fmt.Sprintf("%s %s vs its %d peers", insts[i].name, kind, len(insts)-1), Kind: string(kind), Icicle: true}
	if sampleType != "" {
		if _, err := pprofutil.SampleIndex(insts[i].p, sampleType); err == nil {
			opt.SampleIndex = sampleType
		}
	}
	t, err := flame.NewDiffTree(peers, insts[i].p, opt)
	if err != nil {
		return "", err.Error()
	}
	h, err := flame.Embed(fmt.Sprintf("outlier-%s-%s", kind, insts[i].name), t, opt)
	if err != nil {
		return "", err.Error()
	}
	return h, ""
}
