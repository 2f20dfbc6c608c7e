package collectors

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/targets"
)

// fakeSamply is a stand-in for samply (which cannot be installed here): it
// checks its arguments like `samply record --save-only -o FILE -r HZ -d S
// -p PID`, logs them, and on SIGINT (or after -d seconds) writes the real
// recorded profile $FAKE_PROFILE to FILE, as samply writes its file when
// stopped. $FAKE_MODE=fail makes it fail like samply without permission;
// $FAKE_MODE=nofile makes it exit without writing.
const fakeSamply = `#!/bin/sh
echo "$@" > "$FAKE_LOG"
[ "$1" = record ] || { echo "fake samply: want record, got $1" >&2; exit 2; }
shift
out=; pid=; dur=; saveonly=
while [ $# -gt 0 ]; do
	case "$1" in
	-o) out=$2; shift ;;
	-p) pid=$2; shift ;;
	-d) dur=$2; shift ;;
	-r) shift ;;
	--save-only) saveonly=1 ;;
	*) echo "fake samply: unexpected argument $1" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$out" ] && [ -n "$pid" ] && [ -n "$saveonly" ] && [ -n "$dur" ] || { echo "fake samply: missing -o, -p, -d or --save-only" >&2; exit 2; }
kill -0 "$pid" 2>/dev/null || { echo "Error: No such process" >&2; exit 1; }
if [ "$FAKE_MODE" = fail ]; then
	echo "Error: perf_event_open failed: Permission denied (check /proc/sys/kernel/perf_event_paranoid)" >&2
	exit 1
fi
[ "$FAKE_MODE" = nofile ] && exit 0
finish() { kill $sleeper 2>/dev/null; cp "$FAKE_PROFILE" "$out"; exit 0; }
trap finish INT
sleep "$dur" & sleeper=$!
wait $sleeper
finish
`

// installFakeSamply writes the fake first on PATH and returns its log file.
func installFakeSamply(t *testing.T, mode string) string {
	t.Helper()
	testreq.Command(t, "sh")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "samply"), []byte(fakeSamply), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	prof, err := filepath.Abs("testdata/samply/samply-ls-linux-profile.json")
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "args.log")
	t.Setenv("FAKE_PROFILE", prof)
	t.Setenv("FAKE_LOG", log)
	t.Setenv("FAKE_MODE", mode)
	return log
}

// sleeper starts a process that sleeps for d, which samply may profile.
func sleeper(t *testing.T, d time.Duration) *exec.Cmd {
	t.Helper()
	cmd := target(t, d)
	if why := perfEventProblem(bundle.CPU, cmd.Process.Pid); why != "" {
		testreq.Missing(t, "%s", why)
	}
	return cmd
}

func collectSamply(t *testing.T, c Collector, w *Window, tg *targets.Target, kinds ...bundle.Kind) []Result {
	t.Helper()
	var mu sync.Mutex
	var res []Result
	c.Collect(context.Background(), w, tg, kinds, func(r Result) {
		mu.Lock()
		res = append(res, r)
		mu.Unlock()
	})
	return res
}

