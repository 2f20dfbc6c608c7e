// Package flame turns a pprof profile into a frame tree and renders it as an
// interactive HTML flame graph, a static SVG in the look of flamegraph.pl,
// folded stacks or a speedscope file. It knows nothing about where a profile
// came from: every input arrives as a *profile.Profile.
package flame

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/internal/pprofutil"
)

// Options control how a tree is built and rendered.
type Options struct {
	Title       string  // shown above the graph; default "Flame graph"
	SampleIndex string  // pprof sample type shown by default (e.g. "alloc_space"); default: the profile's default
	Reverse     bool    // merge stacks by leaf: the roots are the hot functions, their children their callers
	Icicle      bool    // draw the root at the top
	MinWidth    float64 // frames narrower than this many pixels are not drawn (HTML default 1, SVG default 0.1)
	GroupBy     string  // a sample label key (e.g. "target"): one root frame per value
	// Kind is the kind of profile (cpu, wall, offcpu, ...). For kinds
	// where IdleKind holds, stacks IdleReason recognises go under one
	// IdleFrame root frame, a frame per reason below it, which the HTML
	// viewer hides by default (HideIdle) and a toggle shows.
	Kind string
	// ShowIdle makes the HTML viewer show the idle frame on load; by
	// default it is hidden, and shares are of the rest.
	ShowIdle bool
	// MaxNodes bounds the tree's memory whatever the input: when a build
	// passes it, frames too narrow to be seen (below a share of the total
	// that doubles until the tree fits) are dropped, their time staying in
	// their parent. 0 means DefaultMaxNodes; -1 means no bound.
	MaxNodes int
}

// DefaultMaxNodes keeps a tree to about 300 MB at worst (measured: 833k
// nodes of a 250k-stack random profile took 523 MB of heap). A frame graph
// cannot show more: at 2,000 px, half a million frames are far below one
// pixel each.
const DefaultMaxNodes = 500_000

// ValueType is one pprof sample type.
type ValueType struct {
	Type string `json:"type"`
	Unit string `json:"unit"`
}

// Node is one frame in the tree. Total holds one value per sample type; for
// a diff tree Base holds the base profile's values on the same path.
type Node struct {
	Name     string
	Lang     Lang
	Total    []int64
	Base     []int64 // nil unless the tree is a diff
	Children []*Node // sorted by name once the tree is built

	index map[string]*Node // children by name while building
}

// Self returns the node's own value for sample type i: its total minus its children's.
func (n *Node) Self(i int) int64 {
	v := n.Total[i]
	for _, c := range n.Children {
		v -= c.Total[i]
	}
	return v
}

// BaseSelf is Self for the base values of a diff tree.
func (n *Node) BaseSelf(i int) int64 {
	if n.Base == nil {
		return 0
	}
	v := n.Base[i]
	for _, c := range n.Children {
		v -= c.Base[i]
	}
	return v
}

// Tree is a frame tree with one synthetic root.
type Tree struct {
	Root        *Node
	SampleTypes []ValueType
	Selected    int  // index into SampleTypes shown by default
	Diff        bool // Base values are set
	Title       string
	Nodes       int // number of nodes, root included
	MaxDepth    int // deepest frame below the root
	// PrunedBelow is the share of the total below which frames were
	// dropped to bound the tree (0: nothing was dropped).
	PrunedBelow float64

	// Idle holds the total of the stacks grouped under IdleFrame, one value
	// per sample type (nil when there were none).
	Idle []int64
	// ShowIdle is Options.ShowIdle.
	ShowIdle bool

	maxNodes int
	live     int   // nodes allocated since the last compaction
	grand    int64 // total of the selected sample type, for pruning

	nodeSlab []Node
	valSlab  []int64
}

