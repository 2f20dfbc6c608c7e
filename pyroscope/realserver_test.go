package pyroscope_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"
	typesv1 "github.com/grafana/pyroscope/api/gen/proto/go/types/v1"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/pyroscope"
	"github.com/profcap/profcap/pyroscope/pyroscopetest"
)

// The tests in this file push to a real Grafana Pyroscope server
// (pyroscopetest.StartReal; scripts/pyroscope-build.sh builds it).

// documentedTypes are the profile type ids docs/pyroscope.md gives for
// each kind, as the server lists them (querier.v1 ProfileTypes).
var documentedTypes = map[string][]string{
	"cpu":       {"process_cpu:samples:count:cpu:nanoseconds", "process_cpu:cpu:nanoseconds:cpu:nanoseconds"},
	"wall":      {"wall:samples:count:wallclock:nanoseconds", "wall:time:nanoseconds:wallclock:nanoseconds"},
	"offcpu":    {"offcpu:offcpu:nanoseconds:offcpu:nanoseconds"},
	"wakeup":    {"wakeup:wakeup:nanoseconds:wakeup:nanoseconds"},
	"async":     {"async:busy:nanoseconds:busy:nanoseconds", "async:scheduled:nanoseconds:busy:nanoseconds", "async:idle:nanoseconds:busy:nanoseconds", "async:polls:count:busy:nanoseconds"},
	"heap":      {"memory:inuse_objects:count:space:bytes", "memory:inuse_space:bytes:space:bytes"},
	"allocs":    {"memory:alloc_objects:count:space:bytes", "memory:alloc_space:bytes:space:bytes"},
	"goroutine": {"goroutines:goroutine:count:goroutine:count"},
	"mutex":     {"mutex:contentions:count:contentions:count", "mutex:delay:nanoseconds:contentions:count"},
	"block":     {"block:contentions:count:contentions:count", "block:delay:nanoseconds:contentions:count"},
}

