package collectors

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/targets"
)

// fakeSpy stands in for py-spy and rbspy (neither can be installed here):
// named py-spy it wants `record --pid P --duration N --rate R --format raw
// -o FILE`, named rbspy `record --pid P --duration N --rate R --format
// collapsed --file FILE`; it logs its arguments and writes $FAKE_OUTPUT to
// FILE on SIGINT or after N seconds, as both tools do.
// The trap comes first: a SIGINT at the window's end that reaches the
// shell before its trap is set kills it with nothing written (seen with a
// 400 ms window at load average 25).
const fakeSpy = `#!/bin/sh
out=; raw=; sleeper=
finish() { [ -n "$out" ] || exit 130; [ -z "$sleeper" ] || kill $sleeper 2>/dev/null; cp "$FAKE_OUTPUT" "$out"; [ -z "$raw" ] || cp "$FAKE_RAW" "$raw"; exit 0; }
trap finish INT
echo "$@" > "$FAKE_LOG"
tool=$(basename "$0")
[ "$1" = record ] || { echo "$tool: want record" >&2; exit 2; }
shift
pid=; dur=; fmt=
while [ $# -gt 0 ]; do
	case "$1" in
	--pid) pid=$2; shift ;;
	--duration) dur=$2; shift ;;
	--rate) shift ;;
	--native|--idle) [ "$tool" = py-spy ] || { echo "rbspy: no $1" >&2; exit 2; } ;;
	--on-cpu|--nonblocking) [ "$tool" = rbspy ] || { echo "py-spy: no $1" >&2; exit 2; } ;;
	--raw-file) [ "$tool" = rbspy ] || { echo "py-spy: no --raw-file" >&2; exit 2; }; raw=$2; shift ;;
	--format) fmt=$2; shift ;;
	-o) [ "$tool" = py-spy ] || { echo "rbspy: -o is not --file" >&2; exit 2; }; out=$2; shift ;;
	--file) [ "$tool" = rbspy ] || { echo "py-spy: no --file" >&2; exit 2; }; out=$2; shift ;;
	*) echo "$tool: unexpected argument $1" >&2; exit 2 ;;
	esac
	shift
done
case "$tool/$fmt" in py-spy/raw|rbspy/collapsed) ;; *) echo "$tool: bad format $fmt" >&2; exit 2 ;; esac
[ -n "$out" ] && [ -n "$pid" ] && [ -n "$dur" ] || { echo "$tool: missing arguments" >&2; exit 2; }
kill -0 "$pid" 2>/dev/null || { echo "Error: No such process" >&2; exit 1; }
sleep "$dur" & sleeper=$!
wait $sleeper
finish
`

func installFakeSpy(t *testing.T, tool, output string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, tool), []byte(fakeSpy), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	abs, err := filepath.Abs(filepath.Join("testdata", "spy", output))
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "args.log")
	t.Setenv("FAKE_OUTPUT", abs)
	t.Setenv("FAKE_LOG", log)
	return log
}

func TestPySpyCollect(t *testing.T) {
	py := testreq.Command(t, "python3")
	// The interpreter itself, not a wrapper (pyenv shims are shell scripts).
	real, err := exec.Command(py, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		t.Fatal(err)
	}
	py = strings.TrimSpace(string(real))
	log := installFakeSpy(t, "py-spy", "pyspy.folded")
	target := startProcess(t, py, "-c", "import time; time.sleep(30)")
	pid := target.Process.Pid
	tg := &targets.Target{Name: "api", PID: pid} // no label: detected from /proc/PID/exe
	s := NewPySpy(SpyOptions{})
	if k := s.Kinds(tg); !slices.Equal(k, []bundle.Kind{bundle.CPU, bundle.Wall}) {
		t.Fatalf("Kinds %v", k)
	}
	if k := NewRbspy(SpyOptions{}).Kinds(tg); k != nil {
		t.Errorf("rbspy Kinds for a python process: %v", k)
	}
	if av := s.Probe(context.Background(), tg); len(av) != 2 || !av[0].Available || !av[1].Available {
		t.Fatalf("Probe %+v", av)
	}
	if err := s.Preflight(tg, bundle.CPU); err != nil {
		t.Errorf("Preflight: %v", err)
	}
	res := collectSamply(t, s, NewWindow(600*time.Millisecond, 0), tg, bundle.CPU)
	if len(res) != 1 || res[0].Status != bundle.StatusOK {
		t.Fatalf("%+v", res)
	}
	p := res[0].Profile
	if p.SampleType[1].Type != "cpu" || p.Period != 10_000_000 {
		t.Errorf("types %v period %d", p.SampleType, p.Period)
	}
	var n, cpu int64
	names := map[string]bool{}
	for _, s := range p.Sample {
		n += s.Value[0]
		cpu += s.Value[1]
		for _, l := range s.Location {
			names[l.Line[0].Function.Name] = true
		}
	}
	if n != 52 || cpu != 52*10_000_000 || !names["handle"] {
		t.Errorf("samples %d cpu %d names %v", n, cpu, names)
	}
	args, _ := os.ReadFile(log)
	if want := "record --pid " + strconv.Itoa(pid) + " --duration " + strconv.Itoa(1+spyStartSlack) + " --rate 100 --native --format raw -o "; !strings.HasPrefix(string(args), want) {
		t.Errorf("args %q, want prefix %q", args, want)
	}
}

