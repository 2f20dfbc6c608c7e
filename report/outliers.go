package report

import (
	"fmt"
	"html/template"
	"math"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/flame"
	"github.com/profcap/profcap/internal/pprofutil"
)

// Outliers: each instance of a role against the other instances of that
// role, over the same window. On-CPU time is compared by the first frame
// of user code it ran for; waiting kinds (wall clock, off-CPU, block,
// await points, async idle time) by the code that waits (attr.go), idle
// stacks left out. Distances between distributions estimated from a few
// dozen samples are mostly noise (two identical orchestrators with 26
// samples each differed by 70 points of total variation), so every row
// carries its sample count, the distance sampling alone gives at that
// count, and a permutation test (stats.go); only an instance beyond both
// is said to differ.

// An outlier row compares one instance with its role.
type outlier struct {
	Target   string
	Samples  int     // counts tested
	Slots    int     // the instance's time slots drawn as blocks; 0: counts drawn one by one
	Distance float64 // points
	Noise    float64 // points
	Score    float64 // Distance − Noise, points, at least 0
	P        float64
	Differs  bool
	// PairDiffers: the role has two instances and they differ from each
	// other beyond noise. Which one is off needs a third, so neither is
	// said to differ.
	PairDiffers bool
	TooFew      bool   // too few samples to compare
	Function    string // the function whose share differs most
	Share       float64
	Base        float64
	Graph       template.HTML
	Error       string
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

// Outlier thresholds: an instance differs when its permutation p-value is
// under differP (no more than two of 1,999 random sets of its size were as
// far from the rest) and its distance exceeds the noise by minScore
// points: with thousands of samples a test finds differences too small to
// matter.
const (
	differP  = 0.002
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
		if a.PairDiffers != b.PairDiffers {
			return a.PairDiffers
		}
		return a.Score > b.Score
	})
	return out
}

// instanceObs is one instance's observations.
type instanceObs struct {
	name string
	p    *profile.Profile
	obs  []obs
}

// keys interns the keys of one group.
type keys struct {
	ids   map[string]int
	names []string
}

func (k *keys) id(name string) int {
	if i, ok := k.ids[name]; ok {
		return i
	}
	k.ids[name] = len(k.names)
	k.names = append(k.names, name)
	return len(k.names) - 1
}

func outlierGroupFor(dir, role string, kind bundle.Kind, sampleType string, members []*bundle.Target, graphs bool) outlierGroup {
	g := outlierGroup{Role: role, Kind: kind, Threshold: differP}
	switch {
	case kind == bundle.CPU:
		g.Basis = "on-CPU time by the first frame of user code: the runtime, libraries and kernel it calls count as its own; a profiler's stacks and the Go runtime's own threads left out"
	case kind == bundle.Async:
		g.Basis = "idle (waiting) time by task"
	default:
		g.Basis = "waiting time by the code that waits, idle left out"
	}
	ks := &keys{ids: map[string]int{}}
	var insts []instanceObs
	for _, t := range members {
		pr := t.Profile(kind)
		if pr == nil || pr.Path == "" {
			continue
		}
		p, err := bundle.LoadProfile(dir, pr.Path)
		if err != nil {
			continue
		}
		o, err := observations(kind, sampleType, p, ks, seedOf(role, string(kind), t.Name))
		if err != nil || len(o) == 0 {
			continue
		}
		insts = append(insts, instanceObs{name: t.Name, p: p, obs: o})
	}
	if len(insts) < 2 {
		return g
	}
	all := make([][]obs, len(insts))
	for i := range insts {
		all[i] = insts[i].obs
	}
	peers := peerSets(all, len(ks.names))
	for i, in := range insts {
		var ps [][]obs
		for _, j := range peers[i] {
			ps = append(ps, all[j])
		}
		f := compare(in.obs, ps, len(ks.names), seedOf(role, string(kind), in.name, "perm"))
		row := outlier{Target: in.name, Samples: f.N, Slots: f.Blocks, Distance: 100 * f.Distance, Noise: 100 * f.Noise, P: f.P,
			Share: f.Share, Base: f.Base}
		if f.Worst >= 0 {
			row.Function = ks.names[f.Worst]
		}
		row.Score = math.Max(0, row.Distance-row.Noise)
		beyond := f.P < g.Threshold && row.Score >= minScore
		row.Differs = beyond && len(insts) > 2
		row.PairDiffers = beyond && len(insts) == 2
		row.TooFew = f.N < minObs || f.Cells < 2
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
		if a.PairDiffers != b.PairDiffers {
			return a.PairDiffers
		}
		if a.Score != b.Score {
			return a.Score > b.Score
		}
		return a.P < b.P
	})
	return g
}

