package firefox

import (
	"encoding/json"
	"fmt"
	"io"
	"math"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/profcap/profcap/formats/internal/jsonutil"
)

// This file reads the tables: the top-level walk of the profile object,
// meta, libs, and the columnar tables of profile.shared and of each thread,
// kept as compact columns.

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

func unmarshalLibs(v jsontext.Value, dst *[]Lib) error {
	if err := json.Unmarshal(v, dst); err != nil {
		return fmt.Errorf("want a list of libraries: %v", err)
	}
	return nil
}

func newWalker(r io.Reader) jsonutil.Walker {
	return jsonutil.Walker{D: jsontext.NewDecoder(r), NewError: func(off int64, path, msg string) error {
		return &FormatError{Format: formatName, Offset: off, Path: path, Msg: msg}
	}}
}
