package firefox

import (
	"math"

	"github.com/profcap/profcap/formats/internal/jsonutil"
)

// This file streams a thread's samples: it sums weights and CPU deltas per
// stack as they arrive, buffering only the stack column.

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
