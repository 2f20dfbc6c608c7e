package pyroscope_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/pyroscope"
	"github.com/profcap/profcap/pyroscope/pyroscopetest"
)

// What Prepare sends for every kind: the documented profile type ids (the
// async profile read back from its file has an empty period type, not a
// nil one), sample labels Pyroscope accepts, a frame for stackless
// goroutines, totals equal to the file's.
func TestPrepareEveryKind(t *testing.T) {
	dir := pyroscopetest.WriteKindsBundle(t, time.Now())
	_, items := planOf(t, dir)
	for _, it := range items {
		pr, err := pyroscope.Prepare(dir, it)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, tot := range pr.Totals {
			ids = append(ids, tot.Type)
		}
		want := slices.Clone(documentedTypes[it.Kind])
		slices.Sort(ids)
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			t.Errorf("%s/%s: profile types %v, want %v", it.Target, it.Kind, ids, want)
		}
		file := fileTotals(t, dir, it)
		for _, tot := range pr.Totals {
			if file[tot.Type] != tot.Value {
				t.Errorf("%s/%s %s: prepared %d, file %d", it.Target, it.Kind, tot.Type, tot.Value, file[tot.Type])
			}
		}
		p, err := profile.ParseData(pr.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range p.Sample {
			if len(s.Location) == 0 {
				t.Errorf("%s/%s: a sample without a stack is sent", it.Target, it.Kind)
			}
			for k := range s.Label {
				if pyroscope.SanitizeLabelName(k) != k {
					t.Errorf("%s/%s: sample label %q sent", it.Target, it.Kind, k)
				}
			}
		}
		if it.Kind == "goroutine" {
			n := 0
			for _, s := range p.Sample {
				if s.Location[0].Line[0].Function.Name == pyroscope.NoStack {
					n += int(s.Value[0])
				}
			}
			if n != 2 {
				t.Errorf("goroutine: %d goroutines under %s, want the 2 without a stack", n, pyroscope.NoStack)
			}
		}
		if it.Kind == "async" {
			var names []string
			for _, s := range p.Sample {
				for k, v := range s.Label {
					names = append(names, k+"="+v[0])
				}
			}
			slices.Sort(names)
			want := []string{"kind=task", "task_id=12", "task_id=13", "tracing_target=refsvc::cache", "tracing_target=refsvc::server"}
			if !slices.Equal(names, want) {
				t.Errorf("async sample labels %v, want %v", names, want)
			}
		}
	}
	// The bundle's own files are untouched.
	p, err := bundle.LoadProfile(dir, "targets/worker-rust-1/async.pb.gz")
	if err != nil {
		t.Fatal(err)
	}
	if p.Sample[0].Label["task.id"] == nil {
		t.Errorf("the bundle's async profile lost task.id: %v", p.Sample[0].Label)
	}
}

