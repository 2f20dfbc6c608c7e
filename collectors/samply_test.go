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
	"github.com/profcap/profcap/internal/rusttest"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/targets"
)

// fakeSamply is a stand-in for samply that fails on purpose (the tests of
// the real samply are TestSamplyRefsvc and TestSamplyTargetExits): it
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
	// The fake records anywhere, whatever this machine's PMU.
	old := samplyPMU
	samplyPMU = func() string { return "" }
	t.Cleanup(func() { samplyPMU = old })
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

// needSamply requires the real samply and a machine where it records:
// where samply 0.13 needs kernel.perf_event_paranoid at 1 (no hardware
// cycles event, see samplyPMUProblem) the test lowers it, as root.
func needSamply(t *testing.T) {
	t.Helper()
	testreq.Command(t, "samply")
	if samplyPMU() != "" {
		rusttest.LowerPerfParanoid(t, 1)
	}
	if why := samplyPMU(); why != "" {
		testreq.Missing(t, "%s", why)
	}
}

// TestSamplyRefsvc records the reference service (profiling build) with
// the real samply: its hot function is named by profcap's ELF symbolizer
// through the Firefox-profile importer, under the tokio worker thread.
func TestSamplyRefsvc(t *testing.T) {
	needSamply(t)
	svc := rusttest.Start(t, rusttest.Profiling, "worker")
	tg := &targets.Target{Name: svc.Name, PID: svc.PID}
	s := NewSamply(SamplyOptions{})
	if k := s.Kinds(tg); len(k) != 1 || k[0] != bundle.CPU {
		t.Fatalf("Kinds %v", k)
	}
	av := s.Probe(context.Background(), tg)
	if len(av) != 1 || !av[0].Available || !strings.Contains(av[0].Reason, "pid "+strconv.Itoa(svc.PID)) {
		t.Fatalf("Probe %+v", av)
	}
	if err := s.Preflight(tg, bundle.OffCPU); err == nil {
		t.Error("Preflight offcpu: want an error")
	}
	w := NewWindow(5*time.Second, 0)
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
	if err := cpu.Profile.CheckValid(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d samples; note %q; %s", len(cpu.Profile.Sample), cpu.Note, cpu.Profile.Comments)
	if c := strings.Join(cpu.Profile.Comments, " "); !strings.Contains(c, "samply record --save-only -o ") || !strings.Contains(c, "-r 997") || !strings.Contains(c, "-p "+strconv.Itoa(svc.PID)) {
		t.Errorf("comments %q: want the samply command", c)
	}
	if strings.Contains(cpu.Note, "refsvc-profiling (") {
		t.Errorf("note %q: the service's own frames were left unnamed", cpu.Note)
	}
	top, n := perfTopSelf(cpu.Profile, 0, nil)
	if top != "worker_core::compute::checksum_block" && top != refsvcWork["hash_payload"] {
		t.Errorf("top self function %q (%d samples), want checksum_block", top, n)
	}
	var hash, tokio int64
	for _, smp := range cpu.Profile.Sample {
		if stackHas(smp, refsvcWork["hash_payload"]) {
			hash += smp.Value[0]
			if stackHasPrefix(smp, "tokio::runtime::scheduler::multi_thread::worker::") || stackHasPrefix(smp, "tokio::runtime::blocking::pool::") {
				tokio += smp.Value[0]
			}
		}
	}
	if hash == 0 || float64(tokio) < 0.9*float64(hash) {
		t.Errorf("%d of %d hash_payload samples under tokio's worker or blocking pool", tokio, hash)
	}
	if !cpu.End.After(cpu.Start) || cpu.Profile.DurationNanos != cpu.End.Sub(cpu.Start).Nanoseconds() {
		t.Errorf("window %v..%v, profile duration %d", cpu.Start, cpu.End, cpu.Profile.DurationNanos)
	}
}

// TestSamplyTargetExits: the real samply keeps what it recorded of a
// process that exits mid-window, and the result says so.
func TestSamplyTargetExits(t *testing.T) {
	needSamply(t)
	target := sleeper(t, 1500*time.Millisecond)
	tg := &targets.Target{Name: "app", PID: target.Process.Pid}
	res := collectSamply(t, NewSamply(SamplyOptions{}), NewWindow(20*time.Second, 0), tg, bundle.CPU)
	if len(res) != 1 || res[0].Status != bundle.StatusPartial || !strings.Contains(res[0].Err.Error(), "exited") {
		t.Fatalf("%+v", res)
	}
}

// TestSamplyPMUProblem: where samply 0.13 cannot record (no hardware
// cycles event, paranoid above 1) the check says why and how to fix it
// before samply runs.
func TestSamplyPMUProblem(t *testing.T) {
	if why := samplyPMUProblem(2, false); !strings.Contains(why, "sysctl -w kernel.perf_event_paranoid=1") || !strings.Contains(why, "even as root") {
		t.Errorf("no PMU, paranoid 2: %q", why)
	}
	for _, tc := range []struct {
		paranoid int
		hw       bool
	}{{2, true}, {1, false}, {-1, false}} {
		if why := samplyPMUProblem(tc.paranoid, tc.hw); why != "" {
			t.Errorf("paranoid %d, hardware cycles %v: %q, want none", tc.paranoid, tc.hw, why)
		}
	}
	t.Logf("this machine: hardware cycles event %v, kernel.perf_event_paranoid %d", hardwareCycles(), perfParanoid())
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
