// Package rusttest runs the Rust reference service (rust/refsvc, built by
// scripts/rust-build.sh) for tests that check profcap against the real
// thing: one instance, or the 2+3 cluster of scripts/rust-cluster.sh, on
// free ports, and its ground truth (GET /truth, see rust/README.md).
//
// A missing build is testreq.Missing: skipped on a developer's machine,
// a failure under CI=true (make test builds it).
package rusttest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/profcap/profcap/internal/testreq"
)

// Variants are the builds scripts/rust-build.sh installs.
const (
	Release   = "release"   // symbols and line tables, no frame pointers
	Profiling = "profiling" // full debug info, frame pointers
	Stripped  = "stripped"  // no symbols, no frame pointers
)

// Cache is where scripts/rust-build.sh installs: $PROFCAP_CACHE (default
// ~/.cache/profcap).
func Cache() string {
	if c := os.Getenv("PROFCAP_CACHE"); c != "" {
		return c
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "profcap")
}

// Binary returns a path to refsvc-VARIANT that stays valid for the test:
// a hard link (or copy) in the test's own directory. rust-build.sh
// replaces the installed files by rename, and a service whose executable
// was replaced under it shows its frames as "refsvc (deleted)+0x…"; other
// checkouts on the same machine rebuild at any time.
func Binary(t testing.TB, variant string) string {
	t.Helper()
	return pin(t, filepath.Join(Cache(), "rust", "bin", "refsvc-"+variant))
}