// Two sample label names that sanitise alike are both kept.
func TestSampleLabelCollision(t *testing.T) {
	dir := pyroscopetest.WriteKindsBundle(t, time.Now())
	_, items := planOf(t, dir)
	i := slices.IndexFunc(items, func(it pyroscope.Item) bool { return it.Kind == "async" })
	p, err := bundle.LoadProfile(dir, items[i].Path)
	if err != nil {
		t.Fatal(err)
	}
	p.Sample[0].Label["task_id"] = []string{"valid"}
	p.Sample[0].Label["1st"] = []string{"digit"}
	p.Sample[0].Label["bad"] = []string{"\xff\xfe"}
	w, err := bundle.Create(dir+"2", &bundle.Manifest{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteProfile("a.pb.gz", p); err != nil {
		t.Fatal(err)
	}
	it := items[i]
	it.Path = "a.pb.gz"
	pr, err := pyroscope.Prepare(dir+"2", it)
	if err != nil {
		t.Fatal(err)
	}
	q, err := profile.ParseData(pr.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	got := q.Sample[0].Label
	if got["task_id"][0] != "valid" || got["task_id_2"][0] != "12" || got["_1st"][0] != "digit" || got["bad"][0] != "\uFFFD" {
		t.Errorf("labels %v", got)
	}
}

func TestParseQuery(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	q, err := pyroscope.ParseQuery("http://127.0.0.1:4040?service=orchestration-1&kind=cpu&from=-24h&to=now-1h&k8s.pod=a&target=t1", now)
	if err != nil {
		t.Fatal(err)
	}
	if q.Server != "http://127.0.0.1:4040" || !q.From.Equal(now.Add(-24*time.Hour)) || !q.To.Equal(now.Add(-time.Hour)) {
		t.Errorf("%+v", q)
	}
	if got := q.Selector(); got != `{k8s_pod="a", profcap_target="t1", service_name="orchestration-1"}` {
		t.Errorf("selector %s", got)
	}
	if !slices.Equal(q.Types, []string{"process_cpu:samples:count:cpu:nanoseconds", "process_cpu:cpu:nanoseconds:cpu:nanoseconds"}) || q.Types[q.Main] != pyroscope.DefaultTypeID("cpu") {
		t.Errorf("types %v main %d", q.Types, q.Main)
	}
	q, err = pyroscope.ParseQuery("https://p.example/prefix/?type=goroutine:goroutine:count:goroutine:count&from=1764590400&to=1764594000000", now)
	if err != nil {
		t.Fatal(err)
	}
	if q.Server != "https://p.example/prefix" || q.From.Unix() != 1764590400 || q.To.UnixMilli() != 1764594000000 || len(q.Types) != 1 {
		t.Errorf("%+v", q)
	}
	for _, bad := range []string{"127.0.0.1:4040?kind=cpu", "http://h?service=x", "http://h?kind=nope", "http://h?kind=cpu&from=now&to=-1h", "http://h?type=cpu"} {
		if _, err := pyroscope.ParseQuery(bad, now); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	if got := pyroscope.DefaultTypeID("async"); got != "async:busy:nanoseconds:busy:nanoseconds" {
		t.Errorf("async default %s", got)
	}
}

// The server's limit refusals (Pyroscope's own messages) are reported once,
// with the setting that allows the profile.
func TestLimitRefusalsNameTheSetting(t *testing.T) {
	cases := []struct {
		code    connect.Code
		msg     string
		setting string
	}{
		{connect.CodeInvalidArgument, `the profile with labels '{__name__="process_cpu"}' exceeds the size limit (max_profile_size_byte, actual: 5000000, limit: 4194304)`, "-validation.max-profile-size-bytes"},
		{connect.CodeInvalidArgument, `the profile with labels '{}' exceeds the samples count limit (max_profile_stacktrace_samples, actual: 20000, limit: 16000)`, "-validation.max-profile-stacktrace-samples"},
		{connect.CodeInvalidArgument, `profile series '{}' has 31 label names; limit 30`, "-validation.max-label-names-per-series"},
		{connect.CodeResourceExhausted, `push rate limit (4.0 MiB) exceeded while adding 5.0 MiB`, "-distributor.ingestion-rate-limit-mb"},
	}
	for _, c := range cases {
		dir := pyroscopetest.WriteBundle(t)
		srv := pyroscopetest.NewServer(t)
		srv.Reject(func(*pushv1.PushRequest) *connect.Error { return connect.NewError(c.code, errors.New(c.msg)) })
		_, err := pyroscope.Push(context.Background(), dir, fast(srv.URL))
		if err == nil {
			t.Fatalf("%s: no error", c.msg)
		}
		var le *pyroscope.LimitError
		var he *pyroscope.HTTPError
		if !errors.As(err, &le) && !strings.Contains(err.Error(), c.setting) {
			t.Errorf("%s: %v", c.msg, err)
		}
		if strings.Count(err.Error(), c.setting) != 1 {
			t.Errorf("the setting is not named once:\n%s", err)
		}
		var pe *pyroscope.PushError
		if errors.As(err, &pe) && !errors.As(pe.Failed[0].Err, &he) {
			t.Errorf("%s: the server's answer is not kept: %v", c.msg, pe.Failed[0].Err)
		}
		if c.code == connect.CodeResourceExhausted && he != nil && he.Status != http.StatusTooManyRequests {
			t.Errorf("rate limit: HTTP %d", he.Status)
		}
	}
}