// fileTotals sums each sample type of the bundle's own file for the
// item, by the type id the kind documents: what the server must give
// back, computed without the push code.
func fileTotals(t *testing.T, dir string, it pyroscope.Item) map[string]int64 {
	t.Helper()
	p, err := bundle.LoadProfile(dir, it.Path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, id := range documentedTypes[it.Kind] {
		parts := strings.Split(id, ":")
		i := slices.IndexFunc(p.SampleType, func(st *profile.ValueType) bool { return st.Type == parts[1] && st.Unit == parts[2] })
		if i < 0 {
			t.Fatalf("%s/%s: the bundle's profile has no sample type %s/%s", it.Target, it.Kind, parts[1], parts[2])
		}
		for _, s := range p.Sample {
			out[id] += s.Value[i]
		}
	}
	return out
}

// serverTotals asks the server for every documented type of the item.
func serverTotals(t *testing.T, c *pyroscope.Client, captureID string, it pyroscope.Item) map[string]int64 {
	t.Helper()
	sel := pyroscope.Selector(map[string]string{pyroscope.LabelCapture: captureID, pyroscope.LabelTarget: it.Target, pyroscope.LabelKind: it.Kind})
	out := map[string]int64{}
	for _, id := range documentedTypes[it.Kind] {
		got, err := c.Totals(context.Background(), id, sel, nil, it.Start.Add(-time.Minute), it.End.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		out[id] = int64(got[""])
	}
	return out
}

func planOf(t *testing.T, dir string) (*bundle.Manifest, []pyroscope.Item) {
	t.Helper()
	m, err := bundle.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	items, err := pyroscope.Plan(m)
	if err != nil {
		t.Fatal(err)
	}
	return m, items
}

func realOpts(url string) pyroscope.Options {
	o := fast(url)
	o.Verify = true
	return o
}

func client(t *testing.T, url string) *pyroscope.Client {
	t.Helper()
	c, err := pyroscope.NewClient(pyroscope.ClientOptions{Server: url})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Every kind goes, lands under its documented profile type id, and the
// server gives back, per target, kind and profile type, the bundle's own
// totals: goroutines without a stack included, async with its dotted
// sample labels.
func TestRealServerStoresWhatIsPushed(t *testing.T) {
	for _, v := range pyroscopetest.RealVersions {
		t.Run(v, func(t *testing.T) { testStoresWhatIsPushed(t, v) })
	}
}

func testStoresWhatIsPushed(t *testing.T, version string) {
	srv := pyroscopetest.StartReal(t, version)
	dir := pyroscopetest.WriteKindsBundle(t, time.Now().Add(-30*time.Second).Truncate(time.Millisecond))
	m, items := planOf(t, dir)
	rep, err := pyroscope.Push(context.Background(), dir, realOpts(srv.URL))
	if err != nil {
		t.Fatalf("push: %v\nserver log:\n%s", err, srv.Log())
	}
	if n := rep.Count(pyroscope.StatusPushed); n != len(items) || rep.Verified() != len(items) {
		t.Fatalf("%d pushed, %d verified, want %d", n, rep.Verified(), len(items))
	}
	if !rep.ServerInfo.Known() || !strings.Contains(rep.ServerInfo.Version, strings.TrimPrefix(srv.Version, "v")) {
		t.Errorf("server info %+v, want version %s", rep.ServerInfo, srv.Version)
	}
	c := client(t, srv.URL)
	for _, it := range items {
		want, got := fileTotals(t, dir, it), serverTotals(t, c, m.ID, it)
		for id, w := range want {
			if w == 0 {
				t.Fatalf("%s/%s %s: the fixture has a zero total", it.Target, it.Kind, id)
			}
			if got[id] != w {
				t.Errorf("%s/%s %s: server %d, bundle %d", it.Target, it.Kind, id, got[id], w)
			}
		}
	}
	ids, err := c.ProfileTypes(context.Background(), time.Now().Add(-time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for kind, want := range documentedTypes {
		for _, id := range want {
			if !slices.Contains(ids, id) {
				t.Errorf("%s: server has no profile type %s (it has %v)", kind, id, ids)
			}
		}
	}
	for _, id := range ids {
		if strings.HasSuffix(id, "::") {
			t.Errorf("profile type %s has no period type", id)
		}
	}
	// tokio-console's task.id and tracing.target are series labels, named
	// as Pyroscope allows.
	series, err := c.Series(context.Background(), "async:busy:nanoseconds:busy:nanoseconds", pyroscope.Selector(map[string]string{pyroscope.LabelCapture: m.ID}), time.Now().Add(-time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var taskIDs []string
	for _, s := range series {
		if s["task_id"] != "" {
			taskIDs = append(taskIDs, s["task_id"]+"/"+s["tracing_target"])
		}
	}
	slices.Sort(taskIDs)
	if !slices.Equal(taskIDs, []string{"12/refsvc::server", "13/refsvc::cache"}) {
		t.Errorf("async series task_id/tracing_target: %v (series %v)", taskIDs, series)
	}
	// pushed.json says what was verified.
	st, err := pyroscope.ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := st.Destinations[0]
	if d.ServerInfo == nil || d.ServerInfo.Version == "" || len(d.Profiles) != len(items) {
		t.Fatalf("pushed.json destination %+v", d)
	}
	for _, p := range d.Profiles {
		if p.Verified == "" || len(p.Totals) == 0 {
			t.Errorf("pushed.json %s/%s: verified %q, totals %v", p.Target, p.Kind, p.Verified, p.Totals)
		}
	}
}

// A server killed after the push and started again has lost what its
// ingester held (no WAL in v1): push --verify finds exactly what is
// missing and sends exactly that; a push without --verify notices the
// server is not the one pushed.json recorded and does the same.
func TestRealServerKilledAfterPushGetsWhatItLost(t *testing.T) {
	srv := pyroscopetest.StartReal(t, "")
	dir := pyroscopetest.WriteKindsBundle(t, time.Now().Add(-30*time.Second).Truncate(time.Millisecond))
	m, items := planOf(t, dir)
	if _, err := pyroscope.Push(context.Background(), dir, realOpts(srv.URL)); err != nil {
		t.Fatal(err)
	}
	c := client(t, srv.URL)
	held := func() int {
		n := 0
		for _, it := range items {
			if serverTotals(t, c, m.ID, it)[documentedTypes[it.Kind][0]] != 0 {
				n++
			}
		}
		return n
	}
	if n := held(); n != len(items) {
		t.Fatalf("before the kill the server holds %d of %d", n, len(items))
	}
	restart := func() {
		t.Helper()
		srv.Kill()
		time.Sleep(1100 * time.Millisecond) // a start time at least one second later
		srv.Restart(false)
		if n := held(); n != 0 {
			t.Fatalf("after SIGKILL and restart the server still holds %d of %d profiles: the test proves nothing", n, len(items))
		}
	}

	// push --verify: everything is missing, everything goes again.
	restart()
	rep, err := pyroscope.Push(context.Background(), dir, realOpts(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Resent() != len(items) || rep.Verified() != len(items) {
		t.Errorf("push --verify after the restart: %d re-sent, %d verified; want %d", rep.Resent(), rep.Verified(), len(items))
	}
	if n := held(); n != len(items) {
		t.Errorf("after push --verify the server holds %d of %d", n, len(items))
	}

	// A plain push notices the server is not the one pushed.json recorded
	// and checks; it is interrupted after 3 profiles, so the server holds
	// 3 and pushed.json lists all.
	restart()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := fast(srv.URL)
	opts.Concurrency = 1
	sent := 0
	opts.Progress = func(r pyroscope.Result) {
		if r.Status == pyroscope.StatusPushed {
			if sent++; sent == 3 {
				cancel()
			}
		}
	}
	rep, _ = pyroscope.Push(ctx, dir, opts)
	if len(rep.Notes) == 0 || !strings.Contains(rep.Notes[0], "is not the server pushed.json recorded") {
		t.Errorf("no note about the restarted server: %q", rep.Notes)
	}
	if sent != 3 || rep.Resent() != 3 || held() != 3 {
		t.Fatalf("interrupted push: %d sent, %d re-sent, server holds %d; want 3", sent, rep.Resent(), held())
	}
	// push --verify sends exactly the others.
	rep, err = pyroscope.Push(context.Background(), dir, realOpts(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	if n := rep.Count(pyroscope.StatusPushed); n != len(items)-3 || rep.Resent() != len(items)-3 || rep.Count(pyroscope.StatusSkipped) != 3 || rep.Verified() != len(items) {
		t.Errorf("push --verify: %d pushed (%d re-sent), %d skipped, %d verified; want %d, %d, 3, %d",
			n, rep.Resent(), rep.Count(pyroscope.StatusSkipped), rep.Verified(), len(items)-3, len(items)-3, len(items))
	}
	if n := held(); n != len(items) {
		t.Errorf("finally the server holds %d of %d", n, len(items))
	}
	t.Logf("%d profiles; re-sent after the kill: all, then %d of the %d missing", len(items), rep.Resent(), len(items)-3)
}

// A bundle pushed twice is stored once: the second push, with pushed.json
// gone, finds every profile on the server and sends none; and a forced
// second copy (same labels, same time) is not counted twice.
func TestRealServerPushTwiceStoresOnce(t *testing.T) {
	srv := pyroscopetest.StartReal(t, "")
	dir := pyroscopetest.WriteKindsBundle(t, time.Now().Add(-30*time.Second).Truncate(time.Millisecond))
	m, items := planOf(t, dir)
	if _, err := pyroscope.Push(context.Background(), dir, realOpts(srv.URL)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, pyroscope.StateFile)); err != nil {
		t.Fatal(err)
	}
	rep, err := pyroscope.Push(context.Background(), dir, realOpts(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	if n := rep.Count(pyroscope.StatusStored); n != len(items) || rep.Count(pyroscope.StatusPushed) != 0 {
		t.Errorf("second push: %d found stored, %d pushed; want %d and 0", n, rep.Count(pyroscope.StatusPushed), len(items))
	}
	opts := realOpts(srv.URL)
	opts.Force = true
	rep, err = pyroscope.Push(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("forced push: %v", err)
	}
	if n := rep.Count(pyroscope.StatusPushed); n != len(items) || rep.Verified() != len(items) {
		t.Errorf("forced push: %d pushed, %d verified", n, rep.Verified())
	}
	c := client(t, srv.URL)
	for _, it := range items {
		want, got := fileTotals(t, dir, it), serverTotals(t, c, m.ID, it)
		for id, w := range want {
			if got[id] != w {
				t.Errorf("after two copies %s/%s %s: server %d, bundle %d", it.Target, it.Kind, id, got[id], w)
			}
		}
	}
}

// A bundle older than the server's ingestion window is refused with one
// message naming the setting that allows it; with the setting, it goes.
func TestRealServerOldBundleOneMessage(t *testing.T) {
	srv := pyroscopetest.StartReal(t, "")
	dir := pyroscopetest.WriteKindsBundle(t, time.Now().Add(-3*time.Hour).Truncate(time.Millisecond))
	_, items := planOf(t, dir)
	opts := fast(srv.URL)
	opts.Concurrency = 1
	rep, err := pyroscope.Push(context.Background(), dir, opts)
	var pe *pyroscope.PushError
	if !errors.As(err, &pe) || len(pe.Failed) != len(items) {
		t.Fatalf("push of a 3 h old bundle: %v", err)
	}
	msg := err.Error()
	if strings.Count(msg, "-validation.reject-older-than") != 1 || !strings.Contains(msg, "older than its ingestion window") {
		t.Errorf("message does not name the setting once:\n%s", msg)
	}
	tried := 0
	for _, r := range rep.Results {
		var le *pyroscope.LimitError
		if !errors.As(r.Err, &le) {
			t.Errorf("%s/%s: %v, want a LimitError", r.Target, r.Kind, r.Err)
		}
		if r.Tries > 0 {
			tried++
		}
	}
	// The profiles at least as old as one refused are not sent.
	if tried >= len(items) {
		t.Errorf("%d of %d profiles were sent to be refused one by one", tried, len(items))
	}
	t.Logf("%d of %d sent; message: %s", tried, len(items), msg)

	open := pyroscopetest.StartReal(t, "", "-validation.reject-older-than=0s")
	rep, err = pyroscope.Push(context.Background(), dir, realOpts(open.URL))
	if err != nil || rep.Verified() != len(items) {
		t.Fatalf("with -validation.reject-older-than=0s: %v (%d verified)", err, rep.Verified())
	}
}

// pyroscope:URL queries read back what was pushed, per kind, as one
// profile with the kind's sample types.
func TestRealServerQueryInput(t *testing.T) {
	srv := pyroscopetest.StartReal(t, "")
	start := time.Now().Add(-30 * time.Second).Truncate(time.Millisecond)
	dir := pyroscopetest.WriteKindsBundle(t, start)
	m, items := planOf(t, dir)
	if _, err := pyroscope.Push(context.Background(), dir, realOpts(srv.URL)); err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		ref := srv.URL + "?service=" + serviceOf(it) + "&kind=" + it.Kind + "&target=" + it.Target + "&capture=" + m.ID + "&from=-1h&to=now"
		p, origin, err := pyroscope.OpenQuery(context.Background(), ref)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if !strings.HasPrefix(origin, "pyroscope:"+srv.URL) {
			t.Errorf("origin %q", origin)
		}
		want := fileTotals(t, dir, it)
		if len(p.SampleType) != len(want) {
			t.Errorf("%s/%s: the query's profile has sample types %v", it.Target, it.Kind, p.SampleType)
		}
		for _, id := range documentedTypes[it.Kind] {
			parts := strings.Split(id, ":")
			i := slices.IndexFunc(p.SampleType, func(st *profile.ValueType) bool { return st.Type == parts[1] && st.Unit == parts[2] })
			var sum int64
			for _, s := range p.Sample {
				sum += s.Value[i]
			}
			if sum != want[id] {
				t.Errorf("%s/%s %s: query gives %d, bundle %d", it.Target, it.Kind, id, sum, want[id])
			}
		}
	}
	_, _, err := pyroscope.OpenQuery(context.Background(), srv.URL+"?service=nobody&kind=cpu")
	if err == nil || !strings.Contains(err.Error(), "holds no process_cpu:cpu:nanoseconds:cpu:nanoseconds profile matching {service_name=\"nobody\"}") {
		t.Errorf("query for nothing: %v", err)
	}
}

func serviceOf(it pyroscope.Item) string {
	for _, l := range it.Labels {
		if l.Name == pyroscope.LabelServiceName {
			return l.Value
		}
	}
	return ""
}

// Why sample labels are sanitised: v1.6.0 refuses a profile whose sample
// label is named as tokio-console names task fields; v1.21.1 renames it
// itself. The same profile through Push goes to both.
func TestRealServerDottedSampleLabels(t *testing.T) {
	for _, v := range pyroscopetest.RealVersions {
		t.Run(v, func(t *testing.T) {
			srv := pyroscopetest.StartReal(t, v)
			p := pyroscopetest.KindProfile("async", "worker-rust-1")
			p.PeriodType = &profile.ValueType{Type: "busy", Unit: "nanoseconds"}
			p.TimeNanos = time.Now().Add(-10 * time.Second).UnixNano()
			var buf bytes.Buffer
			if err := p.Write(&buf); err != nil {
				t.Fatal(err)
			}
			req := &pushv1.PushRequest{Series: []*pushv1.RawProfileSeries{{
				Labels:  []*typesv1.LabelPair{{Name: "__name__", Value: "async"}, {Name: "service_name", Value: "raw"}},
				Samples: []*pushv1.RawSample{{RawProfile: buf.Bytes()}},
			}}}
			_, err := pushv1connect.NewPusherServiceClient(http.DefaultClient, srv.URL).Push(context.Background(), connect.NewRequest(req))
			refuses := v == "v1.6.0"
			if refuses && (err == nil || !strings.Contains(err.Error(), "invalid label name 'task.id'")) {
				t.Errorf("%s took task.id as a label name: %v", v, err)
			}
			if !refuses && err != nil {
				t.Errorf("%s: %v", v, err)
			}
			dir := pyroscopetest.WriteKindsBundle(t, time.Now().Add(-30*time.Second).Truncate(time.Millisecond))
			if rep, err := pyroscope.Push(context.Background(), dir, realOpts(srv.URL)); err != nil || rep.Verified() != len(rep.Results) {
				t.Fatalf("push to %s: %v", v, err)
			}
		})
	}
}
