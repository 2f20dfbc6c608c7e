package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/collectors/tokioconsole"
	"github.com/profcap/profcap/targets"
)

// profcapBin is the profcap binary built once by TestMain: Start runs the
// services as `profcap demo-service`.
var profcapBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "profcap-demo-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	profcapBin = filepath.Join(dir, "profcap")
	out, err := exec.Command("go", "build", "-o", profcapBin, "github.com/profcap/profcap/cmd/profcap").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building profcap: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// until polls cond every 50ms until it holds, failing the test if it does
// not within limit (a bound on a hang, not a performance assertion).
func until(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body
}

// metricSum sums every sample of a metric family in Prometheus text.
func metricSum(t *testing.T, base, name string) float64 {
	t.Helper()
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(get(t, base+"/metrics")))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// parseProfile fetches url and parses it as a pprof profile.
func parseProfile(t *testing.T, url string) *profile.Profile {
	t.Helper()
	p, err := profile.Parse(bytes.NewReader(get(t, url)))
	if err != nil {
		t.Fatalf("%s: not a pprof profile: %v", url, err)
	}
	if err := p.CheckValid(); err != nil {
		t.Fatalf("%s: invalid profile: %v", url, err)
	}
	return p
}

// hasFunc reports whether any sample of p has a frame whose function name
// contains substr.
func hasFunc(p *profile.Profile, substr string) bool {
	for _, s := range p.Sample {
		for _, loc := range s.Location {
			for _, l := range loc.Line {
				if l.Function != nil && strings.Contains(l.Function.Name, substr) {
					return true
				}
			}
		}
	}
	return false
}

func freeListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestServicesInProcess runs a worker and an orchestrator in this process
// and checks that workflows complete, the endpoints answer and the
// profiles have the demo's functions in them.
func TestServicesInProcess(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	wln, oln := freeListener(t), freeListener(t)
	workerURL := "http://" + wln.Addr().String()
	orchURL := "http://" + oln.Addr().String()

	var (
		mu     sync.Mutex
		events = map[EventKind]int{}
	)
	sidecarAddr := make(chan string, 1)
	errc := make(chan error, 2)
	go func() {
		errc <- RunService(ctx, ServiceConfig{Name: "worker-test-1", Role: RoleWorker, Language: "rust", Listener: wln, Work: 0.2,
			OnEvent: func(ev Event) { mu.Lock(); events[ev.Kind]++; mu.Unlock() }})
	}()
	go func() {
		errc <- RunService(ctx, ServiceConfig{Name: "orchestration-test-1", Role: RoleOrchestration, Listener: oln, Peers: []string{workerURL}, Rate: 20,
			OnEvent: func(ev Event) { mu.Lock(); events[ev.Kind]++; mu.Unlock() },
			Sidecars: []Sidecar{func(ctx context.Context, s ServiceInfo) error {
				sidecarAddr <- s.Addr
				<-ctx.Done()
				return nil
			}}})
	}()

	if got := <-sidecarAddr; got != oln.Addr().String() {
		t.Errorf("sidecar got address %q, want %q", got, oln.Addr())
	}
	var health struct{ Status, Name, Role string }
	if err := json.Unmarshal(get(t, workerURL+"/health"), &health); err != nil || health.Status != "ok" || health.Name != "worker-test-1" || health.Role != "worker" {
		t.Errorf("worker /health = %+v, %v", health, err)
	}
	until(t, 20*time.Second, "6 completed workflows", func() bool {
		return metricSum(t, orchURL, "demo_workflows_completed_total") >= 6
	})
	if n := metricSum(t, orchURL, "demo_workflows_failed_total"); n != 0 {
		t.Errorf("%v workflows failed", n)
	}
	if n := metricSum(t, workerURL, "demo_steps_processed_total"); n < 6*4 {
		t.Errorf("worker processed %v steps, want at least 24 for 6 workflows", n)
	}
	var wfs []workflowStatus
	if err := json.Unmarshal(get(t, orchURL+"/workflows"), &wfs); err != nil {
		t.Fatalf("/workflows: %v", err)
	}
	shapesSeen := map[string]bool{}
	for _, wf := range wfs {
		if wf.State == "completed" {
			shapesSeen[wf.Shape] = true
			if wf.StepsDone != wf.Steps {
				t.Errorf("completed workflow %s did %d of %d steps", wf.ID, wf.StepsDone, wf.Steps)
			}
		}
	}
	for _, s := range shapes {
		if !shapesSeen[s] {
			t.Errorf("no completed %s workflow in /workflows", s)
		}
	}
	mu.Lock()
	for _, k := range []EventKind{EventWorkflowStarted, EventWorkflowFinished, EventStepStarted, EventStepFinished} {
		if events[k] == 0 {
			t.Errorf("no %s events", k)
		}
	}
	mu.Unlock()

	heap := parseProfile(t, workerURL+"/debug/pprof/heap")
	if !hasFunc(heap, "demo.(*worker).") {
		t.Error("worker heap profile has no demo.(*worker) frames")
	}
	block := parseProfile(t, workerURL+"/debug/pprof/block")
	if !hasFunc(block, "demo.(*fakeDB).query") {
		t.Error("worker block profile has no demo.(*fakeDB).query frames")
	}
	parseProfile(t, workerURL+"/debug/pprof/mutex")
	fg := parseProfile(t, workerURL+"/debug/fgprof?seconds=1&format=pprof")
	if len(fg.Sample) == 0 {
		t.Error("fgprof profile has no samples")
	}
	folded := string(get(t, orchURL+"/debug/fgprof?seconds=1&format=folded"))
	if !strings.Contains(folded, "demo.(*orchestrator).run") {
		t.Errorf("folded fgprof of the orchestrator lacks demo.(*orchestrator).run:\n%.500s", folded)
	}
	resp, err := http.Get(workerURL + "/debug/fgprof?format=svg")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("fgprof with a bad format: %s, want 400", resp.Status)
	}

	cancel()
	for range 2 {
		if err := <-errc; err != nil {
			t.Errorf("RunService: %v", err)
		}
	}
}

func TestRunServiceBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []ServiceConfig{
		{Role: RoleWorker, Port: 1},
		{Name: "x", Role: "manager", Port: 1},
		{Name: "x", Role: RoleOrchestration, Port: 1},
	} {
		if err := RunService(ctx, cfg); err == nil {
			t.Errorf("RunService(%+v) = nil, want an error", cfg)
		}
	}
}

func TestPlans(t *testing.T) {
	o := &orchestrator{name: "o"}
	want := map[string]int{shapeLinear: 4, shapeDiamond: 4, shapeTree: 7}
	for seq := range uint64(3) {
		wf := o.planWorkflow(seq)
		if len(wf.Steps) != want[wf.Shape] {
			t.Errorf("%s: %d steps, want %d", wf.Shape, len(wf.Steps), want[wf.Shape])
		}
		roots := 0
		for i, s := range wf.Steps {
			if len(s.Deps) == 0 {
				roots++
			}
			for _, d := range s.Deps {
				if d >= i {
					t.Errorf("%s: step %d depends on later step %d", wf.Shape, i, d)
				}
			}
		}
		if roots != 1 {
			t.Errorf("%s: %d root steps, want 1", wf.Shape, roots)
		}
	}
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool { return processAlive(pid) }

func startCluster(t *testing.T, dir string, detach bool) *Cluster {
	t.Helper()
	c, err := Start(context.Background(), Options{Dir: dir, Executable: profcapBin, FreePorts: true, Detach: detach, Rate: 10, Work: 0.3})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { c.Stop(context.Background()) })
	return c
}

