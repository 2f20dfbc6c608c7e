// Package speedscope reads speedscope's JSON file format
// (jlfwong/speedscope src/lib/file-format-spec.ts at 3613918d) into one
// *profile.Profile: "sampled" profiles (stacks of frame indices, root first,
// with weights) and "evented" profiles (open/close events, turned into
// stacks weighted by the time spent in them). Each of a file's profiles
// becomes samples labelled profile=NAME.
//
// A file is recognised by its "$schema" only, as speedscope itself does.
// The JSON is read as a token stream; samples are summed per distinct stack
// as they arrive, so memory grows with the number of distinct stacks, not
// with the length of the recording (beyond one profile's list of stack
// ids, 4 bytes a sample, when weights come after samples).
package speedscope

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/pprof/profile"
	"github.com/profcap/profcap/formats/internal/jsonutil"
)

// Schema is the "$schema" value that identifies a speedscope file.
const Schema = "https://www.speedscope.app/file-format-schema.json"

// Options control Parse. The zero value is usable.
type Options struct {
	// MaxSamples bounds the samples (or events) of one profile and the
	// number of frames; 0 means DefaultMaxSamples.
	MaxSamples int
	// MaxFrames bounds the frames of all distinct stacks together; 0 means
	// DefaultMaxFrames.
	MaxFrames int
}

// DefaultMaxFrames is 64 Mi frames in all distinct stacks.
const DefaultMaxFrames = 1 << 26

// MaxDepth is the deepest stack (or nesting of open events) read.
const MaxDepth = 1 << 13

// DefaultMaxSamples is 16 Mi samples or events per profile.
const DefaultMaxSamples = 1 << 24

// FormatError is a problem with the content of the file, with the byte
// offset where it was found and the JSON path it concerns.
type FormatError = jsonutil.FormatError

// formatName starts every error message of this reader.
const formatName = "speedscope"

// ParseFile reads the speedscope file in name (gzipped or not).
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

// Parse reads a speedscope file from r; gzip is recognised by its magic.
func Parse(r io.Reader, opt Options) (*profile.Profile, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if head, _ := br.Peek(2); bytes.Equal(head, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("speedscope: reading gzip: %w", err)
		}
		defer zr.Close()
		r = &gzipReader{zr}
	} else {
		r = br
	}
	if opt.MaxSamples <= 0 {
		opt.MaxSamples = DefaultMaxSamples
	}
	if opt.MaxFrames <= 0 {
		opt.MaxFrames = DefaultMaxFrames
	}
	p := &parser{Walker: newWalker(r), opt: opt, active: -1}
	if err := p.top(); err != nil {
		var fe *FormatError
		var ge *gzipError
		var se *jsontext.SyntacticError
		switch {
		case errors.As(err, &fe):
			return nil, err
		case errors.As(err, &ge):
			return nil, fmt.Errorf("speedscope: reading gzip after byte %d: %w", p.D.InputOffset(), ge.err)
		case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
			return nil, &FormatError{Format: formatName, Offset: p.D.InputOffset(), Path: p.Path, Msg: "input ends early (truncated file?)"}
		case errors.As(err, &se):
			return nil, &FormatError{Format: formatName, Offset: se.ByteOffset, Path: p.Path, Msg: "invalid JSON: " + se.Err.Error()}
		}
		return nil, fmt.Errorf("speedscope: %w", err)
	}
	return p.build()
}

type frame struct {
	name, file string
	line       int64
}

type prof struct {
	index          int
	typ, name      string
	unit           string
	stacks         [][]int32        // distinct stacks, root first
	stackIDs       map[string]int32 // key → index into stacks
	sums           []float64        // weight per distinct stack
	samples        jsonutil.Int32s  // per sample: stack id (until weights are seen)
	haveSamples    bool
	pendingWeights []float64 // weights read before samples
	weightCount    int
	haveEvents     bool
	sampleCount    int
	key            []byte // scratch for intern
	offset         int64  // where the profile started, for late errors
}

type parser struct {
	jsonutil.Walker
	opt         Options
	schema      string
	sawSchema   bool
	frames      []frame
	sawFrames   bool
	profiles    []*prof
	name        string
	active      int
	maxFrameID  int32
	stackFrames int // frames of all distinct stacks, against MaxFrames
}

func (p *parser) number() (float64, error) {
	f, kind, err := p.ReadNumber()
	if err != nil {
		return 0, err
	}
	if kind != '0' {
		return 0, p.Errf("want a number, got %s", jsonutil.KindName(kind))
	}
	return f, nil
}

func (p *parser) str() (string, error) {
	tok, err := p.D.ReadToken()
	if err != nil {
		return "", err
	}
	if tok.Kind() != '"' {
		return "", p.Errf("want a string, got %s", jsonutil.KindName(tok.Kind()))
	}
	return tok.String(), nil
}

