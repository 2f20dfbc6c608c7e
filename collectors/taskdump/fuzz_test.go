package taskdump

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzParse: any input parses or is an error, never a panic; a parsed dump
// builds a valid profile whose total is exactly its tasks × the weight.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.txt"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/3]) // cut mid-dump
	}
	f.Add([]byte("task id=1 name=a\n╼ a\n  ├╼ b\n  │  └╼ c╼ d\n  └╼ e\n\n"))
	f.Add([]byte("task id=1 name=a\n  trace 0\n    ?? at 0xdeadbeef\n    _ZN3foo3barE at f.rs:1:2\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l := Limits{MaxBytes: 1 << 20, MaxLine: 4096, MaxTasks: 1000, MaxTraces: 16, MaxFrames: 64, MaxTotalFrames: 10000}
		d, err := Parse(bytes.NewReader(data), l)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) && !errors.Is(err, ErrNotDump) {
				t.Fatalf("error of an unexpected type: %T %v", err, err)
			}
			return
		}
		if len(d.Tasks) > l.MaxTasks {
			t.Fatalf("%d tasks", len(d.Tasks))
		}
		frames := 0
		for _, tk := range d.Tasks {
			if len(tk.Traces) > l.MaxTraces {
				t.Fatalf("%d traces", len(tk.Traces))
			}
			for _, tr := range tk.Traces {
				if len(tr) > l.MaxFrames {
					t.Fatalf("%d frames", len(tr))
				}
				frames += len(tr)
			}
		}
		if frames > l.MaxTotalFrames {
			t.Fatalf("%d frames in all", frames)
		}
		b := NewBuilder("fuzz", BuildLimits{MaxFrames: 100, MaxSamples: 50})
		b.Add(d, time.Second, nil)
		p := b.Profile(time.Unix(0, 0), time.Unix(1, 0), time.Second)
		if err := p.CheckValid(); err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, s := range p.Sample {
			if len(s.Location) == 0 {
				t.Fatal("sample without a stack")
			}
			total += s.Value[0]
		}
		if want := int64(len(d.Tasks)) * int64(time.Second); total != want {
			t.Fatalf("total %d, want %d tasks × 1 s", total, want)
		}
		if len(p.Location) > 101 {
			t.Fatalf("%d locations past the limit of 100", len(p.Location))
		}
	})
}
