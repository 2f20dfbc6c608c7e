package jsonutil

import (
	"strconv"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

func TestParseNumber(t *testing.T) {
	for in, want := range map[string]float64{"0": 0, "42": 42, "-7": -7, "1.5": 1.5, "1e3": 1000, "123456789012345678": 123456789012345678} {
		if got, ok := ParseNumber(jsontext.Value(in)); !ok || got != want {
			t.Errorf("ParseNumber(%s) = %v, %v; want %v", in, got, ok, want)
		}
	}
	if _, ok := ParseNumber(jsontext.Value("x")); ok {
		t.Errorf("ParseNumber accepted x")
	}
}

func TestInt32sAcrossBlocks(t *testing.T) {
	var c Int32s
	n := 3*chunkSize + 7
	for i := 0; i < n; i++ {
		c.Add(int32(i))
	}
	if c.Len() != n || c.At(0) != 0 || c.At(chunkSize) != chunkSize || c.At(n-1) != int32(n-1) {
		t.Errorf("len %d, values %d %d %d", c.Len(), c.At(0), c.At(chunkSize), c.At(n-1))
	}
}

// ParseNumber agrees with strconv.ParseFloat on everything it accepts.
func FuzzParseNumber(f *testing.F) {
	for _, s := range []string{"0", "-12", "3.25", "1e-9", "999999999999999", "-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseNumber(jsontext.Value(s))
		want, err := strconv.ParseFloat(s, 64)
		if ok != (err == nil) || ok && got != want {
			t.Fatalf("ParseNumber(%q) = %v, %v; strconv says %v, %v", s, got, ok, want, err)
		}
	})
}