func (p *parser) frameIndex() (int32, error) {
	v, err := p.number()
	if err != nil {
		return 0, err
	}
	if v < 0 || v != math.Trunc(v) || v >= math.MaxInt32 {
		return 0, p.Errf("frame index %v is not a non-negative integer", v)
	}
	if int32(v) > p.maxFrameID {
		p.maxFrameID = int32(v)
	}
	return int32(v), nil
}

func (p *parser) top() error {
	err := p.Object(func(name string) error {
		defer p.At(name)()
		var err error
		switch name {
		case "$schema":
			p.sawSchema = true
			p.schema, err = p.str()
		case "name":
			if p.D.PeekKind() == '"' {
				p.name, err = p.str()
			} else {
				err = p.D.SkipValue()
			}
		case "activeProfileIndex":
			if p.D.PeekKind() == '0' {
				var v float64
				v, err = p.number()
				p.active = int(v)
			} else {
				err = p.D.SkipValue()
			}
		case "shared":
			return p.Object(func(name string) error {
				if name != "frames" {
					return p.D.SkipValue()
				}
				defer p.At("shared.frames")()
				p.sawFrames = true
				return p.Array(func(i int) error {
					if i >= p.opt.MaxSamples {
						return p.Errf("more than %d frames", p.opt.MaxSamples)
					}
					defer p.At(fmt.Sprintf("shared.frames[%d]", i))()
					return p.readFrame()
				})
			})
		case "profiles":
			return p.Array(func(i int) error {
				defer p.At(fmt.Sprintf("profiles[%d]", i))()
				return p.readProfile(i)
			})
		default:
			err = p.D.SkipValue()
		}
		return err
	})
	if err != nil {
		return err
	}
	if _, err := p.D.ReadToken(); err != io.EOF {
		if err == nil {
			return p.Errf("data after the file's object")
		}
		return err
	}
	if !p.sawSchema || p.schema != Schema {
		return p.Errf("no \"$schema\": %q: not a speedscope file", Schema)
	}
	if !p.sawFrames {
		return p.Errf("no shared.frames")
	}
	return nil
}

func (p *parser) readFrame() error {
	var f frame
	err := p.Object(func(name string) error {
		var err error
		switch name {
		case "name":
			f.name, err = p.str()
		case "file":
			if p.D.PeekKind() == '"' {
				f.file, err = p.str()
			} else {
				err = p.D.SkipValue()
			}
		case "line":
			if p.D.PeekKind() == '0' {
				var v float64
				v, err = p.number()
				if v > 0 && v < math.MaxInt32 {
					f.line = int64(v)
				}
			} else {
				err = p.D.SkipValue()
			}
		default:
			err = p.D.SkipValue()
		}
		return err
	})
	p.frames = append(p.frames, f)
	return err
}

func (p *parser) intern(pr *prof, stack []int32) (int32, error) {
	id := pr.lookup(stack)
	if id >= 0 {
		return id, nil
	}
	if p.stackFrames += len(stack); p.stackFrames > p.opt.MaxFrames {
		return 0, p.Errf("the distinct stacks hold more than %d frames in all (the limit; see Options.MaxFrames)", p.opt.MaxFrames)
	}
	return pr.add(stack), nil
}

// lookup returns the id of stack, or -1; it leaves the key in pr.key.
func (pr *prof) lookup(stack []int32) int32 {
	pr.key = pr.key[:0]
	for _, f := range stack {
		pr.key = append(pr.key, byte(f), byte(f>>8), byte(f>>16), byte(f>>24))
	}
	if id, ok := pr.stackIDs[string(pr.key)]; ok { // no allocation
		return id
	}
	return -1
}

// add adds the stack whose key lookup left in pr.key.
func (pr *prof) add(stack []int32) int32 {
	id := int32(len(pr.stacks))
	pr.stackIDs[string(pr.key)] = id
	pr.stacks = append(pr.stacks, append([]int32(nil), stack...))
	pr.sums = append(pr.sums, 0)
	return id
}