// goRuntimeOnly reports whether a stack is the Go runtime's alone: every
// frame Go's runtime (or the kernel under it), none of user code or the
// standard library above it.
func goRuntimeOnly(fs []flame.Frame) bool {
	goFrames := 0
	for _, f := range fs {
		switch {
		case f.Lang == flame.LangKernel:
		case strings.HasPrefix(f.Name, "runtime.") || strings.HasPrefix(f.Name, "internal/runtime/"):
			goFrames++
		default:
			return false
		}
	}
	return goFrames > 0
}

// minObs is the fewest observations an instance needs for a comparison
// worth reading; fewer are said to be too few.
const minObs = 20

// observations are a profile's observations for the outlier test, keys
// interned in ks: one per on-CPU sampling tick, √c for a record of c
// wall-clock ticks, blocking events (block, mutex) or tasks (async), else
// one per recorded stack (off-CPU, await), each carrying its share of the
// record's value.
func observations(kind bundle.Kind, sampleType string, p *profile.Profile, ks *keys, seed uint64) ([]obs, error) {
	idx, err := pprofutil.SampleIndex(p, sampleType)
	if err != nil {
		if sampleType == "" {
			return nil, err
		}
		if idx, err = pprofutil.SampleIndex(p, ""); err != nil {
			return nil, err
		}
	}
	ci := -1
	if kind == bundle.CPU || kind == bundle.Wall || kind == bundle.Block || kind == bundle.Mutex {
		ci = countIndex(p)
	}
	a := newAttributor(kind)
	type rec struct {
		key int
		v   float64
		c   int64
		blk int
	}
	var recs []rec
	var total int64
	timed := hasSeconds(p)
	for _, s := range p.Sample {
		v := s.Value[idx]
		if v <= 0 {
			continue
		}
		var key string
		switch kind {
		case bundle.CPU:
			// The capture's own cost (a profiler's stack walks) and the
			// Go runtime's own threads (scheduler, GC workers: no user
			// frame at all) are left out: they vary between identical
			// instances with when a profiler or a GC cycle ran, and are
			// no instance's work (a sample of two identical demo workers
			// differed by fgprof 25% vs 11% and runtime.mstart 11% vs 1%).
			fs := a.frames(s)
			if flame.ProfilerStack(fs) {
				continue
			}
			key, _ = waiter(fs)
			if goRuntimeOnly(fs) {
				continue
			}
		case bundle.Async:
			key = a.attribute(s).Key
		default:
			at := a.attribute(s)
			if at.Idle != "" || !at.Wait {
				continue
			}
			key = at.Key
		}
		c := int64(1)
		switch {
		case ci >= 0 && s.Value[ci] > 0 && kind == bundle.CPU:
			c = s.Value[ci]
		case ci >= 0 && s.Value[ci] > 0:
			// Wall-clock ticks and blocking events of one stack are not
			// independent (a wait spans many ticks of the goroutine that
			// waits, contention comes in bursts of events), nor are they
			// one observation (a record sums the whole window): a record
			// of c counts as √c observations. On-CPU ticks of a function
			// come from many short runs and count one each.
			c = int64(math.Ceil(math.Sqrt(float64(s.Value[ci]))))
		case kind == bundle.Async && len(s.NumLabel["tasks"]) > 0 && s.NumLabel["tasks"][0] > 0:
			// Tasks of one name and location, their figures summed (and
			// interpolated at the window's edges by the collector): √c
			// too.
			c = int64(math.Ceil(math.Sqrt(float64(s.NumLabel["tasks"][0]))))
		}
		blk := -1
		if timed {
			// The finest time the sample says: its slot, else its second.
			sec, _ := sampleSeconds(s)
			blk = int(sec) * 1000
			if v := s.NumLabel[bundle.SlotLabel]; len(v) > 0 {
				blk = int(v[0])
			}
		}
		recs = append(recs, rec{ks.id(key), float64(v), c, blk})
		total += c
	}
	// Thin records of many observations so an instance has at most
	// about maxObs (randomised rounding keeps the expected count).
	scale := 1.0
	if total > maxObs {
		scale = float64(maxObs) / float64(total)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	var out []obs
	for _, r := range recs {
		n := float64(r.c) * scale
		k := int64(n)
		if rng.Float64() < n-float64(k) {
			k++
		}
		for j := int64(0); j < k; j++ {
			out = append(out, obs{key: int32(r.key), blk: int32(r.blk), v: r.v / float64(r.c)})
		}
	}
	return out, nil
}

// peerDiff is the diff flame graph of instance i against the merge of the
// others.
func peerDiff(insts []instanceObs, i int, kind bundle.Kind, sampleType string) (template.HTML, string) {
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
