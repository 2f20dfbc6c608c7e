// Package firefox reads the processed Firefox Profiler format: the JSON that
// `samply record` writes (plain, or gzipped when the name ends in .gz) and
// that profiler.firefox.com loads. Every thread becomes samples of one
// *profile.Profile, labelled with the thread and process.
//
// The format changed between versions 41 and 70 (firefox-devtools/profiler
// src/profile-logic/processed-profile-versioning.js at df31314e). The reader
// detects each change by its feature, never by the version number:
//
//   - stringArray per thread (up to v55) or in profile.shared (v56+);
//   - stackTable, frameTable, funcTable, resourceTable and nativeSymbols per
//     thread (up to v59) or in profile.shared (v60+);
//   - stackTable.prefix (parent index or null) or stackTable.prefixOffset
//     (0 for a root, else parent = index − offset; v66+);
//   - samples.time (ms) or samples.timeDeltas (v50+; cumulative);
//   - the library of a frame from resourceTable.lib or frameTable.lib (v70).
//
// The JSON is read as a token stream: tables are kept as compact columns,
// samples are summed per stack as they arrive, and only the stack column of
// the thread being read is buffered (4 bytes a sample, at most
// MaxSamplesPerThread), so memory does not grow with the length of a
// recording beyond one thread's stack column.
package firefox

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/pprof/profile"
	"github.com/profcap/profcap/formats/internal/jsonutil"
)

// Lib is one entry of the profile's libs list.
type Lib struct {
	Name       string `json:"name"`
	Path       string `json:"path"`
	DebugName  string `json:"debugName"`
	DebugPath  string `json:"debugPath"`
	BreakpadID string `json:"breakpadId"`
	CodeID     string `json:"codeId"` // the ELF GNU build-id in hex (Linux), or the Mach-O UUID
	Arch       string `json:"arch"`
}

// Options control Parse. The zero value is usable.
type Options struct {
	// Symbolize names a frame the file leaves unsymbolicated (its function
	// name is "0x…"): addr is relative to the library, as samply stores it.
	// It returns false when it cannot; the frame is then named
	// "LIB+0xADDR".
	Symbolize func(lib Lib, addr uint64) (name string, ok bool)
	// MaxSamplesPerThread bounds one thread's sample count (and any table's
	// row count); 0 means DefaultMaxSamples.
	MaxSamplesPerThread int
	// MaxFrames bounds the frames of all distinct sampled stacks together
	// (what the pprof profile holds); 0 means DefaultMaxFrames.
	MaxFrames int
}

// DefaultMaxFrames is 64 Mi frame references (512 MiB of pointers): far
// above real recordings (100,000 distinct stacks of depth 100 are 10 Mi),
// low enough that a hostile file of deep chains fails instead of eating the
// machine.
const DefaultMaxFrames = 1 << 26

// MaxDepth is the deepest stack read. Deeper chains are an error: real
// stacks stop well before (thread stacks are finite), hostile ones would
// make every sample cost its depth.
const MaxDepth = 1 << 13

// DefaultMaxSamples is 16 Mi samples: 4.6 hours of one thread at samply's
// default 1 kHz, a 64 MiB stack column while the thread is read.
const DefaultMaxSamples = 1 << 24

// FormatError is a problem with the content of the file, with the byte
// offset where it was found and the JSON path it concerns.
type FormatError = jsonutil.FormatError

// formatName starts every error message of this reader.
const formatName = "firefox profile"

