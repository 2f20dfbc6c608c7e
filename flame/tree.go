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
	Children []*Node // sorted by name
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
	grand    int64 // total of the selected sample type, for pruning
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
	t.maxNodes = opt.MaxNodes
	if t.maxNodes == 0 {
		t.maxNodes = DefaultMaxNodes
	}
	for _, s := range p.Sample {
		t.grand += abs(s.Value[sel])
	}
	b := newBuilder(opt)
	b.sizeFor(p)
	// Room for every node up to the bound at once: grown by doubling,
	// the arrays were copied and their pages faulted in again each time.
	room := 1
	for _, s := range p.Sample {
		room += len(s.Location)
	}
	if t.maxNodes > 0 {
		room = min(room, t.maxNodes+1024)
	}
	g := newGrowing(nt, sel, room)
	// Without idle grouping, a label frame or reversal, a sample's frames
	// go into the tree straight from the locations' caches.
	direct := !b.idle && opt.GroupBy == "" && !opt.Reverse
	for _, s := range p.Sample {
		if direct {
			g.addLocations(b, s.Location, s.Value)
		} else {
			frames := b.stack(s)
			if b.idle {
				if r := b.idleReason(); r != "" {
					frames = b.withIdle(frames, r)
					addVals(t.idleVals(nt), s.Value)
				}
			}
			g.add(frames, s.Value)
		}
		if t.maxNodes > 0 && g.live > t.maxNodes {
			t.PrunedBelow = g.prune(t.grand, t.maxNodes, t.PrunedBelow)
		}
	}
	t.Root = g.nodes(b.names)
	t.finish()
	return t, nil
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
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
	id   uint32 // the name's number in the builder (names)
	lang Lang
}

// builder turns samples into root-first frame lists, caching per location.
type builder struct {
	opt   Options
	locs  map[*profile.Location][]frame
	byID  []locFrames // the same by location ID, when IDs are small (sizeFor)
	ids   map[string]uint32
	names []string // frame names by id
	buf   []frame
	group map[string]frame
	idle  bool    // classify idle stacks (Options.Kind)
	leaf  []Frame // the last stack, leaf first, for IdleReason
	ibuf  []frame
}

func newBuilder(opt Options) *builder {
	return &builder{opt: opt, locs: map[*profile.Location][]frame{}, ids: map[string]uint32{}, group: map[string]frame{}, idle: IdleKind(opt.Kind)}
}

// locFrames is a location's frames, cached by its ID.
type locFrames struct {
	loc    *profile.Location
	frames []frame
}

// sizeFor lets the builder cache frames by location ID (a slice index,
// not a map lookup per frame of every sample) when p's IDs are dense, as
// pprof writes them.
func (b *builder) sizeFor(p *profile.Profile) {
	max := uint64(0)
	for _, l := range p.Location {
		max = maxU(max, l.ID)
	}
	if max <= uint64(4*len(p.Location)+64) {
		b.byID = make([]locFrames, max+1)
	}
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// intern numbers frame names: the tree compares children by number.
func (b *builder) intern(name string) uint32 {
	id, ok := b.ids[name]
	if !ok {
		id = uint32(len(b.names))
		b.ids[name] = id
		b.names = append(b.names, name)
	}
	return id
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
	b.ibuf = append(b.ibuf, frame{name: IdleFrame, id: b.intern(IdleFrame), lang: LangGroup}, frame{name: reason, id: b.intern(reason), lang: LangGroup})
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
		f = frame{name: name, id: b.intern(name), lang: LangGroup}
		b.group[v] = f
	}
	return f
}

// frames names a location's frames outermost first. pprof lists inlined
// functions innermost first, the last Line being the caller they were
// inlined into.
func (b *builder) frames(loc *profile.Location) []frame {
	if loc.ID < uint64(len(b.byID)) {
		if e := &b.byID[loc.ID]; e.loc == loc {
			return e.frames
		}
	}
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
		fs = append(fs, frame{name: name, id: b.intern(name), lang: classify(name, fn.Filename, mapFile)})
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
		fs = append(fs, frame{name: name, id: b.intern(name), lang: classify(name, "", mapFile)})
	}
	if loc.ID < uint64(len(b.byID)) && b.byID[loc.ID].loc == nil {
		b.byID[loc.ID] = locFrames{loc, fs}
	} else {
		b.locs[loc] = fs
	}
	return fs
}

// indexAt is the child count from which a node's children are found
// through a map; below it a scan of its children is faster and needs no
// map entry (most nodes of a deep profile have one child).
const indexAt = 16

// growing is the tree while NewTree adds samples: nodes in flat arrays
// that hold no pointers, children as lists of sibling numbers, names as
// the builder's numbers. The garbage collector has nothing to scan in it
// (with a Node each, it scanned millions of them again at every cycle),
// and a node takes 20 bytes and its values instead of over 100. Nodes
// become Nodes once the tree is done and pruned (nodes).
type growing struct {
	nt, sel int
	node    []gnode
	vals    []int64          // nt per node
	kids    map[uint64]int32 // parent<<32 | name -> child, for parents with indexAt children or more
	live    int              // nodes below the root

	// The arrays of the tree before the last prune, which the next
	// prune copies into.
	spareNode []gnode
	spareVals []int64
}

type gnode struct {
	name  uint32
	first int32 // first child, -1 if none
	next  int32 // next sibling, -1 if none
	kids  int32
	lang  Lang
}

