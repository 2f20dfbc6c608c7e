package taskdump

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func parseFile(t testing.TB, name string) *Dump {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := Parse(f, DefaultLimits)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

func task(t testing.TB, d *Dump, name string) *Task {
	t.Helper()
	for i := range d.Tasks {
		if d.Tasks[i].Name == name {
			return &d.Tasks[i]
		}
	}
	t.Fatalf("no task %q in the dump", name)
	return nil
}

func funcs(tr []Frame) []string {
	var out []string
	for _, f := range tr {
		out = append(out, f.Func)
	}
	return out
}

func TestParseReferenceText(t *testing.T) {
	d := parseFile(t, "refsvc-0.1.0-profiling-worker.txt")
	if d.Service != "w1" || d.PID == 0 || d.UnixNanos == 0 || d.HeaderTasks != 16 || len(d.Tasks) != 16 || d.Cut {
		t.Fatalf("header: %+v, %d tasks", d, len(d.Tasks))
	}
	db := task(t, d, "truth-db-waiter")
	if db.ID != "8" || len(db.Traces) != 1 {
		t.Fatalf("truth-db-waiter: %+v", db)
	}
	tr := db.Traces[0]
	want := []string{
		"tokio::time::sleep::Sleep::poll_elapsed",
		"<tokio::time::sleep::Sleep as core::future::future::Future>::poll",
		"refsvc::db::db_query::{{closure}}",
		"refsvc::pipeline::truth_db_waiter::{{closure}}",
		"<refsvc::truth::Tracked<F> as core::future::future::Future>::poll",
		"<refsvc::truth::Named<F> as core::future::future::Future>::poll",
	}
	if got := funcs(tr); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("truth-db-waiter frames (innermost first):\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if f := tr[2]; f.File != "/work/main/rust/refsvc/src/db.rs" || f.Line != 72 || f.Col != 37 {
		t.Errorf("db_query frame location: %+v", f)
	}
	if got := classify(tr); got != "sleep" {
		t.Errorf("classify = %q, want sleep", got)
	}
	if got := appFrame(tr); got != "refsvc::db::db_query::{{closure}}" {
		t.Errorf("appFrame = %q", got)
	}
	// Tasks without a name print "-"; tasks with several traces keep each.
	var unnamed, multi int
	for _, tk := range d.Tasks {
		if tk.Name == "" {
			unnamed++
		}
		if len(tk.Traces) > 1 {
			multi++
		}
	}
	if unnamed == 0 || multi == 0 {
		t.Errorf("want unnamed tasks and tasks with several traces: %d, %d", unnamed, multi)
	}
	if hs := task(t, d, "http.server"); len(hs.Traces) != 0 {
		t.Errorf("http.server (accept loop) should have no trace: %d", len(hs.Traces))
	}
}

func TestParseTokioTree(t *testing.T) {
	d := parseFile(t, "refsvc-0.1.0-profiling-worker.tokio.txt")
	if len(d.Tasks) != 16 {
		t.Fatalf("%d tasks", len(d.Tasks))
	}
	db := task(t, d, "truth-db-waiter")
	if len(db.Traces) != 1 {
		t.Fatalf("truth-db-waiter traces: %d", len(db.Traces))
	}
	// tokio drops each symbol's last path segment (::poll, ::{{closure}}).
	want := []string{
		"tokio::time::sleep::Sleep",
		"<tokio::time::sleep::Sleep as core::future::future::Future>",
		"refsvc::db::db_query",
		"refsvc::pipeline::truth_db_waiter",
		"<refsvc::truth::Tracked<F> as core::future::future::Future>",
		"<refsvc::truth::Named<F> as core::future::future::Future>",
	}
	if got := funcs(db.Traces[0]); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("frames:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if f := db.Traces[0][2]; f.File != "/work/main/rust/refsvc/src/db.rs" || f.Line != 72 || f.Col != 37 {
		t.Errorf("db_query location: %+v", f)
	}
	// tokio writes a task's second root on the last line of the first
	// (no newline between roots); both roots' leaves must come out, and
	// every trace must start at a root frame.
	var roots int
	for _, tk := range d.Tasks {
		if tk.Name != "" {
			continue
		}
		for _, tr := range tk.Traces {
			if strings.Contains(tr[len(tr)-1].Func, "╼") || strings.Contains(tr[0].Func, "╼") {
				t.Fatalf("marker left in a frame: %q / %q", tr[0].Func, tr[len(tr)-1].Func)
			}
			if strings.Contains(tr[len(tr)-1].Func, "PollFn") {
				roots++
			}
		}
	}
	if roots < 2 {
		t.Errorf("want traces under both PollFn roots of the connection task, got %d", roots)
	}
}

func TestParseReleaseAndStripped(t *testing.T) {
	d := parseFile(t, "refsvc-0.1.0-release-orchestration.txt")
	mw := task(t, d, "truth-mutex-waiter")
	if len(mw.Traces) != 1 || mw.Traces[0][0].Func != "poll_elapsed" {
		t.Fatalf("release truth-mutex-waiter: %v", funcs(mw.Traces[0]))
	}
	// The release build's short names are qualified from the wrapper's
	// generic argument where it names the inner future.
	q := qualify(task(t, d, "truth-db-waiter").Traces[0])
	if q[3].Func != "refsvc::pipeline::truth_db_waiter::{async_fn#0}" {
		t.Errorf("qualified: %v", funcs(q))
	}
	if q[2].Func != "{async_fn#0}" {
		t.Errorf("db_query's frame has nothing to qualify it by, got %q", q[2].Func)
	}

	s := parseFile(t, "refsvc-0.1.0-stripped-orchestration.txt")
	db := task(t, s, "truth-db-waiter")
	for _, f := range db.Traces[0] {
		if f.Func != "" || f.Addr == 0 {
			t.Fatalf("stripped frame: %+v", f)
		}
	}
	// tokio's tree of a binary without symbols is empty.
	st := parseFile(t, "refsvc-0.1.0-stripped-orchestration.tokio.txt")
	if len(st.Tasks) != 16 || len(task(t, st, "truth-db-waiter").Traces) != 0 {
		t.Fatalf("stripped tree: %d tasks", len(st.Tasks))
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"hello\n", "line 1"},
		{"# tokio task dump tasks=1\ntask id=1 name=a\n  trace 0\n    f at x.rs:1:2\n  bogus\n", `line 5: expected a frame (4 spaces in), 'trace K' or an empty line: "  bogus"`},
		{"task id=x name=a\n", "line 1: task id is not a decimal number"},
		{"task id=1 name=a\n    f\n", "line 2"},
		{"task id=1 name=a\n╼ a\n     └╼ b\n", "line 3: tree depth 2 below a node of depth 0"},
		{"task id=1 name=a\n╼ a\n └╼ b\n", "line 3: tree marker out of place"},
		{"task id=1 name=a\n╼ a\n  trace 0\n", "line 3: 'trace' line inside a tree"},
		{"task id=1 name=a\n  trace 0\n\x00\x01\n", `line 3: expected a frame (4 spaces in), 'trace K' or an empty line: "\x00\x01"`},
		{"task id=1 name=a\n  trace 0\n    \xff\n", `line 3: not UTF-8: "    \xff"`},
		{"", "empty"},
	} {
		_, err := Parse(strings.NewReader(c.in), DefaultLimits)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", c.in, err, c.want)
		}
	}
	_, err := Parse(strings.NewReader("<html>\n"), DefaultLimits)
	if !errors.Is(err, ErrNotDump) {
		t.Errorf("html: %v, want ErrNotDump", err)
	}
	var se *SyntaxError
	if _, err := Parse(strings.NewReader("task id=1\n  trace 0\n  x\n"), DefaultLimits); !errors.As(err, &se) || se.Pos() != 3 {
		t.Errorf("SyntaxError position: %v", err)
	}
}

func TestParseLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString("task id=1 name=deep\n  trace 0\n")
	for range 50 {
		b.WriteString("    f at x.rs:1:1\n")
	}
	b.WriteString("\ntask id=2 name=tree\n╼ root\n")
	pre := ""
	for i := range 40 {
		pre += "   "
		b.WriteString(pre[:len(pre)-1] + "└╼ n" + strings.Repeat("x", i) + "\n")
	}
	b.WriteString("\n")
	d, err := Parse(strings.NewReader(b.String()), Limits{MaxFrames: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Tasks[0].Traces[0]) != 10 || len(d.Tasks[1].Traces[0]) != 10 || d.FramesCut != 40+31 {
		t.Fatalf("frames kept %d, %d; cut %d", len(d.Tasks[0].Traces[0]), len(d.Tasks[1].Traces[0]), d.FramesCut)
	}
	// The tree keeps its innermost frames.
	if got := d.Tasks[1].Traces[0][0].Func; got != "n"+strings.Repeat("x", 39) {
		t.Errorf("tree leaf %q", got)
	}
	// A long line is an error, not a buffer without bound.
	if _, err := Parse(strings.NewReader("task id=1 name="+strings.Repeat("a", 100)+"\n"), Limits{MaxLine: 50}); err == nil || !strings.Contains(err.Error(), "longer than 50 bytes") {
		t.Errorf("long line: %v", err)
	}
	// A body cut at the size limit keeps the tasks before the cut,
	// wherever it falls.
	in := "task id=1 name=a\n  trace 0\n    f\n\ntask id=2 name=b\n  trace 0\n    g at x.rs:1:2\n\n"
	for n := 1; n < len(in); n++ {
		d, err := Parse(strings.NewReader(in), Limits{MaxBytes: int64(n)})
		want := 0
		if n >= len("task id=1 name=a\n  trace 0\n    f\n\n") {
			want = 1
		}
		if err != nil || !d.Cut || len(d.Tasks) != want || d.Bytes != int64(n) {
			t.Fatalf("cut at %d: %v, %+v", n, err, d)
		}
	}
	if d, err := Parse(strings.NewReader(in), Limits{MaxBytes: int64(len(in))}); err != nil || d.Cut || len(d.Tasks) != 2 {
		t.Fatalf("exactly at the limit: %v, %+v", err, d)
	}
	// Traces over the per-dump frame budget are dropped and counted.
	var tb strings.Builder
	tb.WriteString("task id=1 name=wide\n╼ root\n")
	for range 100 {
		tb.WriteString("  ├╼ leaf\n")
	}
	d, err = Parse(strings.NewReader(tb.String()), Limits{MaxTotalFrames: 50})
	if err != nil || len(d.Tasks[0].Traces) != 25 || d.TracesCut != 75 {
		t.Fatalf("budget: %v, %d traces, %d cut", err, len(d.Tasks[0].Traces), d.TracesCut)
	}
}

