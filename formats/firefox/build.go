package firefox

import (
	"fmt"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/google/pprof/profile"
)

// This file builds the pprof profile from what the reader kept: one sample
// per thread and distinct stack, locations, functions and mappings shared
// across threads.

type sampleType struct {
	typ, unit string
	scale     float64 // file weight → pprof value
}

func weightSampleType(wt string) (sampleType, bool) {
	switch wt {
	case "samples", "":
		return sampleType{"samples", "count", 1}, true
	case "tracing-ms":
		return sampleType{"time", "nanoseconds", 1e6}, true
	case "bytes":
		return sampleType{"space", "bytes", 1}, true
	}
	return sampleType{}, false
}

type locKey struct {
	lib  int32
	addr int64
	name string
}

type builder struct {
	p       *parser
	prof    *profile.Profile
	funcs   map[[2]string]*profile.Function
	locs    map[locKey]*profile.Location
	maps    map[int32]*profile.Mapping
	frameLo map[*tables][]*profile.Location
	frames  int // frame references so far, against Options.MaxFrames
}

func (p *parser) build() (*profile.Profile, error) {
	wt := ""
	var skipped []string
	for _, th := range p.threads {
		if len(th.sums) == 0 {
			continue
		}
		if wt == "" {
			wt = th.weightType
		}
	}
	if wt == "" {
		wt = "samples"
	}
	st, ok := weightSampleType(wt)
	if !ok {
		return nil, &FormatError{Format: formatName, Msg: fmt.Sprintf("unknown samples.weightType %q (want samples, tracing-ms or bytes)", wt)}
	}
	cpuScale := 0.0
	switch p.meta.CPUDeltaUnits {
	case "µs", "us":
		cpuScale = 1e3
	case "ns":
		cpuScale = 1
	case "ms":
		cpuScale = 1e6
	}
	withCPU := false
	if cpuScale > 0 && wt == "samples" {
		for _, th := range p.threads {
			withCPU = withCPU || th.hasCPU && len(th.sums) > 0
		}
	}
	prof := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: st.typ, Unit: st.unit}},
		PeriodType: &profile.ValueType{Type: st.typ, Unit: st.unit},
		Period:     1,
	}
	if withCPU {
		// CPU time from threadCPUDelta rides along; the default stays the
		// weighted sample count, which is what the Firefox Profiler's call
		// tree shows.
		prof.SampleType = append(prof.SampleType, &profile.ValueType{Type: "cpu", Unit: "nanoseconds"})
		prof.DefaultSampleType = st.typ
	}
	if wt == "samples" && p.meta.Interval > 0 {
		prof.PeriodType = &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}
		prof.Period = int64(math.Round(p.meta.Interval * 1e6))
	}
	if p.meta.Product != "" {
		prof.Comments = append(prof.Comments, "product: "+p.meta.Product)
	}
	if p.meta.Version > 0 {
		prof.Comments = append(prof.Comments, fmt.Sprintf("processed Firefox Profiler format, preprocessedProfileVersion %g", p.meta.Version))
	}
	b := &builder{p: p, prof: prof, funcs: map[[2]string]*profile.Function{}, locs: map[locKey]*profile.Location{}, maps: map[int32]*profile.Mapping{}, frameLo: map[*tables][]*profile.Location{}}
	var minT, maxT float64
	haveT := false
	for _, th := range p.threads {
		if len(th.sums) == 0 {
			continue
		}
		if th.weightType != wt {
			skipped = append(skipped, fmt.Sprintf("%s (tid %s, weightType %s)", th.name, th.tid, th.weightType))
			continue
		}
		t := th.own
		if t == nil || !t.haveStack {
			t = p.shared
		}
		if t == nil || !t.haveStack {
			return nil, &FormatError{Format: formatName, Path: fmt.Sprintf("threads[%d]", th.index), Msg: "samples but no stackTable (neither in the thread nor in profile.shared)"}
		}
		if t.strings == nil {
			// v56–v59: tables per thread, strings shared.
			if th.own != nil && th.own.strings == nil && p.shared != nil {
				t.strings = p.shared.strings
			}
		}
		if err := b.thread(th, t, st, withCPU, cpuScale); err != nil {
			return nil, err
		}
		if th.haveTime {
			if !haveT || th.minT < minT {
				minT = th.minT
			}
			if !haveT || th.maxT > maxT {
				maxT = th.maxT
			}
			haveT = true
		}
	}
	if len(skipped) > 0 {
		prof.Comments = append(prof.Comments, "threads left out (another weight type): "+strings.Join(skipped, ", "))
	}
	if p.meta.StartTime > 0 {
		prof.TimeNanos = int64((p.meta.StartTime + minT) * 1e6)
	}
	if haveT {
		prof.DurationNanos = int64((maxT - minT) * 1e6)
	}
	if err := prof.CheckValid(); err != nil {
		return nil, fmt.Errorf("firefox profile: building profile: %w", err)
	}
	return prof, nil
}

