package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
)

// hostileNames are frame names a profile from a target may carry: each
// would act on a terminal if printed raw (set the title, clear the screen,
// return the carriage, an 8-bit CSI, reorder the line).
var hostileNames = []string{
	"evil\x1b]0;pwned\x07title",
	"clear\x1b[2Jscreen",
	"over\rwrite",
	"csi\u009b31mred",
	"bidi\u202egnp.exe",
}

// terminalBytes are the bytes none of profcap's output may contain.
var terminalBytes = []string{"\x1b", "\x07", "\r", "\u009b", "\u202e"}

func hostileProfile(t *testing.T) []byte {
	t.Helper()
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "inuse_space", Unit: "bytes"}},
		PeriodType: &profile.ValueType{Type: "space", Unit: "bytes"}, Period: 512 << 10,
	}
	for i, n := range hostileNames {
		f := &profile.Function{ID: uint64(i + 1), Name: n, SystemName: n, Filename: n}
		l := &profile.Location{ID: uint64(i + 1), Line: []profile.Line{{Function: f}}}
		p.Function, p.Location = append(p.Function, f), append(p.Location, l)
		p.Sample = append(p.Sample, &profile.Sample{Location: []*profile.Location{l}, Value: []int64{int64(1000 * (i + 1))}})
	}
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func checkNoTerminalBytes(t *testing.T, what, s string) {
	t.Helper()
	for _, b := range terminalBytes {
		if strings.Contains(s, b) {
			t.Errorf("%s holds %q:\n%q", what, b, s)
		}
	}
}

// Frame names with terminal controls reach no terminal raw: not in the
// live lines, the summary, the problems, nor --json; not from flame.
func TestHostileFrameNamesNeverReachTheTerminal(t *testing.T) {
	body := hostileProfile(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/debug/pprof/heap":
			w.Write(body)
		case "/debug/pprof/goroutine":
			http.Error(w, "boom \x1b[2J\u009b"+hostileNames[0], http.StatusInternalServerError)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	for _, mode := range [][]string{nil, {"--json"}} {
		out := filepath.Join(t.TempDir(), "b")
		args := append([]string{"record", "--url", srv.URL + "/debug/pprof", "--profiles", "heap,goroutine", "--duration", "1s", "--out", out}, mode...)
		stdout, stderr, code := runCLI(t, args...)
		if code != 3 {
			t.Errorf("%v: exit %d, want 3 (goroutine fails)\n%s%s", mode, code, stdout, stderr)
		}
		checkNoTerminalBytes(t, "stdout", stdout)
		checkNoTerminalBytes(t, "stderr", stderr)
		// The summary names the top three functions: the heaviest hostile
		// names, escaped.
		if mode == nil && (!strings.Contains(stdout+stderr, `bidi\u202egnp.exe`) || !strings.Contains(stdout+stderr, `csi\u009b31mred`)) {
			t.Errorf("the summary should show the hostile name escaped:\n%s%s", stdout, stderr)
		}
		// flame on the captured file prints nothing raw either.
		fo, fe, fcode := runCLI(t, "flame", "--format", "svg", "-o", filepath.Join(out, "x.svg"), filepath.Join(out, "targets", "127.0.0.1_"+strings.Split(srv.URL, ":")[2], "heap.pb.gz"))
		if fcode != 0 {
			t.Errorf("flame: exit %d %s", fcode, fe)
		}
		checkNoTerminalBytes(t, "flame stdout", fo)
		checkNoTerminalBytes(t, "flame stderr", fe)
	}
}

// A URL with credentials: the password is in no output of targets or
// record, nor in the manifest.
func TestTargetsNeverPrintsPasswords(t *testing.T) {
	const pass = "hunter2-SECRET"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "denied", http.StatusForbidden)
	}))
	defer srv.Close()
	u := strings.Replace(srv.URL, "http://", "http://admin:"+pass+"@", 1) + "/debug/pprof"
	for _, args := range [][]string{
		{"targets", "--url", u},
		{"targets", "--url", u, "--url", "http://admin:" + pass + "@127.0.0.1:1/debug/pprof"},
		{"record", "--url", u, "--profiles", "heap", "--duration", "1s", "--out", filepath.Join(t.TempDir(), "b")},
		{"record", "--url", u, "--profiles", "heap", "--duration", "1s", "--json", "--out", filepath.Join(t.TempDir(), "b")},
	} {
		stdout, stderr, _ := runCLI(t, args...)
		if strings.Contains(stdout+stderr, pass) {
			t.Errorf("%v printed the password:\n%s%s", args[0], stdout, stderr)
		}
		if args[0] == "record" {
			dir := args[len(args)-1]
			if args[len(args)-2] == "--json" {
				dir = args[len(args)-1]
			}
			filepath.Walk(filepath.Dir(dir), func(p string, info os.FileInfo, err error) error {
				if err == nil && info.Mode().IsRegular() {
					if data, _ := os.ReadFile(p); bytes.Contains(data, []byte(pass)) {
						t.Errorf("%s holds the password", p)
					}
				}
				return nil
			})
		}
	}
}

