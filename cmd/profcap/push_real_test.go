package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/testsvc"
	"github.com/profcap/profcap/pyroscope"
	"github.com/profcap/profcap/pyroscope/pyroscopetest"
)

// The tests in this file push to a real Grafana Pyroscope server
// (pyroscopetest.StartReal; scripts/pyroscope-build.sh builds it).

// A capture of the demo cluster with every kind it gives, pushed with
// --verify: every profile goes and the server gives back, per target,
// kind and profile type, the bundle's totals. Then a fresh capture is
// diffed against the first as the server stores it.
func TestPushRealServerDemoCapture(t *testing.T) {
	srv := pyroscopetest.StartReal(t, "")
	bin := profcapBinary(t)
	dir := t.TempDir()
	// run wants exit status wantCode (3: 0 or 3).
	run := func(wantCode int, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = filepath.Join(dir, "cluster")
		if args[0] == "demo" {
			cmd.Dir = dir
		}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("profcap %s: %v", strings.Join(args, " "), err)
		}
		if code != wantCode && !(wantCode == 3 && code == 0) {
			t.Fatalf("profcap %s: exit %d, want %d\n%s", strings.Join(args, " "), code, wantCode, out)
		}
		return string(out)
	}
	run(0, "demo", "--detach", "--free-ports", "--dir", "cluster")
	defer exec.Command(bin, "demo", "--stop", "--dir", filepath.Join(dir, "cluster")).Run()
	// Exit 3 (partial) is fine: on a loaded machine a collector can miss
	// the window; push sends what was captured.
	run(3, "record", "--all", "--overhead", "full", "--duration", "3s", "--out", "capture")
	capture := filepath.Join(dir, "cluster", "capture")
	m, err := bundle.Read(capture)
	if err != nil {
		t.Fatal(err)
	}
	items, err := pyroscope.Plan(m)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, it := range items {
		kinds[it.Kind] = true
	}
	for _, k := range []string{"cpu", "wall", "heap", "allocs", "goroutine", "async"} {
		if !kinds[k] {
			t.Errorf("the demo capture has no %s profile to push", k)
		}
	}

	out := run(0, "push", capture, "--server", srv.URL, "--verify")
	want := regexp.MustCompile(`pushed (\d+) of (\d+) profiles to ` + regexp.QuoteMeta(srv.URL) + `, (\d+) verified`)
	mm := want.FindStringSubmatch(out)
	if mm == nil || mm[1] != mm[2] || mm[1] != mm[3] || mm[1] != strconv.Itoa(len(items)) {
		t.Fatalf("push --verify output:\n%s\nserver log:\n%s", out, srv.Log())
	}

	// Independently of the push code: the bundle's files' totals against
	// the server's, for every target, kind and sample type.
	c, err := pyroscope.NewClient(pyroscope.ClientOptions{Server: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, it := range items {
		pr, err := pyroscope.Prepare(capture, it)
		if err != nil {
			t.Fatal(err)
		}
		sel := pyroscope.Selector(map[string]string{pyroscope.LabelCapture: m.ID, pyroscope.LabelTarget: it.Target, pyroscope.LabelKind: it.Kind})
		file, err := bundle.LoadProfile(capture, it.Path)
		if err != nil {
			t.Fatal(err)
		}
		for _, tot := range pr.Totals {
			parts := strings.Split(tot.Type, ":")
			var fileSum int64
			for i, st := range file.SampleType {
				if st.Type == parts[1] && st.Unit == parts[2] {
					for _, s := range file.Sample {
						fileSum += s.Value[i]
					}
				}
			}
			got, err := c.Totals(context.Background(), tot.Type, sel, nil, it.Start.Add(-time.Minute), it.End.Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if int64(got[""]) != fileSum {
				t.Errorf("%s/%s %s: server %d, bundle file %d", it.Target, it.Kind, tot.Type, int64(got[""]), fileSum)
			}
			checked++
		}
	}
	var ks []string
	for k := range kinds {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	t.Logf("%d profiles of %d kinds (%s), %d totals equal", len(items), len(kinds), strings.Join(ks, " "), checked)

	// A second push stores nothing twice: it sends nothing.
	out = run(0, "push", capture, "--server", srv.URL, "--verify")
	if !strings.Contains(out, "pushed 0 of "+strconv.Itoa(len(items))+" profiles") {
		t.Errorf("second push:\n%s", out)
	}

	// diff: the same service as the server stores it, against a fresh
	// capture.
	// (heap: an idle demo service may take no cpu sample in 2 s.)
	run(3, "record", "--target", "orchestration-1", "--profiles", "heap,goroutine", "--duration", "2s", "--out", "fresh")
	ref := "pyroscope:" + srv.URL + "?service=orchestration-1&kind=heap&capture=" + m.ID + "&from=-1h&to=now"
	svg := filepath.Join(dir, "diff.svg")
	out = run(0, "diff", ref, filepath.Join(dir, "cluster", "fresh", "targets", "orchestration-1", "heap.pb.gz"), "-o", svg)
	page, err := os.ReadFile(svg)
	if err != nil {
		t.Fatalf("diff wrote nothing: %v\n%s", err, out)
	}
	// A frame per <title>; the title names the query.
	if strings.Count(string(page), "<title>") < 3 || !strings.Contains(string(page), "service=orchestration-1&amp;kind=heap") || strings.Contains(string(page), "no samples") {
		t.Errorf("diff has no frames or does not name the query:\n%.3000s", page)
	}
	out = run(0, "flame", "pyroscope:"+srv.URL+"?service=orchestration-1&kind=goroutine&from=-1h", "--format", "folded")
	if !strings.Contains(out, ";") {
		t.Errorf("flame of a goroutine query:\n%.500s", out)
	}
	// A query the server has nothing for says what it has.
	out = run(1, "diff", "pyroscope:"+srv.URL+"?service=nobody&kind=cpu", filepath.Join(dir, "cluster", "fresh", "targets", "orchestration-1", "cpu.pb.gz"), "-o", svg)
	if !strings.Contains(out, "holds no process_cpu:cpu:nanoseconds:cpu:nanoseconds profile matching {service_name=\"nobody\"}") || !strings.Contains(out, "profile types it holds then:") {
		t.Errorf("diff of an empty query:\n%s", out)
	}
}

// record --push pushes, verifies and prints the count; exit status 0.
func TestRecordPushRealServer(t *testing.T) {
	srv := pyroscopetest.StartReal(t, "")
	svc := testsvc.Start(t, testsvc.Normal, false)
	dir := filepath.Join(t.TempDir(), "cap")
	_, stderr, code := runCLI(t, "record", "--url", svc.URL(), "--duration", "1s", "--profiles", "heap,goroutine", "--out", dir, "--push", srv.URL)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "pushed 2 of 2 profile(s) to "+srv.URL+", 2 verified (the server's totals equal the bundle's)") {
		t.Errorf("stderr:\n%s", stderr)
	}
}