// ParseFile reads the processed profile in path (gzipped or not).
func ParseFile(name string, opt Options) (*profile.Profile, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := Parse(f, opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// Parse reads a processed Firefox Profiler profile from r. Gzipped input is
// recognised by its magic bytes.
func Parse(r io.Reader, opt Options) (*profile.Profile, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if head, _ := br.Peek(2); bytes.Equal(head, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("firefox profile: reading gzip: %w", err)
		}
		defer zr.Close()
		r = &gzipReader{zr}
	} else {
		r = br
	}
	if opt.MaxSamplesPerThread <= 0 {
		opt.MaxSamplesPerThread = DefaultMaxSamples
	}
	if opt.MaxFrames <= 0 {
		opt.MaxFrames = DefaultMaxFrames
	}
	p := &parser{Walker: newWalker(r), opt: opt}
	if err := p.top(); err != nil {
		var fe *FormatError
		if errors.As(err, &fe) {
			return nil, err
		}
		var ge *gzipError
		if errors.As(err, &ge) {
			return nil, fmt.Errorf("firefox profile: reading gzip after byte %d: %w", p.D.InputOffset(), ge.err)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, &FormatError{Format: formatName, Offset: p.D.InputOffset(), Path: p.Path, Msg: "input ends early (truncated file?)"}
		}
		var se *jsontext.SyntacticError
		if errors.As(err, &se) {
			return nil, &FormatError{Format: formatName, Offset: se.ByteOffset, Path: p.Path, Msg: "invalid JSON: " + se.Err.Error()}
		}
		return nil, fmt.Errorf("firefox profile: %w", err)
	}
	return p.build()
}

// gzipReader marks decompression errors so they are not taken for
// truncated JSON.
type gzipReader struct{ r io.Reader }

type gzipError struct{ err error }

func (e *gzipError) Error() string { return e.err.Error() }

func (g *gzipReader) Read(b []byte) (int, error) {
	n, err := g.r.Read(b)
	if err != nil && err != io.EOF {
		err = &gzipError{err}
	}
	return n, err
}

type meta struct {
	Interval      float64 `json:"interval"`
	StartTime     float64 `json:"startTime"`
	Version       float64 `json:"preprocessedProfileVersion"`
	Symbolicated  *bool   `json:"symbolicated"`
	Product       string  `json:"product"`
	CPUDeltaUnits string  `json:"-"`
}

// tables holds the columns the importer uses. A nil column was absent.
type tables struct {
	strings []string

	stackFrame, stackPrefix []int32
	prefixIsOffset          bool
	haveStack               bool

	frameFunc, frameLib, frameNative []int32
	frameAddr                        []int64
	haveFrame                        bool

	funcName, funcResource, funcFile []int32
	haveFunc                         bool

	resLib, resName []int32

	nativeName []int32
}

type agg struct {
	weight, cpu float64
}

type thread struct {
	index             int
	name, processName string
	tid, pid          string
	own               *tables // per-thread tables (up to v59), or nil
	sums              map[int32]*agg
	weightType        string
	hasCPU            bool
	minT, maxT        float64
	haveTime          bool
	samples           int
}

type parser struct {
	jsonutil.Walker
	opt     Options
	meta    meta
	sawMeta bool
	libs    []Lib
	shared  *tables
	threads []*thread
}

// number reads a number (null gives def).
func (p *parser) number(def float64) (float64, error) {
	f, kind, err := p.ReadNumber()
	if err != nil {
		return 0, err
	}
	switch kind {
	case '0':
		return f, nil
	case 'n':
		return def, nil
	}
	return 0, p.Errf("want a number, got %s", jsonutil.KindName(kind))
}

// index reads a table index: a non-negative integer, or null (-1).
func (p *parser) index() (int32, error) {
	f, kind, err := p.ReadNumber()
	if err != nil {
		return 0, err
	}
	switch kind {
	case 'n':
		return -1, nil
	case '0':
		if f == -1 {
			return -1, nil
		}
		if f < 0 || f != math.Trunc(f) || f >= math.MaxInt32 {
			return 0, p.Errf("want an index, got %v", f)
		}
		return int32(f), nil
	}
	return 0, p.Errf("want an index or null, got %s", jsonutil.KindName(kind))
}

// str reads a string or null ("").
func (p *parser) str() (string, error) {
	tok, err := p.D.ReadToken()
	if err != nil {
		return "", err
	}
	switch tok.Kind() {
	case '"':
		return tok.String(), nil
	case 'n':
		return "", nil
	case '0':
		return tok.String(), nil // tid and pid are numbers in old files
	}
	return "", p.Errf("want a string, got %s", jsonutil.KindName(tok.Kind()))
}

func (p *parser) indexColumn() ([]int32, error) {
	if p.D.PeekKind() == 'n' {
		_, err := p.D.ReadToken()
		return nil, err
	}
	col := []int32{}
	err := p.Array(func(i int) error {
		if i >= p.opt.MaxSamplesPerThread {
			return p.Errf("more than %d rows (the limit; see Options.MaxSamplesPerThread)", p.opt.MaxSamplesPerThread)
		}
		v, err := p.index()
		col = append(col, v)
		return err
	})
	return col, err
}

func (p *parser) addrColumn() ([]int64, error) {
	col := []int64{}
	err := p.Array(func(i int) error {
		if i >= p.opt.MaxSamplesPerThread {
			return p.Errf("more than %d rows", p.opt.MaxSamplesPerThread)
		}
		v, err := p.number(-1)
		if v < -1 || v > 1<<63-1024 || v != math.Trunc(v) {
			return p.Errf("bad address %v", v)
		}
		col = append(col, int64(v))
		return err
	})
	return col, err
}

func (p *parser) stringColumn() ([]string, error) {
	col := []string{}
	err := p.Array(func(i int) error {
		if i >= p.opt.MaxSamplesPerThread {
			return p.Errf("more than %d strings", p.opt.MaxSamplesPerThread)
		}
		s, err := p.str()
		col = append(col, s)
		return err
	})
	return col, err
}

func (p *parser) top() error {
	defer p.At("")()
	err := p.Object(func(name string) error {
		switch name {
		case "meta":
			defer p.At("meta")()
			return p.readMeta()
		case "libs":
			defer p.At("libs")()
			v, err := p.D.ReadValue()
			if err != nil {
				return err
			}
			if err := unmarshalLibs(v, &p.libs); err != nil {
				return p.Errf("%v", err)
			}
			return nil
		case "shared":
			defer p.At("shared")()
			p.shared = &tables{}
			return p.readTables(p.shared, "shared")
		case "threads":
			return p.Array(func(i int) error {
				defer p.At(fmt.Sprintf("threads[%d]", i))()
				return p.readThread(i)
			})
		}
		return p.D.SkipValue()
	})
	if err != nil {
		return err
	}
	if p.D.PeekKind() != 0 {
		return p.Errf("data after the profile object")
	}
	if _, err := p.D.ReadToken(); err != io.EOF {
		if err == nil {
			return p.Errf("data after the profile object")
		}
		return err
	}
	if !p.sawMeta {
		return p.Errf("no \"meta\" object: not a processed Firefox Profiler profile")
	}
	return nil
}

func (p *parser) readMeta() error {
	p.sawMeta = true
	return p.Object(func(name string) error {
		var err error
		switch name {
		case "interval":
			p.meta.Interval, err = p.number(0)
		case "startTime":
			p.meta.StartTime, err = p.number(0)
		case "preprocessedProfileVersion":
			p.meta.Version, err = p.number(0)
		case "product":
			p.meta.Product, err = p.str()
		case "symbolicated":
			tok, e := p.D.ReadToken()
			if e != nil {
				return e
			}
			b := tok.Kind() == 't'
			p.meta.Symbolicated = &b
		case "sampleUnits":
			return p.Object(func(name string) error {
				if name != "threadCPUDelta" {
					return p.D.SkipValue()
				}
				p.meta.CPUDeltaUnits, err = p.str()
				return err
			})
		default:
			return p.D.SkipValue()
		}
		return err
	})
}

// readTables reads the table members of obj (a thread or profile.shared);
// members that are not tables go to other.
func (p *parser) readTables(t *tables, where string) error {
	return p.Object(func(name string) error {
		return p.tableMember(t, name, where, nil)
	})
}

// tableMember reads one member of an object holding tables. It returns
// errNotTable (without consuming) for other members when other is nil.
func (p *parser) tableMember(t *tables, name, where string, other func(string) error) error {
	defer p.At(where + "." + name)()
	switch name {
	case "stringArray", "stringTable":
		if p.D.PeekKind() != '[' {
			// The Gecko format's stringTable is an object; not ours.
			if name == "stringTable" && other != nil {
				return other(name)
			}
		}
		s, err := p.stringColumn()
		t.strings = s
		return err
	case "stackTable":
		t.haveStack = true
		return p.columns(map[string]*[]int32{"frame": &t.stackFrame, "prefix": &t.stackPrefix, "prefixOffset": &t.stackPrefix}, func(name string) error {
			if name == "prefixOffset" {
				t.prefixIsOffset = true
			}
			return nil
		}, nil)
	case "frameTable":
		t.haveFrame = true
		return p.columns(map[string]*[]int32{"func": &t.frameFunc, "lib": &t.frameLib, "nativeSymbol": &t.frameNative}, nil, map[string]*[]int64{"address": &t.frameAddr})
	case "funcTable":
		t.haveFunc = true
		return p.columns(map[string]*[]int32{"name": &t.funcName, "resource": &t.funcResource, "fileName": &t.funcFile, "source": &t.funcFile}, nil, nil)
	case "resourceTable":
		return p.columns(map[string]*[]int32{"lib": &t.resLib, "name": &t.resName}, nil, nil)
	case "nativeSymbols":
		return p.columns(map[string]*[]int32{"name": &t.nativeName}, nil, nil)
	}
	if other != nil {
		return other(name)
	}
	return p.D.SkipValue()
}

// columns reads a columnar table {length, col: [...]} keeping the wanted
// index columns (and address columns).
func (p *parser) columns(want map[string]*[]int32, seen func(string) error, addrs map[string]*[]int64) error {
	base := p.Path
	return p.Object(func(name string) error {
		defer p.At(base + "." + name)()
		if dst, ok := want[name]; ok {
			if seen != nil {
				if err := seen(name); err != nil {
					return err
				}
			}
			col, err := p.indexColumn()
			*dst = col
			return err
		}
		if dst, ok := addrs[name]; ok {
			col, err := p.addrColumn()
			*dst = col
			return err
		}
		return p.D.SkipValue()
	})
}

func (p *parser) readThread(i int) error {
	th := &thread{index: i, sums: map[int32]*agg{}, weightType: "samples"}
	p.threads = append(p.threads, th)
	own := &tables{}
	base := p.Path
	err := p.Object(func(name string) error {
		return p.tableMember(own, name, base, func(name string) error {
			defer p.At(base + "." + name)()
			var err error
			switch name {
			case "name":
				th.name, err = p.str()
			case "processName":
				th.processName, err = p.str()
			case "tid":
				th.tid, err = p.str()
			case "pid":
				th.pid, err = p.str()
			case "samples":
				return p.readSamples(th)
			default:
				return p.D.SkipValue()
			}
			return err
		})
	})
	if err != nil {
		return err
	}
	if own.haveStack || own.haveFrame || own.haveFunc || own.strings != nil {
		th.own = own
	}
	return nil
}

// readSamples sums the thread's samples per stack. The stack column is
// buffered; weight and CPU-delta columns that come after it are summed as
// they stream, ones that come before it are buffered until it arrives.
func (p *parser) readSamples(th *thread) error {
	var (
		stacks        jsonutil.Int32s
		haveStacks    bool
		weights, cpus []float64 // buffered before the stack column was seen
		weightCount   = -1      // length of the weight column, -1: none
		cpuCount      = -1
		length        = -1
		lastT         float64
	)
	base := p.Path
	add := func(i int, w, c float64, isCPU bool) {
		s := stacks.At(i)
		if s < 0 {
			return
		}
		a := th.sums[s]
		if a == nil {
			a = &agg{}
			th.sums[s] = a
		}
		if isCPU {
			a.cpu += c
		} else {
			a.weight += w
		}
	}
	seeTime := func(t float64) {
		if !th.haveTime || t < th.minT {
			th.minT = t
		}
		if !th.haveTime || t > th.maxT {
			th.maxT = t
		}
		th.haveTime = true
	}
	// valueColumn streams a numeric column into add (or a buffer).
	valueColumn := func(isCPU bool, buf *[]float64, count *int) error {
		if p.D.PeekKind() == 'n' {
			_, err := p.D.ReadToken()
			return err
		}
		n := 0
		err := p.Array(func(i int) error {
			def := 1.0
			if isCPU {
				def = 0
			}
			v, err := p.number(def)
			if err != nil {
				return err
			}
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				return p.Errf("value %d is %v, want a non-negative number", i, v)
			}
			if isCPU && i == 0 {
				v = 0 // CPU used before the first sample: not part of it
			}
			n++
			switch {
			case haveStacks:
				if i >= stacks.Len() {
					return p.Errf("has more values than the stack column (%d)", stacks.Len())
				}
				add(i, v, v, isCPU)
			case i >= p.opt.MaxSamplesPerThread:
				return p.Errf("more than %d samples (the limit; see Options.MaxSamplesPerThread)", p.opt.MaxSamplesPerThread)
			default:
				*buf = append(*buf, v)
			}
			return nil
		})
		*count = n
		return err
	}
	err := p.Object(func(name string) error {
		defer p.At(base + "." + name)()
		switch name {
		case "length":
			v, err := p.number(-1)
			length = int(v)
			return err
		case "stack":
			if err := p.Array(func(i int) error {
				if i >= p.opt.MaxSamplesPerThread {
					return p.Errf("more than %d samples (the limit; see Options.MaxSamplesPerThread)", p.opt.MaxSamplesPerThread)
				}
				v, err := p.index()
				stacks.Add(v)
				return err
			}); err != nil {
				return err
			}
			haveStacks = true
			for i, w := range weights {
				add(i, w, 0, false)
			}
			for i, c := range cpus {
				add(i, 0, c, true)
			}
			if weightCount >= 0 && weightCount != stacks.Len() || cpuCount >= 0 && cpuCount != stacks.Len() {
				return p.Errf("has %d entries, but the weight or threadCPUDelta column has %d", stacks.Len(), max(weightCount, cpuCount))
			}
			weights, cpus = nil, nil
			return nil
		case "weight":
			return valueColumn(false, &weights, &weightCount)
		case "threadCPUDelta":
			th.hasCPU = true
			return valueColumn(true, &cpus, &cpuCount)
		case "weightType":
			s, err := p.str()
			if s != "" {
				th.weightType = s
			}
			return err
		case "schema", "data":
			return p.Errf("this is the Gecko profile format (samples.schema/data), not the processed format: open it in the Firefox Profiler and save it again")
		case "time":
			// Only the span is used (DurationNanos): samples are in time
			// order, so the first and last values are parsed, the rest
			// only checked to be numbers.
			var last []byte
			err := p.Array(func(i int) error {
				v, err := p.D.ReadValue()
				if err != nil {
					return err
				}
				switch v.Kind() {
				case '0':
					if i == 0 {
						if t, ok := jsonutil.ParseNumber(v); ok {
							seeTime(t)
						}
					}
					last = append(last[:0], v...)
				case 'n':
				default:
					return p.Errf("value %d: want a number, got %s", i, jsonutil.KindName(v.Kind()))
				}
				return nil
			})
			if t, ok := jsonutil.ParseNumber(last); ok && len(last) > 0 {
				seeTime(t)
			}
			return err
		case "timeDeltas":
			return p.Array(func(i int) error {
				d, err := p.number(0)
				lastT += d
				seeTime(lastT)
				return err
			})
		}
		return p.D.SkipValue()
	})
	if err != nil {
		return err
	}
	defer p.At(base + ".samples")()
	if !haveStacks {
		if length > 0 || weightCount > 0 {
			return p.Errf("no stack column")
		}
		return nil
	}
	n := stacks.Len()
	if length >= 0 && length != n {
		return p.Errf("length is %d but the stack column has %d entries", length, n)
	}
	if weightCount >= 0 && weightCount != n {
		return p.Errf("the weight column has %d entries, the stack column %d", weightCount, n)
	}
	if cpuCount >= 0 && cpuCount != n {
		return p.Errf("the threadCPUDelta column has %d entries, the stack column %d", cpuCount, n)
	}
	if weightCount < 0 {
		for i := 0; i < n; i++ {
			add(i, 1, 0, false)
		}
	}
	if cpuCount < 0 {
		th.hasCPU = false
	}
	th.samples = n
	return nil
}

func unmarshalLibs(v jsontext.Value, dst *[]Lib) error {
	if err := json.Unmarshal(v, dst); err != nil {
		return fmt.Errorf("want a list of libraries: %v", err)
	}
	return nil
}

// ---- building the profile ----

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

func newWalker(r io.Reader) jsonutil.Walker {
	return jsonutil.Walker{D: jsontext.NewDecoder(r), NewError: func(off int64, path, msg string) error {
		return &FormatError{Format: formatName, Offset: off, Path: path, Msg: msg}
	}}
}
