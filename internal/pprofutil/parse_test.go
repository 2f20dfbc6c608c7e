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