func TestParseFrame(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Frame
	}{
		{"a::b at /x/y.rs:3:4", Frame{Func: "a::b", File: "/x/y.rs", Line: 3, Col: 4}},
		{"a::b at /x/y.rs:3", Frame{Func: "a::b", File: "/x/y.rs", Line: 3}},
		{"a::b at /x/y.rs", Frame{Func: "a::b", File: "/x/y.rs"}},
		{"a::b", Frame{Func: "a::b"}},
		{"?? at 0x55d0c0ffee", Frame{Addr: 0x55d0c0ffee}},
		{"", Frame{}},
		{"_ZN6refsvc2db8db_query28_$u7b$$u7b$closure$u7d$$u7d$17h0123456789abcdefE at db.rs:1:2", Frame{Func: "refsvc::db::db_query::{{closure}}", File: "db.rs", Line: 1, Col: 2}},
		{"refsvc::work::hash_payload::h0123456789abcdef", Frame{Func: "refsvc::work::hash_payload"}},
		{"<F as axum::handler::Handler<(M,T1,T2),S>>::call::{{closure}} at h.rs:255:43", Frame{Func: "<F as axum::handler::Handler<(M,T1,T2),S>>::call::{{closure}}", File: "h.rs", Line: 255, Col: 43}},
	} {
		got, ok := parseFrame(c.in)
		if !ok || got != c.want {
			t.Errorf("parseFrame(%q) = %+v, %v; want %+v", c.in, got, ok, c.want)
		}
	}
}

// Hostile dumps within the size limit cost a bounded memory: many short
// frames in one trace, many tasks of distinct frames, and a deep tree whose
// path tokio's format repeats for every leaf.
func TestParseMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 32 MiB inputs")
	}
	const size = 32 << 20
	for _, c := range []struct {
		name string
		make func(b *strings.Builder)
	}{
		{"one long trace", func(b *strings.Builder) {
			b.WriteString("task id=1 name=a\n  trace 0\n")
			for b.Len() < size {
				b.WriteString("    a\n")
			}
		}},
		{"many tasks", func(b *strings.Builder) {
			for i := 0; b.Len() < size; i++ {
				fmt.Fprintf(b, "task id=%d name=a\n  trace 0\n    f%d\n\n", i, i)
			}
		}},
		{"deep wide trees", func(b *strings.Builder) {
			for i := 0; b.Len() < size; i++ {
				fmt.Fprintf(b, "task id=%d name=a\n╼ r\n", i)
				p := ""
				for range 1000 {
					p += "   "
					b.WriteString(p[:len(p)-1] + "└╼ x\n")
				}
				for range 200 {
					b.WriteString(p[:len(p)-4] + "├╼ y\n")
				}
				b.WriteString("\n")
			}
		}},
	} {
		var b strings.Builder
		c.make(&b)
		in := b.String()
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		d, err := Parse(strings.NewReader(in), DefaultLimits)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		bd := NewBuilder("x", BuildLimits{})
		bd.Add(d, time.Second, nil)
		runtime.GC()
		runtime.ReadMemStats(&m1)
		kept := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
		t.Logf("%s: %d tasks, cut %v, %d frames and %d traces dropped; %d MiB kept", c.name, len(d.Tasks), d.Cut, d.FramesCut, d.TracesCut, kept>>20)
		if kept > 150<<20 {
			t.Errorf("%s: a %d MiB dump holds %d MiB", c.name, len(in)>>20, kept>>20)
		}
		runtime.KeepAlive(d)
		runtime.KeepAlive(bd)
	}
}
