package pprofutil

import (
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

func TestBound(t *testing.T) {
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}}}
	var locs []*profile.Location
	for i := range 100 {
		f := &profile.Function{ID: uint64(i + 1), Name: "f" + string(rune('a'+i%26))}
		l := &profile.Location{ID: uint64(i + 1), Line: []profile.Line{{Function: f}}}
		p.Function = append(p.Function, f)
		p.Location = append(p.Location, l)
		locs = append(locs, l)
	}
	var total int64
	// 50 distinct shallow stacks, each twice; one 100-deep stack.
	for i := range 50 {
		for range 2 {
			v := int64(i + 1)
			total += v
			p.Sample = append(p.Sample, &profile.Sample{Location: []*profile.Location{locs[i], locs[99]}, Value: []int64{v, v * 10}})
		}
	}
	p.Sample = append(p.Sample, &profile.Sample{Location: locs, Value: []int64{1000, 10000}})
	total += 1000
	notes := Bound(p, Limits{MaxDepth: 10, MaxSamples: 20})
	if len(notes) != 2 || !strings.Contains(notes[0], "1 stacks deeper than 10 frames (up to 100)") || !strings.Contains(notes[1], "32 lighter stacks") {
		t.Fatalf("notes %q", notes)
	}
	if err := p.CheckValid(); err != nil {
		t.Fatal(err)
	}
	if len(p.Sample) != 20 {
		t.Errorf("%d samples, want 20", len(p.Sample))
	}
	var got int64
	for _, s := range p.Sample {
		got += s.Value[0]
		if len(s.Location) > 10 {
			t.Errorf("a stack of %d frames survived", len(s.Location))
		}
	}
	if got != total {
		t.Errorf("total %d after cutting, want %d", got, total)
	}
	if p.Sample[0].Value[0] != 1000 {
		t.Errorf("heaviest stack not first: %v", p.Sample[0].Value)
	}
	if n := len(p.Comments); n != 2 || !strings.HasPrefix(p.Comments[0], "warning: ") {
		t.Errorf("comments %q", p.Comments)
	}
	// Under the limits nothing changes.
	q := &profile.Profile{SampleType: p.SampleType[:1], Sample: []*profile.Sample{{Location: locs[:3], Value: []int64{1}}}, Location: locs[:3]}
	if notes := Bound(q, DefaultLimits); notes != nil || len(q.Sample) != 1 {
		t.Errorf("a small profile was changed: %q", notes)
	}
}