// TestCluster starts the five services as processes, checks what they
// serve and what Start wrote, and stops them.
func TestCluster(t *testing.T) {
	dir := t.TempDir()
	c := startCluster(t, dir, false)

	var names []string
	for _, s := range c.Services {
		names = append(names, s.Name)
		if pid, err := readPIDFile(s.PIDFile); err != nil || pid != s.PID {
			t.Errorf("%s: pid file says %d (%v), want %d", s.Name, pid, err, s.PID)
		}
		if _, err := os.Stat(filepath.Join(dir, LogsDir, s.Name+".log")); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
		get(t, s.URL+"/health")
	}
	if pids := clusterPIDs(t, dir); len(pids) != len(c.Services) {
		t.Errorf("%d processes run with --cluster %s, want %d", len(pids), dir, len(c.Services))
	}
	if got, want := strings.Join(names, " "), "orchestration-1 orchestration-2 worker-rust-1 worker-ruby-1 worker-python-1"; got != want {
		t.Errorf("services %q, want %q", got, want)
	}

	cfg, err := targets.Load(filepath.Join(dir, "profcap.yaml"))
	if err != nil {
		t.Fatalf("profcap.yaml: %v", err)
	}
	if len(cfg.Targets) != len(c.Services) {
		t.Fatalf("profcap.yaml has %d targets, want %d", len(cfg.Targets), len(c.Services))
	}
	for i, tg := range cfg.Targets {
		s := c.Services[i]
		if tg.Name != s.Name || tg.Pprof != s.URL+"/debug/pprof" || tg.Labels["role"] != s.Group() || tg.Labels["language"] != s.Language {
			t.Errorf("target %d = %+v, want %s at %s", i, tg, s.Name, s.URL)
		}
		if pid, err := tg.ResolvePID(); err != nil || pid != s.PID {
			t.Errorf("target %s resolves to pid %d (%v), want %d", tg.Name, pid, err, s.PID)
		}
		// Every service answers on its own tokio-console port.
		if tg.TokioConsole == "" || tg.TokioConsole != s.Console {
			t.Errorf("target %s tokio_console %q, want %q", tg.Name, tg.TokioConsole, s.Console)
		}
		for _, a := range tokioconsole.New(tokioconsole.Options{}).Probe(context.Background(), &cfg.Targets[i]) {
			if !a.Available {
				t.Errorf("target %s: console endpoint %s: %s", tg.Name, tg.TokioConsole, a.Reason)
			}
		}
	}

	// Workflows run across processes: counters go up on both sides.
	orch, worker := c.Services[0].URL, c.Services[3].URL
	before := metricSum(t, orch, "demo_workflows_completed_total")
	until(t, 20*time.Second, "workflows to complete", func() bool {
		return metricSum(t, orch, "demo_workflows_completed_total") >= before+3
	})
	until(t, 20*time.Second, "worker-ruby-1 to process steps", func() bool {
		return metricSum(t, worker, "demo_steps_processed_total") > 0
	})
	heap := parseProfile(t, worker+"/debug/pprof/heap")
	if !hasFunc(heap, "demo.(*worker).") {
		t.Error("heap profile of worker-ruby-1 has no demo.(*worker) frames")
	}
	parseProfile(t, worker+"/debug/fgprof?seconds=1&format=pprof")

	// A second cluster in the same directory is refused.
	if _, err := Start(context.Background(), Options{Dir: dir, Executable: profcapBin, FreePorts: true}); !errors.Is(err, ErrRunning) {
		t.Errorf("second Start in %s: %v, want ErrRunning", dir, err)
	}

	if err := c.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := c.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	<-c.Done()
	for _, s := range c.Services {
		if alive(s.PID) {
			t.Errorf("%s (pid %d) still running after Stop", s.Name, s.PID)
		}
	}
	if pids := clusterPIDs(t, dir); len(pids) > 0 {
		t.Errorf("still running after Stop: %v", pids)
	}
	assertNoPIDFiles(t, dir)
}

func assertNoPIDFiles(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, PidsDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind: %s", filepath.Join(PidsDir, e.Name()))
	}
}