func (p *parser) readProfile(i int) error {
	pr := &prof{index: i, stackIDs: map[string]int32{}, offset: p.D.InputOffset(), weightCount: -1}
	p.profiles = append(p.profiles, pr)
	base := p.Path
	var stack []int32
	err := p.Object(func(name string) error {
		defer p.At(base + "." + name)()
		var err error
		switch name {
		case "type":
			pr.typ, err = p.str()
		case "name":
			pr.name, err = p.str()
		case "unit":
			pr.unit, err = p.str()
		case "samples":
			pr.haveSamples = true
			err = p.Array(func(i int) error {
				if i >= p.opt.MaxSamples {
					return p.Errf("more than %d samples (the limit; see Options.MaxSamples)", p.opt.MaxSamples)
				}
				stack = stack[:0]
				if err := p.Array(func(j int) error {
					if j >= MaxDepth {
						return p.Errf("sample %d is deeper than %d frames", i, MaxDepth)
					}
					f, err := p.frameIndex()
					stack = append(stack, f)
					return err
				}); err != nil {
					return err
				}
				pr.sampleCount++
				id, err := p.intern(pr, stack)
				if err != nil {
					return err
				}
				if i < len(pr.pendingWeights) {
					pr.sums[id] += pr.pendingWeights[i]
				} else if pr.weightCount < 0 {
					pr.samples.Add(id)
				} else {
					return p.Errf("more samples than weights (%d)", len(pr.pendingWeights))
				}
				return nil
			})
		case "weights":
			n := 0
			err = p.Array(func(i int) error {
				w, err := p.number()
				if err != nil {
					return err
				}
				if w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
					return p.Errf("weight %d is %v, want a non-negative number", i, w)
				}
				n++
				if pr.haveSamples {
					if i >= pr.samples.Len() {
						return p.Errf("more weights than samples (%d)", pr.samples.Len())
					}
					pr.sums[pr.samples.At(i)] += w
					return nil
				}
				if i >= p.opt.MaxSamples {
					return p.Errf("more than %d weights", p.opt.MaxSamples)
				}
				pr.pendingWeights = append(pr.pendingWeights, w)
				return nil
			})
			if pr.haveSamples {
				if err == nil && n != pr.samples.Len() {
					return p.Errf("%d weights for %d samples", n, pr.samples.Len())
				}
				pr.samples = jsonutil.Int32s{}
			}
			pr.weightCount = n
		case "events":
			pr.haveEvents = true
			err = p.readEvents(pr)
		default:
			err = p.D.SkipValue()
		}
		return err
	})
	if err != nil {
		return err
	}
	defer p.At(base)()
	switch pr.typ {
	case "sampled":
		if !pr.haveSamples {
			return p.Errf("sampled profile without samples")
		}
		if pr.weightCount < 0 && pr.sampleCount > 0 {
			return p.Errf("sampled profile without weights")
		}
		if pr.weightCount != pr.sampleCount {
			return p.Errf("%d weights for %d samples", pr.weightCount, pr.sampleCount)
		}
		pr.pendingWeights = nil
	case "evented":
		if !pr.haveEvents {
			return p.Errf("evented profile without events")
		}
	case "":
		return p.Errf("profile without a type")
	default:
		return p.Errf("unknown profile type %q (want sampled or evented)", pr.typ)
	}
	return nil
}

