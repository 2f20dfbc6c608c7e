package pprofutil

import (
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v    int64
		unit string
		want string
	}{
		{1500000, "nanoseconds", "1.50 ms"},
		{2500000000, "nanoseconds", "2.50 s"},
		{1536, "bytes", "1.50 KiB"},
		{3 << 20, "bytes", "3.00 MiB"},
		{5 << 30, "bytes", "5.00 GiB"},
		{42, "count", "42 samples"},
	} {
		if got := FormatValue(tc.v, tc.unit); got != tc.want {
			t.Errorf("FormatValue(%d, %s) = %q, want %q", tc.v, tc.unit, got, tc.want)
		}
	}
}

func TestSampleIndex(t *testing.T) {
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}}}
	for name, want := range map[string]int{"": 1, "samples": 0, "cpu": 1, "0": 0} {
		if got, err := SampleIndex(p, name); err != nil || got != want {
			t.Errorf("SampleIndex(%q) = %d, %v; want %d", name, got, err, want)
		}
	}
	p.DefaultSampleType = "samples"
	if got, _ := SampleIndex(p, ""); got != 0 {
		t.Errorf("default sample type ignored: %d", got)
	}
	if _, err := SampleIndex(p, "alloc_space"); err == nil || !strings.Contains(err.Error(), "samples/count, cpu/nanoseconds") {
		t.Errorf("unknown sample type: %v", err)
	}
}

func TestMergeNeverPanics(t *testing.T) {
	// profile.Merge dereferences PeriodType; a profile from outside may lack it.
	a := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}}}
	b := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}}}
	if _, err := Merge(a, b); err != nil {
		t.Errorf("Merge of two profiles without a period type: %v", err)
	}
	c := &profile.Profile{SampleType: []*profile.ValueType{{Type: "cpu", Unit: "nanoseconds"}}}
	if _, err := Merge(a, c); err == nil {
		t.Errorf("merging incompatible profiles succeeded")
	}
	if _, err := Merge(a, nil); err == nil {
		t.Errorf("merging nil succeeded")
	}
}

func TestDelta(t *testing.T) {
	fn := &profile.Function{ID: 1, Name: "f"}
	gn := &profile.Function{ID: 2, Name: "g"}
	mk := func(f, g int64) *profile.Profile {
		lf := &profile.Location{ID: 1, Line: []profile.Line{{Function: fn}}}
		lg := &profile.Location{ID: 2, Line: []profile.Line{{Function: gn}}}
		return &profile.Profile{
			SampleType: []*profile.ValueType{{Type: "contentions", Unit: "count"}},
			Sample:     []*profile.Sample{{Location: []*profile.Location{lf}, Value: []int64{f}}, {Location: []*profile.Location{lg}, Value: []int64{g}}},
			Location:   []*profile.Location{lf, lg},
			Function:   []*profile.Function{fn, gn},
		}
	}
	d, err := Delta(mk(10, 5), mk(15, 5))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Sample) != 1 || d.Sample[0].Value[0] != 5 || d.Sample[0].Location[0].Line[0].Function.Name != "f" {
		t.Errorf("delta = %v, want f:5 only", d)
	}
}

func TestMergerMatchesMerge(t *testing.T) {
	fn := &profile.Function{ID: 1, Name: "f"}
	loc := &profile.Location{ID: 1, Line: []profile.Line{{Function: fn}}}
	mk := func(v int64, st string) *profile.Profile {
		return &profile.Profile{
			SampleType: []*profile.ValueType{{Type: st, Unit: "count"}},
			PeriodType: &profile.ValueType{Type: st, Unit: "count"},
			Sample:     []*profile.Sample{{Location: []*profile.Location{loc}, Value: []int64{v}}},
			Location:   []*profile.Location{loc},
			Function:   []*profile.Function{fn},
		}
	}
	for _, n := range []int{1, 2, 3, 7, 64, 65} {
		var m Merger
		var want int64
		for i := range n {
			want += int64(i + 1)
			if err := m.Add(mk(int64(i+1), "samples")); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Add(mk(1000, "other")); err == nil {
			t.Error("an incompatible profile was accepted")
		}
		got, err := m.Result()
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, s := range got.Sample {
			sum += s.Value[0]
		}
		if sum != want || len(got.Sample) != 1 {
			t.Errorf("%d inputs: sum %d in %d samples, want %d in 1", n, sum, len(got.Sample), want)
		}
	}
	var empty Merger
	if p, err := empty.Result(); p != nil || err != nil {
		t.Errorf("empty merger: %v %v", p, err)
	}
}
