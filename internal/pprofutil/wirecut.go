package pprofutil

import (
	"cmp"
	"container/heap"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of perftools.profiles.Profile (profile.proto) that the
// cut needs.
const (
	fProfileSampleType  = 1
	fProfileSample      = 2
	fProfileLocation    = 4
	fProfileFunction    = 5
	fProfileStringTable = 6
	fProfileDefaultType = 14
	fSampleLocationID   = 1
	fSampleValue        = 2
	fSampleLabel        = 3
	fFunctionID         = 1
	fFunctionName       = 2
	fFunctionSystemName = 3
	fLocationID         = 1
	fLocationLine       = 4
	fLineFunctionID     = 1
	fValueTypeType      = 1
)

// cutWire cuts an uncompressed pprof message with more than l.MaxSamples
// samples to the l.MaxSamples-1 heaviest (by the default sample type)
// plus one sample summing the rest, before it is parsed: parsing keeps
// every sample and every frame of it as objects (a 1M-sample profile
// needs over a gigabyte), the wire form keeps them as bytes. Stacks deeper
// than l.MaxDepth are cut to their leaf-most frames on the way. It returns
// data unchanged when nothing needs cutting, and a note for what was cut.
func cutWire(data []byte, l Limits) ([]byte, []string, error) {
	if l.MaxSamples <= 1 {
		return data, nil, nil
	}
	type span struct{ start, end int } // a sample's field, tag included
	var samples []span
	var strings [][]byte
	var sampleTypes []int64 // type string indexes
	defaultType := int64(-1)
	var maxLoc, maxFn uint64
	for i := 0; i < len(data); {
		num, typ, n := protowire.ConsumeTag(data[i:])
		if n < 0 {
			return nil, nil, errors.New("malformed profile")
		}
		start := i
		i += n
		m := protowire.ConsumeFieldValue(num, typ, data[i:])
		if m < 0 {
			return nil, nil, errors.New("malformed profile")
		}
		val := data[i : i+m]
		i += m
		if typ == protowire.BytesType {
			val, _ = protowire.ConsumeBytes(val)
		}
		switch {
		case num == fProfileSample && typ == protowire.BytesType:
			samples = append(samples, span{start, i})
		case num == fProfileStringTable && typ == protowire.BytesType:
			strings = append(strings, val)
		case num == fProfileSampleType && typ == protowire.BytesType:
			sampleTypes = append(sampleTypes, varintField(val, fValueTypeType))
		case num == fProfileDefaultType && typ == protowire.VarintType:
			v, _ := protowire.ConsumeVarint(val)
			defaultType = int64(v)
		case num == fProfileLocation && typ == protowire.BytesType:
			maxLoc = max(maxLoc, uint64(varintField(val, fLocationID)))
		case num == fProfileFunction && typ == protowire.BytesType:
			maxFn = max(maxFn, uint64(varintField(val, fFunctionID)))
		}
	}
	if len(samples) <= l.MaxSamples && l.MaxDepth <= 1 {
		return data, nil, nil
	}
	// The value that ranks samples: the default sample type's, else the
	// last (pprof's convention).
	vi := len(sampleTypes) - 1
	for i, t := range sampleTypes {
		if defaultType > 0 && t == defaultType {
			vi = i
		}
	}
	deep, deepest := 0, 0
	needsDepthCut := false
	if l.MaxDepth > 1 {
		for _, s := range samples {
			if d := len(sampleLocations(data[s.start:s.end])); d > l.MaxDepth {
				needsDepthCut = true
				break
			}
		}
	}
	if len(samples) <= l.MaxSamples && !needsDepthCut {
		return data, nil, nil
	}
	// Keep the heaviest MaxSamples-1 in a min-heap; sum the rest.
	keep := &sampleHeap{}
	nvals := len(sampleTypes)
	rest := make([]int64, nvals)
	restN := 0
	for idx, s := range samples {
		vals := sampleValues(data[s.start:s.end])
		w := int64(0)
		if vi >= 0 && vi < len(vals) {
			w = abs(vals[vi])
		}
		add := func(v []int64) {
			for i := range min(len(v), nvals) {
				rest[i] += v[i]
			}
			restN++
		}
		if len(samples) <= l.MaxSamples || keep.Len() < l.MaxSamples-1 {
			heap.Push(keep, ranked{idx, w})
			continue
		}
		if w > (*keep)[0].w {
			out := heap.Pop(keep).(ranked)
			add(sampleValues(data[samples[out.idx].start:samples[out.idx].end]))
			heap.Push(keep, ranked{idx, w})
		} else {
			add(vals)
		}
	}
	// Write: every field but the samples, then the kept samples (cut to
	// depth), then the synthetic frames and the summed sample.
	out := make([]byte, 0, len(data)/max(1, len(samples)/max(1, keep.Len()))+1024)
	prev := 0
	for _, s := range samples {
		out = append(out, data[prev:s.start]...)
		prev = s.end
	}
	out = append(out, data[prev:]...)
	kept := make([]bool, len(samples))
	for _, r := range *keep {
		kept[r.idx] = true
	}
	var cutLoc uint64
	if needsDepthCut {
		cutLoc = maxLoc + 2
	}
	for idx, s := range samples {
		if !kept[idx] {
			continue
		}
		raw := data[s.start:s.end]
		if locs := sampleLocations(raw); l.MaxDepth > 1 && len(locs) > l.MaxDepth {
			deep++
			deepest = max(deepest, len(locs))
			locs = append(locs[:l.MaxDepth-1:l.MaxDepth-1], cutLoc)
			out = appendSample(out, locs, sampleValues(raw), sampleLabels(raw))
			continue
		}
		out = append(out, raw...)
	}
	var notes []string
	nextStr := uint64(len(strings))
	synth := func(loc, fn uint64, name string) {
		out = protowire.AppendTag(out, fProfileStringTable, protowire.BytesType)
		out = protowire.AppendString(out, name)
		var f []byte
		f = protowire.AppendTag(f, fFunctionID, protowire.VarintType)
		f = protowire.AppendVarint(f, fn)
		f = protowire.AppendTag(f, fFunctionName, protowire.VarintType)
		f = protowire.AppendVarint(f, nextStr)
		f = protowire.AppendTag(f, fFunctionSystemName, protowire.VarintType)
		f = protowire.AppendVarint(f, nextStr)
		out = protowire.AppendTag(out, fProfileFunction, protowire.BytesType)
		out = protowire.AppendBytes(out, f)
		var line []byte
		line = protowire.AppendTag(line, fLineFunctionID, protowire.VarintType)
		line = protowire.AppendVarint(line, fn)
		var lc []byte
		lc = protowire.AppendTag(lc, fLocationID, protowire.VarintType)
		lc = protowire.AppendVarint(lc, loc)
		lc = protowire.AppendTag(lc, fLocationLine, protowire.BytesType)
		lc = protowire.AppendBytes(lc, line)
		out = protowire.AppendTag(out, fProfileLocation, protowire.BytesType)
		out = protowire.AppendBytes(out, lc)
		nextStr++
	}
	if restN > 0 {
		synth(maxLoc+1, maxFn+1, fmt.Sprintf("[%d lighter stacks cut]", restN))
		out = appendSample(out, []uint64{maxLoc + 1}, rest, nil)
		notes = append(notes, fmt.Sprintf("%d samples were more than %d: the %d lighter are summed into one frame", len(samples), l.MaxSamples, restN))
	}
	if deep > 0 {
		synth(cutLoc, maxFn+2, fmt.Sprintf("[frames cut below depth %d]", l.MaxDepth))
		notes = append(notes, fmt.Sprintf("%d stacks deeper than %d frames (up to %d) were cut to their %d leaf-most frames", deep, l.MaxDepth, deepest, l.MaxDepth-1))
	}
	return out, notes, nil
}

type ranked struct {
	idx int
	w   int64
}

type sampleHeap []ranked

func (h sampleHeap) Len() int           { return len(h) }
func (h sampleHeap) Less(i, j int) bool { return cmp.Less(h[i].w, h[j].w) }
func (h sampleHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *sampleHeap) Push(x any)        { *h = append(*h, x.(ranked)) }
func (h *sampleHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// sampleBody returns the message inside a sample field (tag included).
func sampleBody(raw []byte) []byte {
	_, _, n := protowire.ConsumeTag(raw)
	b, _ := protowire.ConsumeBytes(raw[n:])
	return b
}

// repeatedVarints reads a repeated varint field, packed or not.
func repeatedVarints(msg []byte, field protowire.Number) []uint64 {
	var out []uint64
	for i := 0; i < len(msg); {
		num, typ, n := protowire.ConsumeTag(msg[i:])
		if n < 0 {
			return out
		}
		i += n
		m := protowire.ConsumeFieldValue(num, typ, msg[i:])
		if m < 0 {
			return out
		}
		if num == field {
			switch typ {
			case protowire.VarintType:
				v, _ := protowire.ConsumeVarint(msg[i:])
				out = append(out, v)
			case protowire.BytesType:
				b, _ := protowire.ConsumeBytes(msg[i:])
				for len(b) > 0 {
					v, k := protowire.ConsumeVarint(b)
					if k < 0 {
						break
					}
					out = append(out, v)
					b = b[k:]
				}
			}
		}
		i += m
	}
	return out
}

func sampleLocations(raw []byte) []uint64 { return repeatedVarints(sampleBody(raw), fSampleLocationID) }

func sampleValues(raw []byte) []int64 {
	vs := repeatedVarints(sampleBody(raw), fSampleValue)
	out := make([]int64, len(vs))
	for i, v := range vs {
		out[i] = int64(v)
	}
	return out
}

// sampleLabels returns the raw label messages of a sample.
func sampleLabels(raw []byte) [][]byte {
	msg := sampleBody(raw)
	var out [][]byte
	for i := 0; i < len(msg); {
		num, typ, n := protowire.ConsumeTag(msg[i:])
		if n < 0 {
			return out
		}
		i += n
		m := protowire.ConsumeFieldValue(num, typ, msg[i:])
		if m < 0 {
			return out
		}
		if num == fSampleLabel && typ == protowire.BytesType {
			b, _ := protowire.ConsumeBytes(msg[i:])
			out = append(out, b)
		}
		i += m
	}
	return out
}

func appendSample(out []byte, locs []uint64, vals []int64, labels [][]byte) []byte {
	var s, packed []byte
	for _, l := range locs {
		packed = protowire.AppendVarint(packed, l)
	}
	s = protowire.AppendTag(s, fSampleLocationID, protowire.BytesType)
	s = protowire.AppendBytes(s, packed)
	packed = packed[:0]
	for _, v := range vals {
		packed = protowire.AppendVarint(packed, uint64(v))
	}
	s = protowire.AppendTag(s, fSampleValue, protowire.BytesType)
	s = protowire.AppendBytes(s, packed)
	for _, lb := range labels {
		s = protowire.AppendTag(s, fSampleLabel, protowire.BytesType)
		s = protowire.AppendBytes(s, lb)
	}
	out = protowire.AppendTag(out, fProfileSample, protowire.BytesType)
	return protowire.AppendBytes(out, s)
}

// varintField returns the first varint field num of msg, or 0.
func varintField(msg []byte, field protowire.Number) int64 {
	for i := 0; i < len(msg); {
		num, typ, n := protowire.ConsumeTag(msg[i:])
		if n < 0 {
			return 0
		}
		i += n
		if num == field && typ == protowire.VarintType {
			v, _ := protowire.ConsumeVarint(msg[i:])
			return int64(v)
		}
		m := protowire.ConsumeFieldValue(num, typ, msg[i:])
		if m < 0 {
			return 0
		}
		i += m
	}
	return 0
}
