package firefox

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/formats/internal/profiletest"
	"github.com/profcap/profcap/internal/golden"
)

// render prints p as "process;thread (tid);root;...;leaf WEIGHT" lines,
// sorted, after a total line: the shape testdata/expect.py prints.
func render(p *profile.Profile) string {
	sums := map[string]int64{}
	var total int64
	for _, s := range p.Sample {
		tid := ""
		if v := s.NumLabel["tid"]; len(v) > 0 {
			tid = fmt.Sprint(v[0])
		} else if v := s.Label["tid"]; len(v) > 0 {
			tid = v[0]
		}
		parts := []string{first(s.Label["process"]), fmt.Sprintf("%s (%s)", first(s.Label["thread"]), tid)}
		for i := len(s.Location) - 1; i >= 0; i-- {
			parts = append(parts, s.Location[i].Line[0].Function.Name)
		}
		sums[strings.Join(parts, ";")] += s.Value[0]
		total += s.Value[0]
	}
	keys := make([]string, 0, len(sums))
	for k := range sums {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "# total weight %d\n", total)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %d\n", k, sums[k])
	}
	return b.String()
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func parseFile(t testing.TB, name string, opt Options) *profile.Profile {
	t.Helper()
	p, err := ParseFile(filepath.Join("testdata", name), opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckValid(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGolden checks the real files against goldens that testdata/expect.py,
// an independent walk of the same tables (the Firefox Profiler's call-tree
// logic), wrote. The layouts of later versions, derived from the v49 file by
// the script in testdata/README.md, must give exactly the v49 stacks.
//
// These files are the reference, not a record of what the Go code printed:
// -update does not rewrite them (python3 testdata/expect.py does).
func TestGolden(t *testing.T) {
	for _, tc := range []struct{ file, golden string }{
		{"samply-ls-linux-profile.json", "samply-ls-linux-profile.folded"},
		{"ffprofiler-samply-macos-unsymbolicated-v49.json", "ffprofiler-samply-macos-unsymbolicated-v49.folded"},
		{"ffprofiler-samply-macos-unsymbolicated-v49.json.gz", "ffprofiler-samply-macos-unsymbolicated-v49.folded"},
		{"v49-as-v56.json", "ffprofiler-samply-macos-unsymbolicated-v49.folded"},
		{"v49-as-v66.json", "ffprofiler-samply-macos-unsymbolicated-v49.folded"},
		{"v49-as-v70.json", "ffprofiler-samply-macos-unsymbolicated-v49.folded"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			p := parseFile(t, tc.file, Options{})
			path := filepath.Join("testdata", "golden", tc.golden)
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if d := golden.Diff(path, "got", string(want), render(p)); d != "" {
				t.Errorf("stacks differ from the reference that testdata/expect.py wrote:\n%s", d)
			}
		})
	}
}

// TestString checks the whole profile each real file becomes (samples,
// labels, locations, mappings, comments, period and times) against
// testdata/golden/FILE.string, pprof's Profile.String dump; go test -update
// rewrites them. The gzipped file must read exactly as the plain one.
func TestString(t *testing.T) {
	for _, tc := range []struct{ file, golden string }{
		{"samply-ls-linux-profile.json", "samply-ls-linux-profile.json"},
		{"ffprofiler-samply-macos-unsymbolicated-v49.json", "ffprofiler-samply-macos-unsymbolicated-v49.json"},
		{"ffprofiler-samply-macos-unsymbolicated-v49.json.gz", "ffprofiler-samply-macos-unsymbolicated-v49.json"},
		{"v49-as-v56.json", "v49-as-v56.json"},
		{"v49-as-v66.json", "v49-as-v66.json"},
		{"v49-as-v70.json", "v49-as-v70.json"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			profiletest.Golden(t, tc.golden, parseFile(t, tc.file, Options{}))
		})
	}
	t.Run("symbolicated", func(t *testing.T) {
		syms := symbolicationResponse(t)
		p := parseFile(t, "ffprofiler-samply-macos-unsymbolicated-v49.json", Options{Symbolize: syms.lookup})
		profiletest.Golden(t, "ffprofiler-samply-macos-unsymbolicated-v49.symbolicated", p)
	})
}

func TestProfileShape(t *testing.T) {
	p := parseFile(t, "samply-ls-linux-profile.json", Options{})
	if got := fmt.Sprint(p.SampleType[0].Type, "/", p.SampleType[0].Unit, " ", p.SampleType[1].Type, "/", p.SampleType[1].Unit); got != "samples/count cpu/nanoseconds" {
		t.Errorf("sample types %s", got)
	}
	// meta.interval 0.25 ms
	if p.Period != 250000 || p.PeriodType.Type != "cpu" {
		t.Errorf("period %d %v", p.Period, p.PeriodType)
	}
	var samples, cpu int64
	for _, s := range p.Sample {
		samples += s.Value[0]
		cpu += s.Value[1]
		if s.NumLabel["pid"][0] != 18693 || s.Label["process"][0] != "ls" {
			t.Fatalf("labels %v %v", s.Label, s.NumLabel)
		}
	}
	// 13069 = sum of weights of the samples with a stack (13083 minus 11
	// null-stack samples weighing 14); CPU from threadCPUDelta (µs).
	if samples != 13069 {
		t.Errorf("samples %d, want 13069", samples)
	}
	if cpu <= 0 || cpu > p.DurationNanos*2 {
		t.Errorf("cpu %d ns over %d ns", cpu, p.DurationNanos)
	}
	if p.TimeNanos/1e6 != 1671458961578 {
		t.Errorf("TimeNanos %d", p.TimeNanos)
	}
	lsMapped := false
	for _, m := range p.Mapping {
		if m.File == "/usr/bin/ls" {
			lsMapped = true
			if m.BuildID != "63260a3e6e46db57abf718f6a3562c6eedccf269" {
				t.Errorf("ls build id %q", m.BuildID)
			}
		}
	}
	if !lsMapped {
		t.Error("no mapping for /usr/bin/ls")
	}
	// String tids and pids (v49) are numeric labels too.
	p = parseFile(t, "ffprofiler-samply-macos-unsymbolicated-v49.json", Options{})
	if p.Sample[0].NumLabel["pid"][0] != 56127 {
		t.Errorf("pid label %v", p.Sample[0].NumLabel)
	}
}

// symbols is what a Tecken-style /symbolicate/v5 response (the API of
// samply's and the Firefox Profiler's symbol servers) says: function names
// by library debug name and library-relative address.
type symbols map[string]map[uint64]string

// symbolicationResponse reads testdata/ffprofiler-symbolicate-v5-response.json,
// the symbol server's answer for the v49 file:
//
//	{"results":[{"stacks":[[{"module":"a.out","module_offset":"0x3ec3","function":"main",...}]]}]}
func symbolicationResponse(t testing.TB) symbols {
	t.Helper()
	data, err := os.ReadFile("testdata/ffprofiler-symbolicate-v5-response.json")
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Results []struct {
			Stacks [][]struct {
				Module       string `json:"module"`
				ModuleOffset string `json:"module_offset"`
				Function     string `json:"function"`
			} `json:"stacks"`
		} `json:"results"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		t.Fatal(err)
	}
	s := symbols{}
	for _, res := range resp.Results {
		for _, st := range res.Stacks {
			for _, f := range st {
				if f.Function == "" || f.Module == "" {
					continue // the server did not know the module
				}
				off, err := strconv.ParseUint(strings.TrimPrefix(f.ModuleOffset, "0x"), 16, 64)
				if err != nil {
					t.Fatalf("module_offset %q: %v", f.ModuleOffset, err)
				}
				if s[f.Module] == nil {
					s[f.Module] = map[uint64]string{}
				}
				s[f.Module][off] = f.Function
			}
		}
	}
	if len(s) == 0 {
		t.Fatal("the symbolication response names no frame")
	}
	return s
}

// lookup fits Options.Symbolize: by the library's debug name, then its name.
func (s symbols) lookup(lib Lib, addr uint64) (string, bool) {
	for _, n := range []string{lib.DebugName, lib.Name} {
		if f, ok := s[n][addr]; ok {
			return f, true
		}
	}
	return "", false
}

// TestSymbolize names the v49 file's frames through Options.Symbolize with
// the symbol server's answer for it.
func TestSymbolize(t *testing.T) {
	syms := symbolicationResponse(t)
	p := parseFile(t, "ffprofiler-samply-macos-unsymbolicated-v49.json", Options{Symbolize: syms.lookup})
	out := render(p)
	for _, want := range []string{
		"a.out;a.out (6274156);start;main;_pthread_join;__ulock_wait 60",
		"threadfunc(void*);fac(unsigned long)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "a.out+0x") {
		t.Errorf("a.out frames left unsymbolicated:\n%s", out)
	}
}

func TestErrors(t *testing.T) {
	base, err := os.ReadFile("testdata/ffprofiler-samply-macos-unsymbolicated-v49.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "truncated"},
		{"truncated", string(base[:len(base)/2]), "truncated"},
		{"not object", "[1,2]", "want an object"},
		{"no meta", `{"threads":[]}`, `no "meta"`},
		{"bad stack", `{"meta":{},"libs":[],"threads":[{"samples":{"stack":["x"]}}]}`, "threads[0].samples.stack"},
		{"stack out of range", `{"meta":{},"libs":[],"threads":[{"stringArray":["f"],"funcTable":{"name":[0]},"frameTable":{"func":[0]},"stackTable":{"frame":[0],"prefix":[null]},"samples":{"stack":[3]}}]}`, "outside the stackTable"},
		{"prefix loop", `{"meta":{},"libs":[],"threads":[{"stringArray":["f"],"funcTable":{"name":[0]},"frameTable":{"func":[0]},"stackTable":{"frame":[0,0],"prefix":[1,0]},"samples":{"stack":[1]}}]}`, "does not come before"},
		{"bad string", `{"meta":{},"libs":[],"threads":[{"stringArray":[],"funcTable":{"name":[4]},"frameTable":{"func":[0]},"stackTable":{"frame":[0],"prefix":[null]},"samples":{"stack":[0]}}]}`, "outside the string array"},
		{"length mismatch", `{"meta":{},"libs":[],"threads":[{"samples":{"stack":[0,0],"weight":[1]}}]}`, "weight column has 1"},
		{"negative weight", `{"meta":{},"libs":[],"threads":[{"samples":{"stack":[0],"weight":[-4]}}]}`, "non-negative"},
		{"no tables", `{"meta":{},"libs":[],"threads":[{"samples":{"stack":[0]}}]}`, "no stackTable"},
		{"gecko", `{"meta":{},"threads":[{"samples":{"schema":{},"data":[]}}]}`, "Gecko"},
		{"trailing", `{"meta":{}} {}`, "after the profile"},
		{"bad weightType", `{"meta":{},"libs":[],"threads":[{"stringArray":["f"],"funcTable":{"name":[0]},"frameTable":{"func":[0]},"stackTable":{"frame":[0],"prefix":[null]},"samples":{"stack":[0],"weightType":"joules"}}]}`, "weightType"},
		{"bad gzip", "\x1f\x8b\x08\x00garbage", "gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.in), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	var fe *FormatError
	_, err = Parse(strings.NewReader(`{"meta":{},"threads":[{"samples":{"stack":[true]}}]}`), Options{})
	if !errors.As(err, &fe) || fe.Pos() == 0 {
		t.Errorf("want a FormatError with a position, got %#v", err)
	}
	_, err = Parse(strings.NewReader(`{"meta":{},"libs":[],"threads":[{"samples":{"stack":[0,0,0]}}]}`), Options{MaxSamplesPerThread: 2})
	if err == nil || !strings.Contains(err.Error(), "more than 2") {
		t.Errorf("limit: %v", err)
	}
}

func TestNamesInput(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(path, []byte(`{"meta":`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFile(path, Options{}); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("error %v does not name the file", err)
	}
}

func seeds(f *testing.F) {
	ents, err := os.ReadDir("testdata")
	if err != nil {
		f.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".json") || strings.HasSuffix(e.Name(), ".gz") {
			data, err := os.ReadFile(filepath.Join("testdata", e.Name()))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
			n++
		}
	}
	if n == 0 {
		f.Fatal("no .json or .gz files in testdata to seed from")
	}
}

// FuzzParse: run with -fuzzminimizetime 0 (or a few seconds); minimizing
// an interesting 10–170 KB input otherwise takes the fuzzer minutes, during
// which it reports 0 execs/s.
func FuzzParse(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(bytes.NewReader(data), Options{MaxSamplesPerThread: 1 << 12, MaxFrames: 1 << 16})
		if err == nil {
			if err := p.CheckValid(); err != nil {
				t.Fatalf("invalid profile: %v", err)
			}
		}
	})
}

// genProfile streams a processed profile of `threads` threads, each with n
// samples cycling over a few deep stacks, without holding it in memory.
func genProfile(threads, n int) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		bw := bufioWriter(pw)
		fmt.Fprint(bw, `{"meta":{"interval":1,"startTime":1,"preprocessedProfileVersion":49,"sampleUnits":{"threadCPUDelta":"µs"}},"libs":[{"name":"app","path":"/app","codeId":"ab"}],"threads":[`)
		for th := 0; th < threads; th++ {
			if th > 0 {
				bw.WriteByte(',')
			}
			fmt.Fprintf(bw, `{"name":"worker","tid":%d,"pid":"1","processName":"app","stringArray":["main","work","0x1a2b","leaf"],"funcTable":{"length":4,"name":[0,1,2,3],"resource":[-1,-1,0,-1]},"resourceTable":{"length":1,"lib":[0]},"frameTable":{"length":4,"func":[0,1,2,3],"address":[-1,-1,6699,-1]},"stackTable":{"length":4,"frame":[0,1,2,3],"prefix":[null,0,1,2]},"samples":{"length":%d,"stack":[`, th+1, n)
			for i := 0; i < n; i++ {
				if i > 0 {
					bw.WriteByte(',')
				}
				bw.WriteByte('0' + byte(i%4))
			}
			bw.WriteString(`],"time":[`)
			var num []byte
			for i := 0; i < n; i++ {
				if i > 0 {
					bw.WriteByte(',')
				}
				num = strconv.AppendInt(num[:0], int64(i), 10)
				bw.Write(num)
				bw.WriteString(".5")
			}
			bw.WriteString(`],"weight":null,"threadCPUDelta":[`)
			for i := 0; i < n; i++ {
				if i > 0 {
					bw.WriteByte(',')
				}
				bw.WriteString("999")
			}
			bw.WriteString(`]}}`)
		}
		bw.WriteString(`]}`)
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
	p, err := Parse(genProfile(3, 1000), Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := render(p)
	if !strings.Contains(got, "# total weight 3000\n") || !strings.Contains(got, "app;worker (2);main;work;app+0x1a2b;leaf 250\n") {
		t.Errorf("got\n%s", got)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	io.Copy(zw, genProfile(1, 10))
	zw.Close()
	if p, err := Parse(&gz, Options{}); err != nil || len(p.Sample) != 4 {
		t.Errorf("gzip: %v", err)
	}
}