// newGrowing returns a tree of one root, with room for room nodes.
func newGrowing(nt, sel, room int) *growing {
	g := &growing{nt: nt, sel: sel, kids: map[uint64]int32{}}
	g.node = make([]gnode, 1, room)
	g.node[0] = gnode{first: -1, next: -1, lang: LangGroup}
	g.vals = make([]int64, nt, room*nt)
	return g
}

func (g *growing) addVals(n int32, vals []int64) {
	if g.nt == 1 {
		g.vals[n] += vals[0]
		return
	}
	v := g.vals[int(n)*g.nt : int(n+1)*g.nt]
	for i, x := range vals {
		v[i] += x
	}
}

// add adds vals along frames, root first.
func (g *growing) add(frames []frame, vals []int64) {
	n := int32(0)
	g.addVals(n, vals)
	for _, f := range frames {
		n = g.child(n, f)
		g.addVals(n, vals)
	}
}

// addLocations is add of the frames of locs (leaf first, as in a sample).
func (g *growing) addLocations(b *builder, locs []*profile.Location, vals []int64) {
	n := int32(0)
	g.addVals(n, vals)
	for i := len(locs) - 1; i >= 0; i-- {
		for _, f := range b.frames(locs[i]) {
			n = g.child(n, f)
			g.addVals(n, vals)
		}
	}
}

// child finds or adds n's child named f.
func (g *growing) child(n int32, f frame) int32 {
	p := &g.node[n]
	if p.kids >= indexAt {
		if c, ok := g.kids[uint64(n)<<32|uint64(f.id)]; ok {
			return c
		}
	} else {
		for c := p.first; c >= 0; c = g.node[c].next {
			if g.node[c].name == f.id {
				return c
			}
		}
	}
	c := g.newNode(f.id, f.lang)
	g.link(n, c)
	return c
}

func (g *growing) newNode(name uint32, lang Lang) int32 {
	c := int32(len(g.node))
	g.node = append(g.node, gnode{name: name, first: -1, next: -1, lang: lang})
	if g.nt == 1 {
		g.vals = append(g.vals, 0)
	} else {
		g.vals = append(g.vals, make([]int64, g.nt)...)
	}
	g.live++
	return c
}

// link makes c a child of n.
func (g *growing) link(n, c int32) {
	p := &g.node[n]
	g.node[c].next = p.first
	p.first = c
	p.kids++
	switch {
	case p.kids == indexAt:
		for x := p.first; x >= 0; x = g.node[x].next {
			g.kids[uint64(n)<<32|uint64(g.node[x].name)] = x
		}
	case p.kids > indexAt:
		g.kids[uint64(n)<<32|uint64(g.node[c].name)] = c
	}
}

// prune copies the tree without the frames narrower than a share of the
// total grand, raising the share (from the last one, or 1e-5) until the
// copy holds at most half of maxNodes, so pruning runs O(log samples)
// times. A dropped frame's time stays in its parent, as the parent's own.
// It returns the share.
func (g *growing) prune(grand int64, maxNodes int, share float64) float64 {
	if share == 0 {
		share = 1e-5
	}
	for {
		g.copyVisible(int64(float64(grand) * share))
		if g.live <= maxNodes/2 || share >= 1 {
			return share
		}
		share *= 4
	}
}

func (g *growing) copyVisible(min int64) {
	old, oldVals := g.node, g.vals
	if cap(g.spareNode) < cap(old) {
		g.spareNode, g.spareVals = make([]gnode, 0, cap(old)), make([]int64, 0, cap(oldVals))
	}
	g.node = append(g.spareNode[:0], gnode{name: old[0].name, first: -1, next: -1, lang: old[0].lang})
	g.vals = append(g.spareVals[:0], oldVals[:g.nt]...)
	defer func() { g.spareNode, g.spareVals = old, oldVals }()
	clear(g.kids)
	g.live = 0
	var walk func(from, to int32)
	walk = func(from, to int32) {
		for k := old[from].first; k >= 0; k = old[k].next {
			kv := oldVals[int(k)*g.nt : int(k+1)*g.nt]
			if abs(kv[g.sel]) < min {
				continue // its time stays in its parent's total, as the parent's own
			}
			c := g.newNode(old[k].name, old[k].lang)
			copy(g.vals[int(c)*g.nt:], kv)
			g.link(to, c)
			walk(k, c)
		}
	}
	walk(0, 0)
}

// nodes turns the tree into Nodes named from names, the root "all";
// children stay in no order (finish sorts them).
func (g *growing) nodes(names []string) *Node {
	nodes := make([]Node, len(g.node))
	kids := make([]*Node, len(g.node)-1)
	for i := range g.node {
		gn := &g.node[i]
		n := &nodes[i]
		n.Lang = gn.lang
		if i == 0 {
			n.Name = "all"
		} else {
			n.Name = names[gn.name]
		}
		n.Total = g.vals[i*g.nt : (i+1)*g.nt : (i+1)*g.nt]
		if gn.kids > 0 {
			n.Children, kids = kids[:gn.kids:gn.kids], kids[gn.kids:]
			j := 0
			for c := gn.first; c >= 0; c = g.node[c].next {
				n.Children[j] = &nodes[c]
				j++
			}
		}
	}
	return &nodes[0]
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

// finish sorts children by name and counts nodes.
func (t *Tree) finish() {
	t.Nodes, t.MaxDepth = 0, 0
	var walk func(n *Node, depth int)
	walk = func(n *Node, depth int) {
		t.Nodes++
		if depth > t.MaxDepth {
			t.MaxDepth = depth
		}
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