func TestRbspyCollectLabelled(t *testing.T) {
	log := installFakeSpy(t, "rbspy", "rbspy.folded")
	// A process labelled ruby whose executable is not ruby but maps
	// libruby (an embedded interpreter): the tool is let try.
	emb := embedding(t, "libruby.so.3.1")
	tg := &targets.Target{Name: "web", PID: emb.Process.Pid, Labels: map[string]string{"language": "ruby"}}
	// NoJoin: rbspy alone (a fake cannot be joined with perf).
	s := NewRbspy(SpyOptions{Rate: 50, NoJoin: true})
	if k := s.Kinds(tg); !slices.Equal(k, []bundle.Kind{bundle.CPU, bundle.Wall, bundle.OffCPU}) {
		t.Fatalf("Kinds %v", k)
	}
	if k := NewPySpy(SpyOptions{}).Kinds(tg); k != nil {
		t.Errorf("py-spy Kinds for a ruby target: %v", k)
	}
	res := collectSamply(t, s, NewWindow(1500*time.Millisecond, 0), tg, bundle.CPU, bundle.Heap)
	if len(res) != 2 {
		t.Fatalf("%d results for cpu and heap: %+v", len(res), res)
	}
	if args, _ := os.ReadFile(log); !strings.Contains(string(args), "--rate 50 --on-cpu --format collapsed --file ") {
		t.Errorf("rbspy alone records cpu with --on-cpu: %q", args)
	}
	var cpu Result
	for _, r := range res {
		if r.Kind == bundle.CPU {
			cpu = r
		} else if r.Status != bundle.StatusUnsupported {
			t.Errorf("%s: %+v", r.Kind, r)
		}
	}
	if cpu.Status != bundle.StatusOK || cpu.Profile.Period != 20_000_000 || len(cpu.Profile.Sample) != 2 {
		t.Fatalf("%+v", cpu)
	}
	// Labelled ruby, but neither ruby nor libruby (a Go service with the
	// wrong label): refused, so the capture takes cpu from perf instead.
	sleeping := target(t, 30*time.Second)
	wrong := &targets.Target{Name: "go-svc", PID: sleeping.Process.Pid, Labels: map[string]string{"language": "ruby"}}
	if err := s.Preflight(wrong, bundle.CPU); err == nil || !strings.Contains(err.Error(), "maps no libruby library") {
		t.Errorf("Preflight of a mislabelled process: %v", err)
	}
	// An unlabelled non-ruby process is refused with the reason.
	tg.Labels = nil
	if k := s.Kinds(tg); k != nil {
		t.Errorf("Kinds %v", k)
	}
	av := s.Probe(context.Background(), tg)
	if len(av) != 3 {
		t.Errorf("Probe %+v", av)
	}
	for _, a := range av {
		if a.Available || !strings.Contains(a.Reason, "not a Ruby interpreter") {
			t.Errorf("Probe %+v", a)
		}
	}
	if err := s.Preflight(tg, bundle.CPU); err == nil || !strings.Contains(err.Error(), "not a Ruby interpreter") {
		t.Errorf("Preflight %v", err)
	}
}

func TestSpyMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	tg := &targets.Target{Name: "x", PID: os.Getpid(), Labels: map[string]string{"language": "python"}}
	for _, tc := range []struct {
		c     *Spy
		want  string
		kinds int
	}{
		{NewPySpy(SpyOptions{}), "pip install py-spy", 2},
		{NewRbspy(SpyOptions{}), "cargo install rbspy", 3},
	} {
		av := tc.c.Probe(context.Background(), tg)
		if len(av) != tc.kinds {
			t.Errorf("%s Probe %+v", tc.c.Name(), av)
		}
		for _, a := range av {
			if a.Available || !strings.Contains(a.Reason, tc.want) {
				t.Errorf("%s Probe %+v", tc.c.Name(), a)
			}
		}
		res := collectSamply(t, tc.c, NewWindow(time.Second, 0), tg, bundle.CPU)
		if len(res) != 1 || res[0].Status != bundle.StatusFailed || !strings.Contains(res[0].Err.Error(), tc.want) {
			t.Errorf("%s Collect %+v", tc.c.Name(), res)
		}
	}
}