// pinnedCache returns a directory laid out like $PROFCAP_CACHE/rust/bin
// with the test's own links to every variant, for rust-cluster.sh.
func pinnedCache(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "rust", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{Release, Profiling, Stripped} {
		src := filepath.Join(Cache(), "rust", "bin", "refsvc-"+v)
		if _, err := os.Stat(src); err != nil {
			testreq.Missing(t, "%s (run bash scripts/rust-build.sh)", src)
		}
		if err := linkOrCopy(src, filepath.Join(bin, "refsvc-"+v)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func pin(t testing.TB, src string) string {
	t.Helper()
	if _, err := os.Stat(src); err != nil {
		testreq.Missing(t, "%s (run bash scripts/rust-build.sh)", src)
	}
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := linkOrCopy(src, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Service is one running refsvc.
type Service struct {
	Name    string
	PID     int
	Port    int    // REST (and pprof, heap, task dump)
	Console string // tokio-console address
	Binary  string
	PIDFile string
	cmd     *exec.Cmd
}

// URL is the service's REST base, http://127.0.0.1:PORT.
func (s *Service) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.Port) }

// PprofURL is the pprof base profcap takes: URL()/debug/pprof.
func (s *Service) PprofURL() string { return s.URL() + "/debug/pprof" }

// Start runs one refsvc of the given variant and role (orchestration or
// worker) with --pprof --jemalloc-prof --taskdump and a console, on free
// ports, until the test ends. extra flags go after these.
func Start(t testing.TB, variant, role string, extra ...string) *Service {
	t.Helper()
	bin := Binary(t, variant)
	ports := FreePorts(t, 2)
	dir := t.TempDir()
	s := &Service{Name: role + "-1", Port: ports[0], Console: fmt.Sprintf("127.0.0.1:%d", ports[1]), Binary: bin, PIDFile: filepath.Join(dir, "refsvc.pid")}
	args := append([]string{"--name", s.Name, "--role", role, "--port", strconv.Itoa(s.Port), "--console", s.Console,
		"--pprof", "--jemalloc-prof", "--taskdump", "--pidfile", s.PIDFile}, extra...)
	cmd := exec.Command(bin, args...)
	logFile := filepath.Join(dir, "refsvc.log")
	log, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	s.cmd, s.PID = cmd, cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	alive := func() bool {
		select {
		case <-exited:
			return false
		default:
			return true
		}
	}
	if err := waitHealthy(s.URL(), 30*time.Second, alive); err != nil {
		out, _ := os.ReadFile(logFile)
		t.Fatalf("%s: %v\n%s", bin, err, out)
	}
	return s
}

func waitHealthy(base string, limit time.Duration, alive func() bool) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if body, err := get(base+"/health", 2*time.Second); err == nil && strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		if !alive() {
			return errors.New("exited before it answered /health")
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("no answer on %s/health within %s", base, limit)
}

func get(u string, timeout time.Duration) ([]byte, error) {
	cl := &http.Client{Timeout: timeout}
	resp, err := cl.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("%s: HTTP %d: %s", u, resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}

// FreePorts returns n TCP ports free on 127.0.0.1 now.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// Cluster is the 2+3 cluster of scripts/rust-cluster.sh.
type Cluster struct {
	Dir    string // where .pids/ and .logs/ are
	Offset int    // PORT_BASE_OFFSET
	env    []string
	script string
}

// Names are the cluster's instances with their REST and console ports
// before the offset (scripts/rust-cluster.sh).
var Names = []struct {
	Name          string
	Port, Console int
}{
	{"orchestration-1", 8080, 6669},
	{"orchestration-2", 8081, 6670},
	{"worker-rust-1", 8100, 6671},
	{"worker-rust-2", 8101, 6672},
	{"worker-rust-3", 8102, 6673},
}

// StartCluster runs `bash scripts/rust-cluster.sh start DIR --variant V`
// with its ports shifted (PORT_BASE_OFFSET) to a range free here, and stops
// it when the test ends.
func StartCluster(t testing.TB, variant string) *Cluster {
	t.Helper()
	testreq.Command(t, "bash")
	script := filepath.Join(RepoRoot(t), "scripts", "rust-cluster.sh")
	cache := pinnedCache(t)
	c := &Cluster{Dir: t.TempDir(), script: script}
	c.Offset = freeOffset(t)
	c.env = append(os.Environ(), "PROFCAP_CACHE="+cache, fmt.Sprintf("PORT_BASE_OFFSET=%d", c.Offset))
	t.Cleanup(func() {
		if out, err := c.run("stop"); err != nil {
			t.Logf("rust-cluster.sh stop: %v\n%s", err, out)
		}
	})
	if out, err := c.run("start", "--variant", variant); err != nil {
		t.Fatalf("rust-cluster.sh start: %v\n%s", err, out)
	}
	return c
}

func (c *Cluster) run(args ...string) ([]byte, error) {
	cmd := exec.Command("bash", append([]string{c.script, args[0], c.Dir}, args[1:]...)...)
	cmd.Env = c.env
	return cmd.CombinedOutput()
}

// freeOffset finds a PORT_BASE_OFFSET at which every port of the cluster
// is free on 127.0.0.1 (tests and other checkouts run clusters side by
// side).
func freeOffset(t testing.TB) int {
	t.Helper()
	for range 50 {
		off := 10000 + 100*rand.IntN(400)
		var ls []net.Listener
		ok := true
		for _, n := range Names {
			for _, p := range []int{n.Port, n.Console} {
				l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+off))
				if err != nil {
					ok = false
					break
				}
				ls = append(ls, l)
			}
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return off
		}
	}
	t.Fatal("no free port range for the cluster")
	return 0
}

// Service returns the cluster's instance name.
func (c *Cluster) Service(t testing.TB, name string) *Service {
	t.Helper()
	for _, n := range Names {
		if n.Name != name {
			continue
		}
		s := &Service{Name: name, Port: n.Port + c.Offset, Console: fmt.Sprintf("127.0.0.1:%d", n.Console+c.Offset), PIDFile: filepath.Join(c.Dir, ".pids", name+".pid")}
		b, err := os.ReadFile(s.PIDFile)
		if err != nil {
			t.Fatal(err)
		}
		if s.PID, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			t.Fatal(err)
		}
		s.Binary, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", s.PID))
		return s
	}
	t.Fatalf("no instance %q in the cluster", name)
	return nil
}

// RepoRoot is the directory of profcap's go.mod, found from the working
// directory up.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/profcap/profcap\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("profcap's go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Truth is the part of GET /truth the tests compare against.
type Truth struct {
	Service struct {
		Name         string `json:"name"`
		PID          int    `json:"pid"`
		NowUnixNS    int64  `json:"now_unix_ns"`
		ProcessCPUNS int64  `json:"process_cpu_ns"`
		DBWaitNS     int64  `json:"db_wait_ns"`
	} `json:"service"`
	CPUWork map[string]struct {
		Calls  int64 `json:"calls"`
		CPUNS  int64 `json:"cpu_ns"`
		WallNS int64 `json:"wall_ns"`
	} `json:"cpu_work"`
	DB struct {
		Queries int64 `json:"queries"`
		WaitNS  int64 `json:"wait_ns"`
	} `json:"db"`
	StdMutex struct {
		Locks  int64 `json:"locks"`
		WaitNS int64 `json:"wait_ns"`
	} `json:"std_mutex"`
	AsyncMutex struct {
		Locks  int64 `json:"locks"`
		WaitNS int64 `json:"wait_ns"`
	} `json:"async_mutex"`
}

// GetTruth reads the service's /truth.
func (s *Service) GetTruth(t testing.TB) *Truth {
	t.Helper()
	b, err := get(s.URL()+"/truth", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var tr Truth
	if err := json.Unmarshal(b, &tr); err != nil {
		t.Fatalf("/truth: %v", err)
	}
	return &tr
}

// CPUDelta is the thread CPU time each cpu_work function spent between two
// truths.
func CPUDelta(before, after *Truth) map[string]int64 {
	d := map[string]int64{}
	for name, w := range after.CPUWork {
		d[name] = w.CPUNS - before.CPUWork[name].CPUNS
	}
	return d
}

// WarmPprof asks the service for a 1 s CPU profile and a heap profile and
// logs how long each took: the first of each symbolises with a DWARF cache
// pprof-rs and jemalloc_pprof build then (seconds for the profiling build),
// a cost a capture should not measure as its own.
func (s *Service) WarmPprof(t testing.TB) {
	t.Helper()
	for _, path := range []string{"/debug/pprof/profile?seconds=1", "/debug/pprof/heap"} {
		t0 := time.Now()
		b, err := get(s.URL()+path, 60*time.Second)
		if err != nil {
			t.Fatalf("warming %s: %v", path, err)
		}
		t.Logf("%s: first %s took %s (%d bytes)", s.Name, path, time.Since(t0).Round(10*time.Millisecond), len(b))
	}
}

// WaitContended waits until the service's std::sync::Mutex (RESULTS) is
// contended: the step tasks waited for it at least 5 ms in each of two
// 2-second intervals in a row. A fresh refsvc hardly waits: its
// results-compactor holds the lock for a pass over the digests merged so
// far, which grow to 4096 (100 s at the default 40 steps a second) and only
// then take the ~2 ms the service is built around; a loaded machine gets
// there sooner (a holder preempted while holding it). Up to 150 s.
func (s *Service) WaitContended(t testing.TB) {
	t.Helper()
	start := time.Now()
	prev := s.GetTruth(t)
	inRow := 0
	for time.Since(start) < 150*time.Second {
		time.Sleep(2 * time.Second)
		cur := s.GetTruth(t)
		if cur.StdMutex.WaitNS-prev.StdMutex.WaitNS >= int64(5*time.Millisecond) {
			inRow++
		} else {
			inRow = 0
		}
		prev = cur
		if inRow == 2 {
			t.Logf("%s: std mutex contended after %s (%d locks, %v waited)", s.Name, time.Since(start).Round(time.Second), cur.StdMutex.Locks, time.Duration(cur.StdMutex.WaitNS))
			return
		}
	}
	t.Fatalf("%s: its std mutex was still not contended after 150 s (%d locks, %v waited)", s.Name, prev.StdMutex.Locks, time.Duration(prev.StdMutex.WaitNS))
}

// LowerPerfParanoid sets kernel.perf_event_paranoid to level for the test
// when it is higher (and restores it after), or calls testreq.Missing
// where that needs root. The sysctl is machine-wide: keep such tests
// short.
func LowerPerfParanoid(t testing.TB, level int) {
	t.Helper()
	const file = "/proc/sys/kernel/perf_event_paranoid"
	b, err := os.ReadFile(file)
	if err != nil {
		testreq.Missing(t, "%s: %v", file, err)
	}
	old, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || old <= level {
		return
	}
	if os.Geteuid() != 0 {
		testreq.Missing(t, "kernel.perf_event_paranoid at %d or lower (it is %d; root can lower it)", level, old)
	}
	if err := os.WriteFile(file, []byte(strconv.Itoa(level)), 0o644); err != nil {
		testreq.Missing(t, "lowering kernel.perf_event_paranoid: %v", err)
	}
	t.Logf("kernel.perf_event_paranoid lowered from %d to %d for this test", old, level)
	t.Cleanup(func() { _ = os.WriteFile(file, []byte(strconv.Itoa(old)), 0o644) })
}
