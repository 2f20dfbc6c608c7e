package pyroscope_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/pyroscope"
	"github.com/profcap/profcap/pyroscope/pyroscopetest"
)

// fast keeps retries quick in tests; the backoff schedule itself is the
// same code as in production.
func fast(server string) pyroscope.Options {
	return pyroscope.Options{Server: server, MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, Timeout: 10 * time.Second}
}

// wantPushed is what WriteBundle's bundle pushes: target/kind.
var wantPushed = []string{
	"orchestration-1/allocs", "orchestration-1/cpu", "orchestration-1/goroutine", "orchestration-1/heap",
	"worker-1/cpu", "worker-1/wall",
}

func key(r pyroscopetest.Received) string {
	return r.Labels["profcap_target"] + "/" + r.Labels["profcap_kind"]
}

func keys(rs []pyroscopetest.Received) []string {
	var ks []string
	for _, r := range rs {
		ks = append(ks, key(r))
	}
	sort.Strings(ks)
	return ks
}

func TestPushLabelsTimeRangeAndPprof(t *testing.T) {
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	m, err := bundle.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := os.ReadFile(filepath.Join(dir, bundle.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	opts := fast(srv.URL)
	opts.Credentials = pyroscope.Credentials{Token: "t0ken", Tenant: "team-a"}
	rep, err := pyroscope.Push(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if n := rep.Count(pyroscope.StatusPushed); n != len(wantPushed) {
		t.Errorf("pushed %d profiles, want %d", n, len(wantPushed))
	}
	got := srv.Received()
	if k := keys(got); fmt.Sprint(k) != fmt.Sprint(wantPushed) {
		t.Fatalf("server got %v, want %v (no failed, no merged profiles)", k, wantPushed)
	}
	wantName := map[string]string{"cpu": "process_cpu", "heap": "memory", "allocs": "memory", "goroutine": "goroutines", "wall": "wall"}
	for _, r := range got {
		tgt, kind := r.Labels["profcap_target"], r.Labels["profcap_kind"]
		var mt *bundle.Target
		var mp *bundle.Profile
		for _, t := range m.Targets {
			for _, p := range t.Profiles {
				if t.Name == tgt && string(p.Kind) == kind {
					mt, mp = t, p
				}
			}
		}
		if mp == nil {
			t.Fatalf("%s: not in the manifest", key(r))
		}
		want := map[string]string{
			"__name__":        wantName[kind],
			"profcap_capture": pyroscopetest.BundleID,
			"profcap_kind":    kind,
			"profcap_target":  tgt,
		}
		for k, v := range mt.Labels {
			want[strings.ReplaceAll(k, ".", "_")] = v
		}
		want["service_name"] = tgt
		if s := mt.Labels["service"]; s != "" {
			want["service_name"] = s
		}
		if kind != "heap" && kind != "goroutine" {
			want["__delta__"] = "false"
		}
		if fmt.Sprint(r.Labels) != fmt.Sprint(want) {
			t.Errorf("%s: labels\n got %v\nwant %v", key(r), r.Labels, want)
		}
		start, _ := time.Parse(bundle.TimeFormat, mp.Start)
		end, _ := time.Parse(bundle.TimeFormat, mp.End)
		if r.Profile.TimeNanos != start.UnixNano() || r.Profile.DurationNanos != end.Sub(start).Nanoseconds() {
			t.Errorf("%s: time %d+%d, want %d+%d (the profile's own range from the manifest)", key(r),
				r.Profile.TimeNanos, r.Profile.DurationNanos, start.UnixNano(), end.Sub(start).Nanoseconds())
		}
		if r.ID != pyroscope.ProfileID(pyroscopetest.BundleID, tgt, kind) {
			t.Errorf("%s: id %s", key(r), r.ID)
		}
		if r.Auth != "Bearer t0ken" || r.Tenant != "team-a" {
			t.Errorf("%s: Authorization %q, X-Scope-OrgID %q", key(r), r.Auth, r.Tenant)
		}
		if len(r.Profile.Sample) == 0 {
			t.Errorf("%s: no samples", key(r))
		}
		var types []string
		for _, st := range r.Profile.SampleType {
			types = append(types, st.Type)
		}
		switch kind {
		case "heap":
			if fmt.Sprint(types) != "[inuse_objects inuse_space]" {
				t.Errorf("heap sample types %v, want only the in-use ones", types)
			}
		case "allocs":
			if fmt.Sprint(types) != "[alloc_objects alloc_space]" {
				t.Errorf("allocs sample types %v, want only the allocation ones", types)
			}
		}
	}

	// pushed.json lists every id for this server and tenant, mode 0640.
	st, err := os.Stat(filepath.Join(dir, pyroscope.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Errorf("%s mode %v, want 0640", pyroscope.StateFile, st.Mode().Perm())
	}
	state, err := pyroscope.ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range got {
		if !state.Pushed(srv.URL, "team-a", r.ID) {
			t.Errorf("%s: not in %s", key(r), pyroscope.StateFile)
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, pyroscope.StateFile))
	if strings.Contains(string(data), "t0ken") {
		t.Errorf("%s holds the token", pyroscope.StateFile)
	}

	// The manifest is untouched.
	if after, err := os.ReadFile(filepath.Join(dir, bundle.ManifestFile)); err != nil || string(after) != string(manifest) {
		t.Errorf("the manifest changed (%v)", err)
	}

	// Again: everything is skipped and nothing is sent. Another tenant on
	// the same server is another destination and gets everything.
	before := srv.Requests()
	rep, err = pyroscope.Push(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Count(pyroscope.StatusSkipped) != len(wantPushed) || srv.Requests() != before {
		t.Errorf("re-run: %d skipped, %d requests; want all skipped, none sent", rep.Count(pyroscope.StatusSkipped), srv.Requests()-before)
	}
	opts.Credentials.Tenant = "team-b"
	if _, err := pyroscope.Push(context.Background(), dir, opts); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Received()); n != 2*len(wantPushed) {
		t.Errorf("after pushing for a second tenant the server holds %d profiles, want %d", n, 2*len(wantPushed))
	}
}

func TestRetriesUntilServerRecovers(t *testing.T) {
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	srv.FailNext(http.StatusServiceUnavailable, http.StatusServiceUnavailable)
	rep, err := pyroscope.Push(context.Background(), dir, fast(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range srv.Received() {
		seen[r.ID]++
	}
	for _, r := range rep.Results {
		if seen[r.ID] != 1 {
			t.Errorf("%s/%s: received %d times, want exactly once", r.Target, r.Kind, seen[r.ID])
		}
	}
	if len(seen) != len(wantPushed) {
		t.Errorf("server got %d distinct profiles, want %d", len(seen), len(wantPushed))
	}
	if want := len(wantPushed) + 2; srv.Requests() != want {
		t.Errorf("%d requests, want %d (every profile once plus the two refused)", srv.Requests(), want)
	}
}

func TestServerDownGivesUpAfterBoundedTries(t *testing.T) {
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	fails := make([]int, 100)
	for i := range fails {
		fails[i] = http.StatusBadGateway
	}
	srv.FailNext(fails...)
	opts := fast(srv.URL)
	opts.Concurrency = 1
	rep, err := pyroscope.Push(context.Background(), dir, opts)
	var pe *pyroscope.PushError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a *PushError", err)
	}
	if len(pe.Failed) != len(wantPushed) {
		t.Errorf("%d failed, want %d", len(pe.Failed), len(wantPushed))
	}
	if want := len(wantPushed) * pyroscope.DefaultTries; srv.Requests() != want {
		t.Errorf("%d requests, want %d (%d tries each)", srv.Requests(), want, pyroscope.DefaultTries)
	}
	for _, r := range rep.Results {
		if r.Tries != pyroscope.DefaultTries {
			t.Errorf("%s/%s: %d tries", r.Target, r.Kind, r.Tries)
		}
	}
	if !strings.Contains(err.Error(), "HTTP 502") || !strings.Contains(err.Error(), "run the push again") {
		t.Errorf("error %q should give the status and say to run again", err)
	}
	if _, err := os.Stat(filepath.Join(dir, pyroscope.StateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("nothing went, yet %s was written (err %v)", pyroscope.StateFile, err)
	}
}

func TestUnauthorizedStopsWithClearError(t *testing.T) {
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	srv.RequireAuth(func(h http.Header) bool { return h.Get("Authorization") == "Bearer right" })
	opts := fast(srv.URL)
	opts.Concurrency = 1
	opts.Credentials.Token = "wrong-secret"
	rep, err := pyroscope.Push(context.Background(), dir, opts)
	var ae *pyroscope.AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want an *AuthError", err)
	}
	msg := err.Error()
	for _, want := range []string{srv.URL, "401", "invalid token", "check the token"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "wrong-secret") {
		t.Errorf("error %q shows the token", msg)
	}
	if srv.Requests() != 1 {
		t.Errorf("%d requests, want 1: a 401 is neither retried nor repeated for the other profiles", srv.Requests())
	}
	if rep.Count(pyroscope.StatusNotTried) != len(wantPushed)-1 {
		t.Errorf("%d not tried, want %d", rep.Count(pyroscope.StatusNotTried), len(wantPushed)-1)
	}
	if _, err := os.Stat(filepath.Join(dir, pyroscope.StateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s written after a refused push (err %v)", pyroscope.StateFile, err)
	}

	// The right token goes through.
	opts.Credentials.Token = "right"
	if _, err := pyroscope.Push(context.Background(), dir, opts); err != nil {
		t.Fatal(err)
	}
}

func TestRerunSendsOnlyWhatDidNotGo(t *testing.T) {
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	// The server refuses heap and wall profiles (a 400 is not retried).
	srv.Reject(func(r *pushv1.PushRequest) *connect.Error {
		for _, l := range r.Series[0].Labels {
			if l.Name == "profcap_kind" && (l.Value == "heap" || l.Value == "wall") {
				return connect.NewError(connect.CodeInvalidArgument, errors.New("profile too large"))
			}
		}
		return nil
	})
	_, err := pyroscope.Push(context.Background(), dir, fast(srv.URL))
	var pe *pyroscope.PushError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a *PushError", err)
	}
	var failed []string
	for _, r := range pe.Failed {
		failed = append(failed, r.Target+"/"+r.Kind)
	}
	sort.Strings(failed)
	if fmt.Sprint(failed) != "[orchestration-1/heap worker-1/wall]" {
		t.Errorf("failed %v", failed)
	}
	for _, want := range []string{"orchestration-1/heap", "worker-1/wall", "HTTP 400", "profile too large", "2 of 6"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	first := srv.Received()
	if len(first) != 4 {
		t.Fatalf("first run: server got %v", keys(first))
	}

	// The server accepts everything now: the re-run sends the two only.
	srv.Reject(nil)
	rep, err := pyroscope.Push(context.Background(), dir, fast(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	second := srv.Received()[len(first):]
	if fmt.Sprint(keys(second)) != "[orchestration-1/heap worker-1/wall]" {
		t.Errorf("re-run sent %v, want only what did not go", keys(second))
	}
	if rep.Count(pyroscope.StatusSkipped) != 4 || rep.Count(pyroscope.StatusPushed) != 2 {
		t.Errorf("re-run: %d skipped, %d pushed", rep.Count(pyroscope.StatusSkipped), rep.Count(pyroscope.StatusPushed))
	}

	// --force sends everything again.
	opts := fast(srv.URL)
	opts.Force = true
	if _, err := pyroscope.Push(context.Background(), dir, opts); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Received()) - len(first) - len(second); n != len(wantPushed) {
		t.Errorf("forced run sent %d, want %d", n, len(wantPushed))
	}
}

func TestDryRunContactsNoServer(t *testing.T) {
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	opts := fast(srv.URL)
	opts.DryRun = true
	rep, err := pyroscope.Push(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Requests() != 0 {
		t.Errorf("dry run made %d requests", srv.Requests())
	}
	if rep.Count(pyroscope.StatusDryRun) != len(wantPushed) {
		t.Errorf("%d would be pushed, want %d", rep.Count(pyroscope.StatusDryRun), len(wantPushed))
	}
	for _, r := range rep.Results {
		if r.Bytes == 0 {
			t.Errorf("%s/%s: no payload size", r.Target, r.Kind)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, pyroscope.StateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dry run wrote %s", pyroscope.StateFile)
	}
	// Without a server at all.
	if _, err := pyroscope.Push(context.Background(), dir, pyroscope.Options{DryRun: true}); err != nil {
		t.Fatal(err)
	}
}

func TestConnectionRefusedIsRetriedThenReported(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	dir := pyroscopetest.WriteBundle(t)
	opts := fast("http://" + addr)
	opts.Concurrency = 1
	rep, err := pyroscope.Push(context.Background(), dir, opts)
	if err == nil || !strings.Contains(err.Error(), "connecting to http://"+addr) {
		t.Fatalf("err = %v, want a connection error naming the server", err)
	}
	for _, r := range rep.Results {
		if r.Status != pyroscope.StatusFailed || r.Tries != pyroscope.DefaultTries {
			t.Errorf("%s/%s: %s after %d tries", r.Target, r.Kind, r.Status, r.Tries)
		}
	}
}

func TestCancelStopsAndKeepsWhatWent(t *testing.T) {
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	srv.Block()
	ctx, cancel := context.WithCancel(context.Background())
	opts := fast(srv.URL)
	done := make(chan error, 1)
	go func() {
		_, err := pyroscope.Push(ctx, dir, opts)
		done <- err
	}()
	// Cancel once the first request is in the server.
	for srv.Requests() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if len(srv.Received()) != 0 {
		t.Errorf("server accepted %d profiles while blocked", len(srv.Received()))
	}
}

func TestCredentialsInURLAreUsedNotRecorded(t *testing.T) {
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	srv.RequireAuth(func(h http.Header) bool {
		r := &http.Request{Header: h}
		u, p, ok := r.BasicAuth()
		return ok && u == "1234" && p == "pa55"
	})
	withCreds := strings.Replace(srv.URL, "http://", "http://1234:pa55@", 1)
	rep, err := pyroscope.Push(context.Background(), dir, fast(withCreds+"/"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Server != srv.URL {
		t.Errorf("report server %q, want %q", rep.Server, srv.URL)
	}
	data, err := os.ReadFile(filepath.Join(dir, pyroscope.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "pa55") || !strings.Contains(string(data), `"server": "`+srv.URL+`"`) {
		t.Errorf("%s:\n%s", pyroscope.StateFile, data)
	}
}

func TestProfileIDIsStableUUID(t *testing.T) {
	a := pyroscope.ProfileID("b1", "t", "cpu")
	if a != pyroscope.ProfileID("b1", "t", "cpu") {
		t.Error("not stable")
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(a) {
		t.Errorf("%s is not a version 5 UUID", a)
	}
	for _, b := range []string{pyroscope.ProfileID("b2", "t", "cpu"), pyroscope.ProfileID("b1", "u", "cpu"), pyroscope.ProfileID("b1", "t", "heap"), pyroscope.ProfileID("b1", "tc", "pu")} {
		if a == b {
			t.Errorf("collision: %s", b)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:secret@pyro.example:4040/prefix/?token=x#f": "https://pyro.example:4040/prefix",
		"http://127.0.0.1:4040":                                   "http://127.0.0.1:4040",
	} {
		if got := pyroscope.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCredentialsFromEnvAndFiles(t *testing.T) {
	t.Setenv(pyroscope.EnvToken, "")
	t.Setenv(pyroscope.EnvUser, "alice")
	t.Setenv(pyroscope.EnvPassword, "hunter2")
	t.Setenv(pyroscope.EnvTenant, "org-7")
	c, err := pyroscope.DefaultCredentialSource().Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if c.Username != "alice" || c.Password != "hunter2" || c.Tenant != "org-7" {
		t.Errorf("resolved %#v", c)
	}
	for _, s := range []string{c.String(), fmt.Sprintf("%v %+v %#v", c, c, c)} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("%q shows the password", s)
		}
	}
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = pyroscope.CredentialSource{TokenFile: tok}.Resolve()
	if err != nil || c.Token != "from-file" {
		t.Errorf("token file: %q, %v", c.Token, err)
	}
	// A token and a password are ambiguous.
	if _, err := (pyroscope.CredentialSource{TokenFile: tok, UsernameEnv: pyroscope.EnvUser, PasswordEnv: pyroscope.EnvPassword}).Resolve(); err == nil {
		t.Error("token and password together: no error")
	}
	if _, err := (pyroscope.CredentialSource{TokenFile: filepath.Join(t.TempDir(), "missing")}).Resolve(); err == nil {
		t.Error("missing token file: no error")
	}
}

func TestTooManyRequestsIsRetried(t *testing.T) {
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	srv.FailNext(http.StatusTooManyRequests, http.StatusInternalServerError)
	opts := fast(srv.URL)
	opts.Concurrency = 1
	rep, err := pyroscope.Push(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Results[0].Tries != 3 {
		t.Errorf("first profile: %d tries, want 3 (after a 429 and a 500)", rep.Results[0].Tries)
	}
	if n := len(srv.Received()); n != len(wantPushed) {
		t.Errorf("server got %d profiles, want %d", n, len(wantPushed))
	}
}

func TestPlainClientErrorIsReportedNotRetried(t *testing.T) {
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	srv.FailNext(http.StatusRequestEntityTooLarge)
	opts := fast(srv.URL)
	opts.Concurrency = 1
	rep, err := pyroscope.Push(context.Background(), dir, opts)
	if err == nil {
		t.Fatal("no error")
	}
	r := rep.Results[0]
	var he *pyroscope.HTTPError
	if r.Status != pyroscope.StatusFailed || r.Tries != 1 || !errors.As(r.Err, &he) || he.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("first profile: %s after %d tries: %v", r.Status, r.Tries, r.Err)
	}
	// The body of a non-connect response (a proxy's) is the message.
	if !strings.Contains(err.Error(), "HTTP 413 Request Entity Too Large: injected failure 413") {
		t.Errorf("error %q does not quote the server", err)
	}
	if rep.Count(pyroscope.StatusPushed) != len(wantPushed)-1 {
		t.Errorf("%d pushed, want the other %d", rep.Count(pyroscope.StatusPushed), len(wantPushed)-1)
	}
}

func TestWrongURLSaysSo(t *testing.T) {
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	_, err := pyroscope.Push(context.Background(), dir, fast(srv.URL+"/not-pyroscope"))
	if err == nil || !strings.Contains(err.Error(), "HTTP 404") || !strings.Contains(err.Error(), "a Pyroscope server?") {
		t.Errorf("err = %v", err)
	}
}

func TestPlanLabels(t *testing.T) {
	m := &bundle.Manifest{
		ID:     "cap-1",
		Window: bundle.Window{Start: "2026-11-28T01:00:00Z", End: "2026-11-28T01:01:00Z"},
		Targets: []*bundle.Target{{
			Name:   "svc-a",
			Labels: map[string]string{"service_name": "checkout", "__name__": "spoof", "1zone": "eu", "team-name": "x", "profcap_kind": "spoof"},
			Profiles: []*bundle.Profile{
				{Kind: "offcpu", Status: "ok", Path: "targets/svc-a/offcpu.pb.gz"}, // no own range: the window's
				{Kind: "async", Status: "unsupported"},
			},
		}},
	}
	items, err := pyroscope.Plan(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 {
		t.Fatalf("%d items, want 1", len(items))
	}
	it := items[0]
	got := it.LabelString()
	wantLabels := `{_1zone="eu", __delta__="false", __name__="offcpu", profcap_capture="cap-1", profcap_kind="offcpu", profcap_target="svc-a", service_name="checkout", team_name="x"}`
	if got != wantLabels {
		t.Errorf("labels\n got %s\nwant %s", got, wantLabels)
	}
	if it.Start.Format(time.RFC3339) != "2026-11-28T01:00:00Z" || it.End.Sub(it.Start) != time.Minute {
		t.Errorf("time range %v..%v, want the window", it.Start, it.End)
	}
}
