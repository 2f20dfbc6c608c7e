package pprofutil

import (
	"bytes"
	"compress/gzip"
	"runtime"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

func TestParseRefusesBombs(t *testing.T) {
	// 256 KiB of gzip that inflates to 256 MiB of zeros.
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for range 256 {
		zw.Write(zero)
	}
	zw.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Parse(bomb.Bytes(), 64<<20)
	runtime.ReadMemStats(&after)
	if !IsTooLarge(err) || !strings.Contains(err.Error(), "decompressed profile larger than the 64 MiB limit") {
		t.Fatalf("bomb: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 400<<20 {
		t.Errorf("parsing the bomb allocated %d MiB", grew>>20)
	}
	// A real profile, gzipped or not, parses.
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}}}
	var gz bytes.Buffer
	if err := p.Write(&gz); err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	if err := p.WriteUncompressed(&raw); err != nil {
		t.Fatal(err)
	}
	for _, in := range [][]byte{gz.Bytes(), raw.Bytes()} {
		if q, err := Parse(in, 0); err != nil || len(q.SampleType) != 1 {
			t.Errorf("valid profile: %v", err)
		}
	}
	if _, err := Parse(raw.Bytes(), 2); !IsTooLarge(err) {
		t.Errorf("uncompressed over the limit: %v", err)
	}
	if _, err := Parse(gz.Bytes()[:gz.Len()-6], 0); err == nil || !strings.Contains(err.Error(), "decompressing") {
		t.Errorf("a cut gzip stream: %v", err)
	}
	if _, err := Parse([]byte("<html>not a profile</html>"), 0); err == nil {
		t.Error("garbage parsed")
	}
}

func FuzzParse(f *testing.F) {
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}}}
	var gz bytes.Buffer
	_ = p.Write(&gz)
	f.Add(gz.Bytes())
	f.Add([]byte{0x1f, 0x8b, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = Parse(data, 1<<20)
	})
}

// A profile with more samples than the limit is cut on the wire: the
// heaviest kept with their labels, the rest summed, totals unchanged,
// deep stacks cut, and the result valid.
func TestParseLimitedCutsOnTheWire(t *testing.T) {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"}, Period: 1,
	}
	for i := range 50 {
		f := &profile.Function{ID: uint64(i + 1), Name: "f" + strings.Repeat("x", i)}
		p.Function = append(p.Function, f)
		p.Location = append(p.Location, &profile.Location{ID: uint64(i + 1), Line: []profile.Line{{Function: f}}})
	}
	var total [2]int64
	for i := range 1000 {
		st := []*profile.Location{p.Location[i%50], p.Location[(i/50)%50]}
		if i == 999 {
			st = p.Location // 50 deep, and the heaviest
		}
		v := []int64{int64(i + 1), int64(i+1) * 10}
		total[0] += v[0]
		total[1] += v[1]
		p.Sample = append(p.Sample, &profile.Sample{Location: st, Value: v, Label: map[string][]string{"task": {strings.Repeat("t", i%3+1)}}})
	}
	var gz bytes.Buffer
	if err := p.Write(&gz); err != nil {
		t.Fatal(err)
	}
	q, notes, err := ParseLimited(gz.Bytes(), 0, Limits{MaxSamples: 100, MaxDepth: 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.CheckValid(); err != nil {
		t.Fatal(err)
	}
	if len(q.Sample) != 100 || len(notes) != 2 {
		t.Fatalf("%d samples, notes %q", len(q.Sample), notes)
	}
	var got [2]int64
	var heaviest *profile.Sample
	for _, s := range q.Sample {
		got[0] += s.Value[0]
		got[1] += s.Value[1]
		if len(s.Location) > 10 {
			t.Errorf("a %d-frame stack survived", len(s.Location))
		}
		if heaviest == nil || s.Value[1] > heaviest.Value[1] && len(s.Location) > 1 {
			heaviest = s
		}
	}
	if got != total {
		t.Errorf("totals %v after the cut, want %v", got, total)
	}
	if !strings.Contains(q.Comments[0], "warning: cut: 1000 samples were more than 100: the 901 lighter") {
		t.Errorf("comments %q", q.Comments)
	}
	// The kept samples are the heaviest, with their labels.
	for _, s := range q.Sample {
		if len(s.Location) == 1 && strings.HasPrefix(s.Location[0].Line[0].Function.Name, "[901 lighter") {
			continue
		}
		if s.Value[0] < 901 {
			t.Errorf("a light sample (%d) was kept", s.Value[0])
		}
		if len(s.Label["task"]) != 1 {
			t.Errorf("labels lost: %v", s.Label)
		}
	}
	// Under the limits, nothing changes.
	r, notes, err := ParseLimited(gz.Bytes(), 0, Limits{MaxSamples: 5000, MaxDepth: 100})
	if err != nil || notes != nil || len(r.Sample) != 1000 {
		t.Errorf("no cut expected: %v %q %d", err, notes, len(r.Sample))
	}
}