func (b *builder) thread(th *thread, t *tables, st sampleType, withCPU bool, cpuScale float64) error {
	label := map[string][]string{}
	num := map[string][]int64{}
	if th.name != "" {
		label["thread"] = []string{th.name}
	}
	if th.processName != "" {
		label["process"] = []string{th.processName}
	}
	for k, v := range map[string]string{"tid": th.tid, "pid": th.pid} {
		if v == "" {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			num[k] = []int64{n}
		} else {
			label[k] = []string{v}
		}
	}
	keys := make([]int32, 0, len(th.sums))
	for s := range th.sums {
		keys = append(keys, s)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, s := range keys {
		a := th.sums[s]
		locs, err := b.stack(th, t, s)
		if err != nil {
			return err
		}
		v := []int64{int64(math.Round(a.weight * st.scale))}
		if withCPU {
			v = append(v, int64(math.Round(a.cpu*cpuScale)))
		}
		if v[0] == 0 && (len(v) == 1 || v[1] == 0) {
			continue
		}
		b.prof.Sample = append(b.prof.Sample, &profile.Sample{Location: locs, Value: v, Label: label, NumLabel: num})
	}
	return nil
}

func col32(c []int32, i int) int32 {
	if i < 0 || i >= len(c) {
		return -1
	}
	return c[i]
}

// stack returns the locations of stack s, leaf first.
func (b *builder) stack(th *thread, t *tables, s int32) ([]*profile.Location, error) {
	where := fmt.Sprintf("threads[%d] stack %d", th.index, s)
	var locs []*profile.Location
	for steps := 0; s >= 0; steps++ {
		if steps >= MaxDepth {
			return nil, &FormatError{Format: formatName, Path: where, Msg: fmt.Sprintf("stack deeper than %d frames", MaxDepth)}
		}
		if b.frames++; b.frames > b.p.opt.MaxFrames {
			return nil, &FormatError{Format: formatName, Path: where, Msg: fmt.Sprintf("the distinct stacks hold more than %d frames in all (the limit; see Options.MaxFrames)", b.p.opt.MaxFrames)}
		}
		if int(s) >= len(t.stackFrame) {
			return nil, &FormatError{Format: formatName, Path: where, Msg: fmt.Sprintf("stack index %d is outside the stackTable (%d rows)", s, len(t.stackFrame))}
		}
		loc, err := b.frame(t, t.stackFrame[s], where)
		if err != nil {
			return nil, err
		}
		locs = append(locs, loc)
		parent := col32(t.stackPrefix, int(s))
		if t.prefixIsOffset && parent > 0 {
			if parent > s {
				return nil, &FormatError{Format: formatName, Path: where, Msg: fmt.Sprintf("stackTable.prefixOffset[%d] = %d points before the table", s, parent)}
			}
			parent = s - parent
		} else if t.prefixIsOffset {
			parent = -1
		} else if parent >= s {
			// Parents come before children; anything else could loop.
			return nil, &FormatError{Format: formatName, Path: where, Msg: fmt.Sprintf("stackTable.prefix[%d] = %d does not come before its child", s, parent)}
		}
		s = parent
	}
	return locs, nil
}

func isHexName(s string) (uint64, bool) {
	if !strings.HasPrefix(s, "0x") || len(s) < 3 {
		return 0, false
	}
	v, err := strconv.ParseUint(s[2:], 16, 64)
	return v, err == nil
}

func (b *builder) frame(t *tables, f int32, where string) (*profile.Location, error) {
	cache := b.frameLo[t]
	if cache == nil {
		cache = make([]*profile.Location, len(t.frameFunc))
		b.frameLo[t] = cache
	}
	if f < 0 || int(f) >= len(t.frameFunc) {
		return nil, &FormatError{Format: formatName, Path: where, Msg: fmt.Sprintf("frame index %d is outside the frameTable (%d rows)", f, len(t.frameFunc))}
	}
	if l := cache[f]; l != nil {
		return l, nil
	}
	fn := t.frameFunc[f]
	if fn < 0 || int(fn) >= len(t.funcName) {
		return nil, &FormatError{Format: formatName, Path: where, Msg: fmt.Sprintf("frameTable.func[%d] = %d is outside the funcTable (%d rows)", f, fn, len(t.funcName))}
	}
	str := func(i int32, what string) (string, error) {
		if i < 0 {
			return "", nil
		}
		if int(i) >= len(t.strings) {
			return "", &FormatError{Format: formatName, Path: where, Msg: fmt.Sprintf("%s string index %d is outside the string array (%d strings)", what, i, len(t.strings))}
		}
		return t.strings[i], nil
	}
	name, err := str(t.funcName[fn], "function name")
	if err != nil {
		return nil, err
	}
	file, err := str(col32(t.funcFile, int(fn)), "file name")
	if err != nil {
		return nil, err
	}
	lib := col32(t.frameLib, int(f))
	if t.frameLib == nil {
		if res := col32(t.funcResource, int(fn)); res >= 0 {
			lib = col32(t.resLib, int(res))
		}
	}
	if int(lib) >= len(b.p.libs) {
		lib = -1
	}
	addr := int64(-1)
	if int(f) < len(t.frameAddr) {
		addr = t.frameAddr[f]
	}
	if hexAddr, ok := isHexName(name); ok {
		// Unsymbolicated: the name is the address. A native symbol the
		// recorder found (kernel, perf map) names it; else the
		// symbolizer; else LIB+0xADDR.
		if addr < 0 {
			addr = int64(hexAddr)
		}
		named := false
		if ns := col32(t.frameNative, int(f)); ns >= 0 {
			if n, err := str(col32(t.nativeName, int(ns)), "native symbol"); err == nil && n != "" {
				name, named = n, true
			}
		}
		if !named && lib >= 0 && b.p.opt.Symbolize != nil {
			if n, ok := b.p.opt.Symbolize(b.p.libs[lib], uint64(addr)); ok && n != "" {
				name, named = n, true
			}
		}
		if !named && lib >= 0 {
			name = libName(b.p.libs[lib]) + "+0x" + strconv.FormatUint(uint64(addr), 16)
		}
	}
	if name == "" {
		name = "[unknown]"
	}
	key := locKey{lib: lib, addr: addr, name: name}
	loc := b.locs[key]
	if loc == nil {
		fk := [2]string{name, file}
		fun := b.funcs[fk]
		if fun == nil {
			fun = &profile.Function{ID: uint64(len(b.prof.Function) + 1), Name: name, SystemName: name, Filename: file}
			b.funcs[fk] = fun
			b.prof.Function = append(b.prof.Function, fun)
		}
		loc = &profile.Location{ID: uint64(len(b.prof.Location) + 1), Line: []profile.Line{{Function: fun}}}
		if lib >= 0 {
			loc.Mapping = b.mapping(lib)
			if addr >= 0 {
				loc.Address = uint64(addr)
			}
		}
		b.locs[key] = loc
		b.prof.Location = append(b.prof.Location, loc)
	}
	cache[f] = loc
	return loc, nil
}

func libName(l Lib) string {
	if l.Name != "" {
		return l.Name
	}
	if l.Path != "" {
		return path.Base(l.Path)
	}
	return l.DebugName
}

func (b *builder) mapping(lib int32) *profile.Mapping {
	if m := b.maps[lib]; m != nil {
		return m
	}
	l := b.p.libs[lib]
	file := l.Path
	if file == "" {
		file = l.Name
	}
	m := &profile.Mapping{ID: uint64(len(b.prof.Mapping) + 1), File: file, BuildID: l.CodeID, HasFunctions: true}
	b.maps[lib] = m
	b.prof.Mapping = append(b.prof.Mapping, m)
	return m
}
