package speedscope

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/formats/internal/profiletest"
)

// render prints "profile;root;...;leaf VALUE" lines, sorted.
func render(p *profile.Profile) string {
	sums := map[string]int64{}
	for _, s := range p.Sample {
		parts := []string{s.Label["profile"][0]}
		for i := len(s.Location) - 1; i >= 0; i-- {
			parts = append(parts, s.Location[i].Line[0].Function.Name)
		}
		sums[strings.Join(parts, ";")] += s.Value[0]
	}
	var lines []string
	for k, v := range sums {
		lines = append(lines, k+" "+strconv.FormatInt(v, 10))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestFixtures: the three files are speedscope's own "simple" example in
// three shapes. By hand from the events a(0..14) b(0..14) c(0..2) d(2..6)
// c(6..9): a;b;c 5, a;b;d 4, a;b 5 (self). The sampled files say the same
// with weights 1,1,4,3,5 over the stacks abc, abc, abd, abc, ab, in seconds.
func TestFixtures(t *testing.T) {
	for _, tc := range []struct {
		file, unit, want string
	}{
		{"speedscope-0.0.1-simple.speedscope.json", "samples/count", "simple.txt;a;b 5\nsimple.txt;a;b;c 5\nsimple.txt;a;b;d 4"},
		{"speedscope-0.1.2-simple-sampled.speedscope.json", "time/nanoseconds", "simple.speedscope.json;a;b 5000000000\nsimple.speedscope.json;a;b;c 5000000000\nsimple.speedscope.json;a;b;d 4000000000"},
		{"speedscope-0.6.0-two-sampled.speedscope.json", "time/nanoseconds", "one;a;b 5000000000\none;a;b;c 5000000000\none;a;b;d 4000000000\ntwo;a;b 5000000000\ntwo;a;b;c 5000000000\ntwo;a;b;d 4000000000"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			p, err := ParseFile(filepath.Join("testdata", tc.file), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := p.SampleType[0].Type + "/" + p.SampleType[0].Unit; got != tc.unit {
				t.Errorf("sample type %s, want %s", got, tc.unit)
			}
			if got := render(p); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// TestString checks the whole profile each real file becomes against
// testdata/golden/FILE.string (pprof's Profile.String dump); go test
// -update rewrites them.
func TestString(t *testing.T) {
	files, err := filepath.Glob("testdata/*.speedscope.json")
	if err != nil || len(files) != 3 {
		t.Fatalf("fixtures %v (%v), want the 3 of testdata/README.md", files, err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			p, err := ParseFile(file, Options{})
			if err != nil {
				t.Fatal(err)
			}
			profiletest.Golden(t, name, p)
		})
	}
}

func TestGzipAndFrames(t *testing.T) {
	data, err := os.ReadFile("testdata/speedscope-0.1.2-simple-sampled.speedscope.json")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	zw.Close()
	p, err := Parse(&buf, Options{})
	if err != nil || len(p.Sample) != 3 {
		t.Fatalf("gzip: %v", err)
	}
	p, err = Parse(strings.NewReader(`{"$schema":"`+Schema+`","shared":{"frames":[{"name":"main","file":"app.py","line":3}]},"profiles":[{"type":"sampled","name":"cpu","unit":"bytes","startValue":0,"endValue":10,"samples":[[0],[0]],"weights":[10,0]}]}`), Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := p.Sample[0].Location[0].Line[0]
	if l.Function.Filename != "app.py" || l.Line != 3 || p.Sample[0].Value[0] != 10 || p.SampleType[0].Unit != "bytes" {
		t.Errorf("got %+v %v", l, p.Sample[0].Value)
	}
}

func TestErrors(t *testing.T) {
	hdr := `{"$schema":"` + Schema + `","shared":{"frames":[{"name":"a"},{"name":"b"}]},"profiles":[`
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "truncated"},
		{"no schema", `{"shared":{"frames":[]},"profiles":[]}`, "not a speedscope file"},
		{"other schema", `{"$schema":"x","shared":{"frames":[]},"profiles":[]}`, "not a speedscope file"},
		{"truncated", hdr + `{"type":"sampled","samples":[[0`, "truncated"},
		{"weights count", hdr + `{"type":"sampled","name":"x","unit":"none","samples":[[0],[1]],"weights":[1]}]}`, "1 weights for 2 samples"},
		{"weights first count", hdr + `{"type":"sampled","name":"x","unit":"none","weights":[1,2,3],"samples":[[0],[1]]}]}`, "3 weights for 2 samples"},
		{"negative", hdr + `{"type":"sampled","name":"x","unit":"none","samples":[[0]],"weights":[-1]}]}`, "non-negative"},
		{"bad frame", hdr + `{"type":"sampled","name":"x","unit":"none","samples":[[7]],"weights":[1]}]}`, "outside shared.frames"},
		{"bad unit", hdr + `{"type":"sampled","name":"x","unit":"parsecs","samples":[[0]],"weights":[1]}]}`, "unknown unit"},
		{"bad type", hdr + `{"type":"both","name":"x","unit":"none"}]}`, "unknown profile type"},
		{"order", hdr + `{"type":"evented","name":"x","unit":"none","events":[{"type":"O","at":5,"frame":0},{"type":"C","at":4,"frame":0}]}]}`, "time order"},
		{"nesting", hdr + `{"type":"evented","name":"x","unit":"none","events":[{"type":"O","at":0,"frame":0},{"type":"O","at":1,"frame":1},{"type":"C","at":2,"frame":0}]}]}`, "frame 1 is the innermost open one"},
		{"unclosed", hdr + `{"type":"evented","name":"x","unit":"none","events":[{"type":"O","at":0,"frame":0}]}]}`, "still open"},
		{"close none", hdr + `{"type":"evented","name":"x","unit":"none","events":[{"type":"C","at":0,"frame":0}]}]}`, "no frame is open"},
		{"event type", hdr + `{"type":"evented","name":"x","unit":"none","events":[{"type":"X","at":0,"frame":0}]}]}`, "want O or C"},
		{"no profiles", `{"$schema":"` + Schema + `","shared":{"frames":[]},"profiles":[]}`, "no profiles"},
		{"bad json", hdr + `{"type":}`, "invalid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.in), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	var fe *FormatError
	_, err := Parse(strings.NewReader(hdr+`{"type":"evented","name":"x","unit":"none","events":[{"type":"C","at":0,"frame":0}]}]}`), Options{})
	if !errors.As(err, &fe) || fe.Pos() == 0 || !strings.Contains(fe.Path, "profiles[0].events[0]") {
		t.Errorf("want a FormatError with position and path, got %v", err)
	}
	if _, err := ParseFile(filepath.Join(t.TempDir(), "x.json"), Options{}); err == nil {
		t.Error("missing file")
	}
}

func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		f.Fatalf("no testdata/*.json to seed from (%v)", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(bytes.NewReader(data), Options{MaxSamples: 1 << 12, MaxFrames: 1 << 16})
		if err == nil {
			if err := p.CheckValid(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// gen streams a sampled speedscope file of profiles × n samples over 8
// repeated stacks.
func gen(n int) io.Reader { return genN(1, n) }

func genN(profiles, n int) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 256<<10)
		bw.WriteString(`{"$schema":"` + Schema + `","shared":{"frames":[{"name":"main"},{"name":"serve"},{"name":"parse"},{"name":"encode"},{"name":"hash"}]},"profiles":[`)
		stacks := []string{"[0,1,2]", "[0,1,3]", "[0,1,2,4]", "[0,1,3,4]", "[0,1]", "[0]", "[0,2]", "[0,3,4]"}
		for pi := 0; pi < profiles; pi++ {
			if pi > 0 {
				bw.WriteByte(',')
			}
			bw.WriteString(`{"type":"sampled","name":"cpu","unit":"milliseconds","startValue":0,"endValue":1,"samples":[`)
			for i := 0; i < n; i++ {
				if i > 0 {
					bw.WriteByte(',')
				}
				bw.WriteString(stacks[i%len(stacks)])
			}
			bw.WriteString(`],"weights":[`)
			for i := 0; i < n; i++ {
				if i > 0 {
					bw.WriteByte(',')
				}
				bw.WriteString("1.5")
			}
			bw.WriteString("]}")
		}
		bw.WriteString("]}")
		pw.CloseWithError(bw.Flush())
	}()
	return pr
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestGenerated(t *testing.T) {
	p, err := Parse(gen(800), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := render(p); !strings.Contains(got, "cpu;main;serve;parse 150000000\n") {
		t.Errorf("got\n%s", got)
	}
}

// BenchmarkParseLarge parses a generated sampled file (about 1 GB by
// default; PROFCAP_BENCH_MB overrides) streamed through a pipe, reporting
// MB/s and the peak heap. The sample ids of the one profile are buffered
// until its weights arrive (4 bytes a sample).
func BenchmarkParseLarge(b *testing.B) {
	mb := 1024
	if s := os.Getenv("PROFCAP_BENCH_MB"); s != "" {
		mb, _ = strconv.Atoi(s)
	}
	// About 8 bytes of stack and 4 of weight a sample, in profiles of 4 Mi
	// samples (each under the per-profile limit).
	n := 4 << 20
	profiles := max(1, mb<<20/12/n)
	for b.Loop() {
		var peak atomic.Uint64
		stop, done := make(chan struct{}), make(chan struct{})
		runtime.GC()
		go func() {
			defer close(done)
			var ms runtime.MemStats
			tk := time.NewTicker(10 * time.Millisecond)
			defer tk.Stop()
			for {
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > peak.Load() {
					peak.Store(ms.HeapAlloc)
				}
				select {
				case <-stop:
					return
				case <-tk.C:
				}
			}
		}()
		cr := &countingReader{r: genN(profiles, n)}
		start := time.Now()
		_, err := Parse(cr, Options{})
		el := time.Since(start)
		close(stop)
		<-done
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(cr.n)/1e6/el.Seconds(), "MB/s")
		b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(cr.n)/(1<<20), "input-MiB")
	}
}