// Four captures started together in one directory with the default --out:
// four bundles, four exits 0.
func TestParallelRecordsNeverShareABundle(t *testing.T) {
	body := hostileProfile(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/debug/pprof/heap" {
			w.Write(body)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	dir := t.TempDir()
	wd, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	var wg sync.WaitGroup
	codes := make([]int, 4)
	outs := make([]string, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out, errb bytes.Buffer
			err := run(t.Context(), []string{"record", "--url", srv.URL + "/debug/pprof", "--profiles", "heap", "--duration", "1s", "--quiet"}, &out, &errb)
			codes[i], outs[i] = exitCode(err), strings.TrimSpace(out.String())
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range 4 {
		if codes[i] != 0 {
			t.Errorf("run %d: exit %d (%s)", i, codes[i], outs[i])
		}
		lines := strings.Split(outs[i], "\n")
		b := lines[len(lines)-1]
		if seen[b] {
			t.Errorf("two runs wrote %s", b)
		}
		seen[b] = true
		if m, err := bundle.Read(b); err != nil || m.Status != bundle.StatusOK {
			t.Errorf("%s: %v", b, err)
		}
	}
}

// runMeasured runs the real profcap binary and returns its output, exit
// code and peak resident memory, read from the child's VmHWM while it
// runs (the rusage of a child started with vfork reports the parent's
// memory at the fork, which here is the test's own).
func runMeasured(t *testing.T, bin string, args ...string) (string, int, int64) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var peak atomic.Int64
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)); err == nil {
				for _, line := range strings.Split(string(st), "\n") {
					if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
						var kb int64
						fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
						peak.Store(max(peak.Load(), kb<<10))
					}
				}
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code, peak.Load()
}

// A target whose profiles are 1 MiB gzip streams inflating to 1 GiB costs
// only itself: profcap stays under 500 MB, that target fails saying the
// profile was too large, the healthy target beside it is complete.
func TestGzipBombCostsOnlyItsTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("builds profcap and inflates bombs")
	}
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for range 1024 {
		zw.Write(zero)
	}
	zw.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bomb.Bytes())
	}))
	defer bad.Close()
	good := hostileProfile(t)
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(good)
	}))
	defer healthy.Close()
	bin := demoBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "profcap.yaml")
	os.WriteFile(cfg, []byte("targets:\n  - name: bomb\n    pprof: "+bad.URL+"/debug/pprof\n  - name: healthy\n    pprof: "+healthy.URL+"/debug/pprof\n"), 0o644)
	out := filepath.Join(dir, "b")
	text, code, rss := runMeasured(t, bin, "record", "--config", cfg, "--all", "--profiles", "heap,goroutine,allocs,mutex,block", "--duration", "1s", "--out", out)
	t.Logf("peak RSS %d MiB", rss>>20)
	if code != 3 {
		t.Errorf("exit %d, want 3\n%s", code, text)
	}
	if rss > 500<<20 {
		t.Errorf("peak RSS %d MiB, want under 500 MiB", rss>>20)
	}
	m, err := bundle.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m.Target("bomb").Profiles {
		if p.Status != bundle.StatusFailed || !strings.Contains(p.Error, "larger than the 256 MiB limit") {
			t.Errorf("bomb %s: %s %q", p.Kind, p.Status, p.Error)
		}
	}
	if st := m.Target("healthy").Status; st != bundle.StatusOK {
		t.Errorf("healthy target: %s", st)
	}
}

// A target serving a valid profile of a million samples 72 frames deep:
// the capture and the report complete within the memory budget, and the
// manifest says what was cut.
func TestHugeProfileIsCutNotFatal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds profcap and a 1M-sample profile")
	}
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "inuse_objects", Unit: "count"}, {Type: "inuse_space", Unit: "bytes"}},
		PeriodType: &profile.ValueType{Type: "space", Unit: "bytes"}, Period: 512 << 10,
	}
	for i := range 5000 {
		f := &profile.Function{ID: uint64(i + 1), Name: fmt.Sprintf("pkg.func%d", i)}
		p.Function = append(p.Function, f)
		p.Location = append(p.Location, &profile.Location{ID: uint64(i + 1), Line: []profile.Line{{Function: f}}})
	}
	rnd := mrand.New(mrand.NewPCG(1, 2))
	for range 1_000_000 {
		st := make([]*profile.Location, 72)
		for d := range st {
			st[d] = p.Location[rnd.IntN(5000)]
		}
		p.Sample = append(p.Sample, &profile.Sample{Location: st, Value: []int64{1, 1024}})
	}
	var body bytes.Buffer
	if err := p.Write(&body); err != nil {
		t.Fatal(err)
	}
	p = nil
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/debug/pprof/heap" {
			w.Write(body.Bytes())
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	bin := demoBinary(t)
	out := filepath.Join(t.TempDir(), "b")
	text, code, rss := runMeasured(t, bin, "record", "--url", srv.URL+"/debug/pprof", "--profiles", "heap", "--duration", "1s", "--out", out)
	t.Logf("body %d MiB, peak RSS %d MiB", body.Len()>>20, rss>>20)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, text)
	}
	if rss > 1<<30 {
		t.Errorf("peak RSS %d MiB, over the 1 GiB budget", rss>>20)
	}
	m, err := bundle.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	e := m.Targets[0].Profile(bundle.Heap)
	if e.Status != bundle.StatusOK || !strings.Contains(e.Note, "1000000 samples were more than 250000") || m.Report == "" {
		t.Errorf("heap %+v, report %q", e, m.Report)
	}
	if _, err := os.Stat(filepath.Join(out, "report.html")); err != nil {
		t.Error(err)
	}
}

// Long bad input is echoed cut, not whole.
func TestLongBadInputIsEchoedCut(t *testing.T) {
	long := strings.Repeat("y", 5000)
	for _, args := range [][]string{
		{"record", "--profiles", long},
		{"record", "--target", long, "--duration", "1s"},
		{"flame", long},
	} {
		_, stderr, code := runCLI(t, args...)
		if code == 0 || len(stderr) > 1500 || strings.Contains(stderr, long) {
			t.Errorf("%v: exit %d, %d bytes of stderr", args[:2], code, len(stderr))
		}
	}
}