// TestStopByPIDFiles stops a detached cluster the way `profcap demo --stop`
// does, with a stale PID file pointing at an unrelated live process and a
// garbage one next to the real ones.
func TestStopByPIDFiles(t *testing.T) {
	dir := t.TempDir()
	c := startCluster(t, dir, true)

	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleep.Process.Kill(); sleep.Wait() }()
	if err := writePIDFile(filepath.Join(dir, PidsDir, "stale-1.pid"), sleep.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// A PID file naming a real service but a process that is not it.
	if err := writePIDFile(filepath.Join(dir, PidsDir, "worker-extra-1.pid"), os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, PidsDir, "garbage.pid"), []byte("not a pid\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	results, err := Stop(context.Background(), dir, 0)
	if err == nil || !strings.Contains(err.Error(), "garbage.pid") {
		t.Errorf("Stop error = %v, want one about garbage.pid", err)
	}
	outcome := map[string]string{}
	for _, r := range results {
		outcome[r.Name] = r.Outcome
	}
	for _, s := range c.Services {
		if outcome[s.Name] != "stopped" {
			t.Errorf("%s: outcome %q, want stopped", s.Name, outcome[s.Name])
		}
	}
	for _, name := range []string{"stale-1", "worker-extra-1"} {
		if !strings.HasPrefix(outcome[name], "not a demo service") {
			t.Errorf("%s: outcome %q, want not a demo service", name, outcome[name])
		}
	}
	if outcome["garbage"] != "bad pid file" {
		t.Errorf("garbage: outcome %q, want bad pid file", outcome["garbage"])
	}
	if !alive(sleep.Process.Pid) {
		t.Error("Stop killed the unrelated sleep process of a stale PID file")
	}
	for _, s := range c.Services {
		if alive(s.PID) {
			t.Errorf("%s (pid %d) still running after Stop", s.Name, s.PID)
		}
	}
	// Everything but the garbage file is gone; Stop keeps what it cannot read.
	os.Remove(filepath.Join(dir, PidsDir, "garbage.pid"))
	assertNoPIDFiles(t, dir)

	results, err = Stop(context.Background(), dir, 0)
	if err != nil || len(results) != 0 {
		t.Errorf("Stop with nothing running = %v, %v; want no results", results, err)
	}
}

// TestStartPortInUse: a taken port of the reference layout fails Start
// with its name and number, and starts nothing.
func TestStartPortInUse(t *testing.T) {
	ln := freeListener(t)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	offset := port - 8080 // orchestration-1, the first port opened, lands on it
	if port+300 > 65535 {
		t.Skipf("free port %d leaves no room for the layout", port)
	}
	dir := t.TempDir()
	_, err := Start(context.Background(), Options{Dir: dir, Executable: profcapBin, PortOffset: offset})
	if err == nil {
		t.Fatal("Start on a taken port succeeded")
	}
	if !strings.Contains(err.Error(), "orchestration-1") || !strings.Contains(err.Error(), strconv.Itoa(port)) {
		t.Errorf("error %q does not name orchestration-1 and port %d", err, port)
	}
	assertNoPIDFiles(t, dir)
}

// TestStartServiceFails: a service that dies at startup fails Start with
// its name, its log file and the end of the log.
func TestStartServiceFails(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad-profcap")
	script := "#!/bin/sh\ncase \"$*\" in *worker-ruby-1*) echo 'boom: cannot start' >&2; exit 3;; esac\nexec " + profcapBin + " \"$@\"\n"
	if err := os.WriteFile(bad, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := Start(context.Background(), Options{Dir: dir, Executable: bad, FreePorts: true})
	if err == nil {
		c.Stop(context.Background())
		t.Fatal("Start succeeded with a failing service")
	}
	for _, want := range []string{"worker-ruby-1", filepath.Join(dir, LogsDir, "worker-ruby-1.log"), "boom: cannot start"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	assertNoPIDFiles(t, dir)
	// The healthy services it started were stopped again.
	if pids := clusterPIDs(t, dir); len(pids) > 0 {
		t.Errorf("services of the failed start still running: %v", pids)
	}
}

// clusterPIDs lists the live processes whose command line has
// "--cluster DIR", from /proc.
func clusterPIDs(t *testing.T, dir string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmd, []byte("\x00--cluster\x00"+dir+"\x00")) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestIsDemoService(t *testing.T) {
	if isDemoService(os.Getpid(), "x", "/") {
		t.Error("the test process counts as a demo service")
	}
	if alive(0) || alive(-1) {
		t.Error("pid 0 or -1 counts as alive")
	}
}

// TestStopKillsAfterGrace: a service that ignores SIGTERM is killed once
// the grace period is over.
func TestStopKillsAfterGrace(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, PidsDir), 0o755); err != nil {
		t.Fatal(err)
	}
	// A shell that ignores SIGTERM, with the command line of a service of
	// this cluster: sh -c SCRIPT demo-service --name hung-1 --cluster DIR.
	hung := exec.Command("sh", "-c", `trap "" TERM; echo ready; while :; do sleep 0.1; done`, ServiceCommand, "--name", "hung-1", "--cluster", dir)
	out, err := hung.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := hung.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { hung.Process.Kill(); hung.Wait() }()
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil { // the trap is set
		t.Fatal(err)
	}
	if err := writePIDFile(filepath.Join(dir, PidsDir, "hung-1.pid"), hung.Process.Pid); err != nil {
		t.Fatal(err)
	}
	results, err := Stop(context.Background(), dir, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if len(results) != 1 || results[0].Outcome != "killed" {
		t.Fatalf("Stop results %+v, want hung-1 killed", results)
	}
	if alive(hung.Process.Pid) {
		t.Error("hung-1 still running")
	}
	assertNoPIDFiles(t, dir)
}