// NewTree builds the frame tree of p.
func NewTree(p *profile.Profile, opt Options) (*Tree, error) {
	if p == nil {
		return nil, fmt.Errorf("no profile")
	}
	if err := p.CheckValid(); err != nil {
		return nil, fmt.Errorf("invalid profile: %w", err)
	}
	sel, err := pprofutil.SampleIndex(p, opt.SampleIndex)
	if err != nil {
		return nil, err
	}
	t := &Tree{Selected: sel, Title: opt.Title, ShowIdle: opt.ShowIdle}
	if t.Title == "" {
		t.Title = "Flame graph"
	}
	for _, st := range p.SampleType {
		t.SampleTypes = append(t.SampleTypes, ValueType{Type: st.Type, Unit: st.Unit})
	}
	nt := len(t.SampleTypes)
	t.Root = &Node{Name: "all", Lang: LangGroup, Total: make([]int64, nt)}
	t.maxNodes = opt.MaxNodes
	if t.maxNodes == 0 {
		t.maxNodes = DefaultMaxNodes
	}
	for _, s := range p.Sample {
		t.grand += abs(s.Value[sel])
	}
	b := newBuilder(opt)
	for _, s := range p.Sample {
		frames := b.stack(s)
		if b.idle {
			if r := b.idleReason(); r != "" {
				frames = b.withIdle(frames, r)
				addVals(t.idleVals(nt), s.Value)
			}
		}
		t.add(frames, s.Value, false)
		if t.maxNodes > 0 && t.live > t.maxNodes {
			t.prune()
		}
	}
	t.finish()
	return t, nil
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// prune copies the tree into new slabs without the frames narrower than a
// share of the total, raising the share until the copy holds at most half
// of maxNodes (so pruning runs O(log samples) times). The old slabs are
// left to the garbage collector.
func (t *Tree) prune() {
	share := t.PrunedBelow
	if share == 0 {
		share = 1e-5
	}
	for {
		min := int64(float64(t.grand) * share)
		t.nodeSlab, t.valSlab, t.live = nil, nil, 0
		t.Root = t.copyVisible(t.Root, min, true)
		t.PrunedBelow = share
		if t.live <= t.maxNodes/2 || share >= 1 {
			return
		}
		share *= 4
	}
}

func (t *Tree) copyVisible(n *Node, min int64, root bool) *Node {
	c := n
	if !root {
		c = t.newNode(n.Name, n.Lang)
		copy(c.Total, n.Total)
	}
	kids := n.Children
	c.Children, c.index = nil, nil
	for _, k := range kids {
		if abs(k.Total[t.Selected]) < min {
			continue // its time stays in c's total, as c's own
		}
		c.Children = append(c.Children, t.copyVisible(k, min, false))
	}
	if len(c.Children) >= indexAt {
		c.index = make(map[string]*Node, len(c.Children))
		for _, x := range c.Children {
			c.index[x.Name] = x
		}
	}
	return c
}

// NewDiffTree builds a tree in cur's shape whose nodes also carry base's
// values on the same path. Sample types are matched by type name; base must
// have the selected one.
func NewDiffTree(base, cur *profile.Profile, opt Options) (*Tree, error) {
	if base == nil {
		return nil, fmt.Errorf("no base profile")
	}
	if err := base.CheckValid(); err != nil {
		return nil, fmt.Errorf("invalid base profile: %w", err)
	}
	t, err := NewTree(cur, opt)
	if err != nil {
		return nil, err
	}
	// Map base's sample types onto cur's.
	idx := make([]int, len(t.SampleTypes))
	found := false
	for i, vt := range t.SampleTypes {
		idx[i] = -1
		for j, st := range base.SampleType {
			if st.Type == vt.Type && st.Unit == vt.Unit {
				idx[i] = j
				if i == t.Selected {
					found = true
				}
				break
			}
		}
	}
	if !found {
		sel := t.SampleTypes[t.Selected]
		return nil, fmt.Errorf("base profile has no sample type %s/%s (it has %s)", sel.Type, sel.Unit, pprofutil.TypeList(base))
	}
	t.Diff = true
	var walk func(n *Node)
	nt := len(t.SampleTypes)
	slab := make([]int64, t.Nodes*nt)
	walk = func(n *Node) {
		n.Base, slab = slab[:nt:nt], slab[nt:]
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(t.Root)
	b := newBuilder(opt)
	vals := make([]int64, len(t.SampleTypes))
	for _, s := range base.Sample {
		for i, j := range idx {
			vals[i] = 0
			if j >= 0 {
				vals[i] = s.Value[j]
			}
		}
		frames := b.stack(s)
		if b.idle {
			if r := b.idleReason(); r != "" {
				frames = b.withIdle(frames, r)
			}
		}
		t.addBase(frames, vals)
	}
	return t, nil
}

// frame is one frame of a stack.
type frame struct {
	name string
	lang Lang
}

// builder turns samples into root-first frame lists, caching per location.
type builder struct {
	opt   Options
	locs  map[*profile.Location][]frame
	buf   []frame
	group map[string]frame
	idle  bool    // classify idle stacks (Options.Kind)
	leaf  []Frame // the last stack, leaf first, for IdleReason
	ibuf  []frame
}

func newBuilder(opt Options) *builder {
	return &builder{opt: opt, locs: map[*profile.Location][]frame{}, group: map[string]frame{}, idle: IdleKind(opt.Kind)}
}

// IdleFrame names the root frame idle stacks are grouped under.
const IdleFrame = "[idle]"

// idleReason classifies the stack the last call to stack built.
func (b *builder) idleReason() string {
	b.leaf = b.leaf[:0]
	start := 0
	if b.opt.GroupBy != "" {
		start = 1
	}
	f := b.buf[start:]
	if b.opt.Reverse {
		for _, x := range f {
			b.leaf = append(b.leaf, Frame{Name: x.name, Lang: x.lang})
		}
	} else {
		for i := len(f) - 1; i >= 0; i-- {
			b.leaf = append(b.leaf, Frame{Name: f[i].name, Lang: f[i].lang})
		}
	}
	return IdleReason(b.opt.Kind, b.leaf)
}

// withIdle puts the idle frame and the reason's frame at the top of the
// stack (below a group-by frame).
func (b *builder) withIdle(frames []frame, reason string) []frame {
	b.ibuf = b.ibuf[:0]
	start := 0
	if b.opt.GroupBy != "" {
		start = 1
		b.ibuf = append(b.ibuf, frames[0])
	}
	b.ibuf = append(b.ibuf, frame{name: IdleFrame, lang: LangGroup}, frame{name: reason, lang: LangGroup})
	b.ibuf = append(b.ibuf, frames[start:]...)
	return b.ibuf
}

// Stacks names the frames of samples as trees do, for callers that
// aggregate a profile themselves (report's top tables and summaries).
type Stacks struct {
	b   *builder
	out []Frame
}

// NewStacks returns a namer that caches names per location.
func NewStacks() *Stacks { return &Stacks{b: newBuilder(Options{})} }

// Leaf returns s's frames leaf first (inlined functions innermost first),
// named as in a tree. The slice is reused by the next call.
func (st *Stacks) Leaf(s *profile.Sample) []Frame {
	st.out = st.out[:0]
	for _, loc := range s.Location {
		fs := st.b.frames(loc)
		for i := len(fs) - 1; i >= 0; i-- {
			st.out = append(st.out, Frame{Name: fs[i].name, Lang: fs[i].lang})
		}
	}
	return st.out
}

// stack returns s's frames root first (leaf first with Reverse). The slice
// is reused by the next call.
func (b *builder) stack(s *profile.Sample) []frame {
	b.buf = b.buf[:0]
	if b.opt.GroupBy != "" {
		b.buf = append(b.buf, b.groupFrame(s))
	}
	start := len(b.buf)
	for i := len(s.Location) - 1; i >= 0; i-- {
		b.buf = append(b.buf, b.frames(s.Location[i])...)
	}
	if b.opt.Reverse {
		f := b.buf[start:]
		for i, j := 0, len(f)-1; i < j; i, j = i+1, j-1 {
			f[i], f[j] = f[j], f[i]
		}
	}
	return b.buf
}

func (b *builder) groupFrame(s *profile.Sample) frame {
	var v string
	if vs := s.Label[b.opt.GroupBy]; len(vs) > 0 {
		v = vs[0]
	} else if ns := s.NumLabel[b.opt.GroupBy]; len(ns) > 0 {
		v = strconv.FormatInt(ns[0], 10)
	}
	f, ok := b.group[v]
	if !ok {
		name := b.opt.GroupBy + "=" + v
		if v == "" {
			name = "(no " + b.opt.GroupBy + ")"
		}
		f = frame{name: name, lang: LangGroup}
		b.group[v] = f
	}
	return f
}

// frames names a location's frames outermost first. pprof lists inlined
// functions innermost first, the last Line being the caller they were
// inlined into.
func (b *builder) frames(loc *profile.Location) []frame {
	if fs, ok := b.locs[loc]; ok {
		return fs
	}
	var fs []frame
	var mapFile string
	if loc.Mapping != nil {
		mapFile = loc.Mapping.File
	}
	for i := len(loc.Line) - 1; i >= 0; i-- {
		fn := loc.Line[i].Function
		if fn == nil || fn.Name == "" && fn.SystemName == "" {
			continue
		}
		name := fn.Name
		if name == "" {
			name = fn.SystemName
		}
		fs = append(fs, frame{name: name, lang: classify(name, fn.Filename, mapFile)})
	}
	if len(fs) == 0 {
		name := "[unknown]"
		if loc.Mapping != nil && loc.Mapping.File != "" {
			off := loc.Address
			if loc.Address >= loc.Mapping.Start {
				off = loc.Address - loc.Mapping.Start + loc.Mapping.Offset
			}
			name = path.Base(loc.Mapping.File) + "+0x" + strconv.FormatUint(off, 16)
		} else if loc.Address != 0 {
			name = "0x" + strconv.FormatUint(loc.Address, 16)
		}
		fs = append(fs, frame{name: name, lang: classify(name, "", mapFile)})
	}
	b.locs[loc] = fs
	return fs
}

// indexAt is the child count from which a node indexes its children by
// name; below it a linear scan is faster and saves a map per node (most
// nodes of a deep profile have one child).
const indexAt = 16

func (t *Tree) add(frames []frame, vals []int64, _ bool) {
	n := t.Root
	addVals(n.Total, vals)
	for _, f := range frames {
		c := t.child(n, f)
		addVals(c.Total, vals)
		n = c
	}
}

// child finds or adds n's child named f.name.
func (t *Tree) child(n *Node, f frame) *Node {
	if n.index != nil {
		if c := n.index[f.name]; c != nil {
			return c
		}
	} else {
		for _, c := range n.Children {
			if c.Name == f.name {
				return c
			}
		}
	}
	c := t.newNode(f.name, f.lang)
	n.Children = append(n.Children, c)
	if n.index != nil {
		n.index[f.name] = c
	} else if len(n.Children) == indexAt {
		n.index = make(map[string]*Node, 2*indexAt)
		for _, x := range n.Children {
			n.index[x.Name] = x
		}
	}
	return c
}

// newNode allocates nodes and their values from slabs: a profile with
// 100,000 distinct stacks has millions of nodes, and one allocation each
// would let the garbage collector dominate.
func (t *Tree) newNode(name string, lang Lang) *Node {
	if len(t.nodeSlab) == 0 {
		t.nodeSlab = make([]Node, 4096)
	}
	c := &t.nodeSlab[0]
	t.nodeSlab = t.nodeSlab[1:]
	t.live++
	nt := len(t.SampleTypes)
	if len(t.valSlab) < nt {
		t.valSlab = make([]int64, 4096*nt)
	}
	c.Name, c.Lang, c.Total = name, lang, t.valSlab[:nt:nt]
	t.valSlab = t.valSlab[nt:]
	return c
}

// addBase adds base values along frames as far as the path exists in the
// tree: a frame that vanished leaves its value in its nearest existing
// ancestor, whose share then shrinks.
func (t *Tree) addBase(frames []frame, vals []int64) {
	n := t.Root
	addVals(n.Base, vals)
	for _, f := range frames {
		c := findChild(n, f.name)
		if c == nil {
			return
		}
		addVals(c.Base, vals)
		n = c
	}
}

func findChild(n *Node, name string) *Node {
	i := sort.Search(len(n.Children), func(i int) bool { return n.Children[i].Name >= name })
	if i < len(n.Children) && n.Children[i].Name == name {
		return n.Children[i]
	}
	return nil
}

func addVals(dst, src []int64) {
	for i, v := range src {
		dst[i] += v
	}
}

// finish sorts children by name, drops the build indexes and counts nodes.
func (t *Tree) finish() {
	t.nodeSlab, t.valSlab = nil, nil
	t.Nodes, t.MaxDepth = 0, 0
	var walk func(n *Node, depth int)
	walk = func(n *Node, depth int) {
		t.Nodes++
		if depth > t.MaxDepth {
			t.MaxDepth = depth
		}
		n.index = nil
		if len(n.Children) > 1 {
			slices.SortFunc(n.Children, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })
		}
		for _, c := range n.Children {
			walk(c, depth+1)
		}
	}
	walk(t.Root, 0)
}

// Total returns the root's value for sample type i.
func (t *Tree) Total(i int) int64 { return t.Root.Total[i] }

func (t *Tree) idleVals(nt int) []int64 {
	if t.Idle == nil {
		t.Idle = make([]int64, nt)
	}
	return t.Idle
}