func TestSamplyCollect(t *testing.T) {
	log := installFakeSamply(t, "")
	target := sleeper(t, 30*time.Second)
	pid := target.Process.Pid
	tg := &targets.Target{Name: "app", PID: pid}
	s := NewSamply(SamplyOptions{})
	if k := s.Kinds(tg); len(k) != 1 || k[0] != bundle.CPU {
		t.Fatalf("Kinds %v", k)
	}
	av := s.Probe(context.Background(), tg)
	if len(av) != 1 || !av[0].Available || !strings.Contains(av[0].Reason, "pid "+strconv.Itoa(pid)) {
		t.Fatalf("Probe %+v", av)
	}
	if err := s.Preflight(tg, bundle.CPU); err != nil {
		t.Errorf("Preflight cpu: %v", err)
	}
	if err := s.Preflight(tg, bundle.OffCPU); err == nil {
		t.Error("Preflight offcpu: want an error")
	}
	w := NewWindow(700*time.Millisecond, 0)
	res := collectSamply(t, s, w, tg, bundle.CPU, bundle.Heap)
	if len(res) != 2 {
		t.Fatalf("%d results", len(res))
	}
	var cpu Result
	for _, r := range res {
		if r.Kind == bundle.Heap && r.Status != bundle.StatusUnsupported {
			t.Errorf("heap: %+v", r)
		}
		if r.Kind == bundle.CPU {
			cpu = r
		}
	}
	if cpu.Status != bundle.StatusOK || cpu.Profile == nil {
		t.Fatalf("cpu: %s %v", cpu.Status, cpu.Err)
	}
	args, _ := os.ReadFile(log)
	if want := "record --save-only -o "; !strings.HasPrefix(string(args), want) || !strings.HasSuffix(strings.TrimSpace(string(args)), "-r 997 -d 6 -p "+strconv.Itoa(pid)) {
		t.Errorf("samply args %q", args)
	}
	var n int64
	for _, s := range cpu.Profile.Sample {
		n += s.Value[0]
	}
	if n != 13069 {
		t.Errorf("samples %d, want the fixture's 13069", n)
	}
	// The fixture's libraries are an aarch64 machine's: none is here.
	if !strings.Contains(cpu.Note, "ld-linux-aarch64.so.1 (file gone") || !strings.Contains(cpu.Note, "[kernel.kallsyms] (kernel") {
		t.Errorf("note %q", cpu.Note)
	}
	if !cpu.End.After(cpu.Start) || cpu.Profile.DurationNanos != cpu.End.Sub(cpu.Start).Nanoseconds() {
		t.Errorf("window %v..%v, profile duration %d", cpu.Start, cpu.End, cpu.Profile.DurationNanos)
	}
	if err := cpu.Profile.CheckValid(); err != nil {
		t.Error(err)
	}
}

func TestSamplyTargetExits(t *testing.T) {
	installFakeSamply(t, "")
	target := sleeper(t, 300*time.Millisecond)
	tg := &targets.Target{Name: "app", PID: target.Process.Pid}
	res := collectSamply(t, NewSamply(SamplyOptions{}), NewWindow(20*time.Second, 0), tg, bundle.CPU)
	if len(res) != 1 || res[0].Status != bundle.StatusPartial || !strings.Contains(res[0].Err.Error(), "exited") {
		t.Fatalf("%+v", res)
	}
}

func TestSamplyFailures(t *testing.T) {
	for _, tc := range []struct{ mode, want string }{
		{"fail", "no permission"},
		{"nofile", "wrote no profile"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			installFakeSamply(t, tc.mode)
			target := sleeper(t, 30*time.Second)
			tg := &targets.Target{Name: "app", PID: target.Process.Pid}
			res := collectSamply(t, NewSamply(SamplyOptions{}), NewWindow(5*time.Second, 0), tg, bundle.CPU)
			if len(res) != 1 || res[0].Status != bundle.StatusFailed || !strings.Contains(res[0].Err.Error(), tc.want) {
				t.Fatalf("%+v", res)
			}
		})
	}
}

func TestSamplyMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	tg := &targets.Target{Name: "app", PID: os.Getpid()}
	s := NewSamply(SamplyOptions{})
	av := s.Probe(context.Background(), tg)
	if len(av) != 1 || av[0].Available || !strings.Contains(av[0].Reason, "cargo install --locked samply") {
		t.Fatalf("Probe %+v", av)
	}
	if err := s.Preflight(tg, bundle.CPU); !errors.Is(err, ErrSamplyMissing) {
		t.Errorf("Preflight %v", err)
	}
	res := collectSamply(t, s, NewWindow(time.Second, 0), tg, bundle.CPU)
	if len(res) != 1 || !errors.Is(res[0].Err, ErrSamplyMissing) {
		t.Fatalf("%+v", res)
	}
	if k := s.Kinds(&targets.Target{Name: "web", Pprof: "http://x"}); k != nil {
		t.Errorf("Kinds without pid: %v", k)
	}
}
