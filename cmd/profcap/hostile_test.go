package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

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
		if mode == nil && !strings.Contains(stdout+stderr, `evil\x1b]0;pwned\x07title`) {
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