// readEvents turns O/C events into time spent per stack: between two
// events the open frames are the stack.
func (p *parser) readEvents(pr *prof) error {
	var open []int32
	last := math.Inf(-1)
	base := p.Path
	err := p.Array(func(i int) error {
		if i >= p.opt.MaxSamples {
			return p.Errf("more than %d events (the limit; see Options.MaxSamples)", p.opt.MaxSamples)
		}
		defer p.At(fmt.Sprintf("%s[%d]", base, i))()
		var typ string
		var at float64
		fr := int32(-1)
		sawAt := false
		if err := p.Object(func(name string) error {
			var err error
			switch name {
			case "type":
				typ, err = p.str()
			case "at":
				at, err = p.number()
				sawAt = true
			case "frame":
				fr, err = p.frameIndex()
			default:
				err = p.D.SkipValue()
			}
			return err
		}); err != nil {
			return err
		}
		switch {
		case !sawAt:
			return p.Errf("event without \"at\"")
		case fr < 0:
			return p.Errf("event without \"frame\"")
		case math.IsNaN(at) || math.IsInf(at, 0):
			return p.Errf("event at %v", at)
		case at < last:
			return p.Errf("event at %v comes before the previous one (at %v): events must be in time order", at, last)
		}
		if len(open) > 0 && at > last {
			id, err := p.intern(pr, open)
			if err != nil {
				return err
			}
			pr.sums[id] += at - last
		}
		last = at
		switch typ {
		case "O":
			if len(open) >= MaxDepth {
				return p.Errf("more than %d frames open", MaxDepth)
			}
			open = append(open, fr)
		case "C":
			if len(open) == 0 {
				return p.Errf("closes frame %d but no frame is open", fr)
			}
			if top := open[len(open)-1]; top != fr {
				return p.Errf("closes frame %d but frame %d is the innermost open one", fr, top)
			}
			open = open[:len(open)-1]
		default:
			return p.Errf("event type %q (want O or C)", typ)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(open) > 0 {
		return p.Errf("%d frames still open after the last event (innermost: %d)", len(open), open[len(open)-1])
	}
	return nil
}

type sampleType struct {
	typ, unit string
	scale     float64
}

func unitType(u string) (sampleType, error) {
	switch u {
	case "nanoseconds":
		return sampleType{"time", "nanoseconds", 1}, nil
	case "microseconds":
		return sampleType{"time", "nanoseconds", 1e3}, nil
	case "milliseconds":
		return sampleType{"time", "nanoseconds", 1e6}, nil
	case "seconds":
		return sampleType{"time", "nanoseconds", 1e9}, nil
	case "bytes":
		return sampleType{"space", "bytes", 1}, nil
	case "none", "":
		return sampleType{"samples", "count", 1}, nil
	}
	return sampleType{}, fmt.Errorf("unknown unit %q (want none, nanoseconds, microseconds, milliseconds, seconds or bytes)", u)
}

func (p *parser) build() (*profile.Profile, error) {
	if int(p.maxFrameID) >= len(p.frames) && len(p.profiles) > 0 {
		for _, pr := range p.profiles {
			for _, st := range pr.stacks {
				for _, f := range st {
					if int(f) >= len(p.frames) {
						return nil, &FormatError{Format: formatName, Offset: pr.offset, Path: fmt.Sprintf("profiles[%d]", pr.index), Msg: fmt.Sprintf("frame index %d is outside shared.frames (%d frames)", f, len(p.frames))}
					}
				}
			}
		}
	}
	if len(p.profiles) == 0 {
		return nil, &FormatError{Format: formatName, Msg: "no profiles"}
	}
	active := p.active
	if active < 0 || active >= len(p.profiles) {
		active = 0
	}
	st, err := unitType(p.profiles[active].unit)
	if err != nil {
		return nil, &FormatError{Format: formatName, Offset: p.profiles[active].offset, Path: fmt.Sprintf("profiles[%d].unit", active), Msg: err.Error()}
	}
	out := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: st.typ, Unit: st.unit}},
		PeriodType: &profile.ValueType{Type: st.typ, Unit: st.unit},
		Period:     1,
	}
	if p.name != "" {
		out.Comments = append(out.Comments, "speedscope file: "+p.name)
	}
	locs := make([]*profile.Location, len(p.frames))
	funcs := map[frame]*profile.Function{}
	loc := func(i int32) *profile.Location {
		if l := locs[i]; l != nil {
			return l
		}
		f := p.frames[i]
		name := f.name
		if name == "" {
			name = "[unknown]"
		}
		key := frame{name: name, file: f.file}
		fn := funcs[key]
		if fn == nil {
			fn = &profile.Function{ID: uint64(len(out.Function) + 1), Name: name, SystemName: name, Filename: f.file}
			funcs[key] = fn
			out.Function = append(out.Function, fn)
		}
		l := &profile.Location{ID: uint64(len(out.Location) + 1), Line: []profile.Line{{Function: fn, Line: f.line}}}
		out.Location = append(out.Location, l)
		locs[i] = l
		return l
	}
	var skipped []string
	for _, pr := range p.profiles {
		pst, err := unitType(pr.unit)
		if err != nil {
			return nil, &FormatError{Format: formatName, Offset: pr.offset, Path: fmt.Sprintf("profiles[%d].unit", pr.index), Msg: err.Error()}
		}
		if pst.typ != st.typ {
			skipped = append(skipped, fmt.Sprintf("%q (%s)", pr.name, pr.unit))
			continue
		}
		label := map[string][]string{"profile": {pr.name}}
		for i, stack := range pr.stacks {
			v := int64(math.Round(pr.sums[i] * pst.scale))
			if v <= 0 || len(stack) == 0 {
				continue
			}
			s := &profile.Sample{Value: []int64{v}, Label: label, Location: make([]*profile.Location, 0, len(stack))}
			for j := len(stack) - 1; j >= 0; j-- {
				s.Location = append(s.Location, loc(stack[j]))
			}
			out.Sample = append(out.Sample, s)
		}
	}
	if len(skipped) > 0 {
		out.Comments = append(out.Comments, "profiles left out (unit unlike the active profile's "+strconv.Quote(p.profiles[active].unit)+"): "+strings.Join(skipped, ", "))
	}
	if err := out.CheckValid(); err != nil {
		return nil, fmt.Errorf("speedscope: building profile: %w", err)
	}
	return out, nil
}

func newWalker(r io.Reader) jsonutil.Walker {
	return jsonutil.Walker{D: jsontext.NewDecoder(r), NewError: func(off int64, path, msg string) error {
		return &FormatError{Format: formatName, Offset: off, Path: path, Msg: msg}
	}}
}
