package pyroscopetest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/profcap/profcap/internal/testreq"
)

// RealVersion is the Pyroscope release the tests run by default;
// scripts/pyroscope-build.sh builds it.
const RealVersion = "v1.21.1"

// RealVersions are the releases the tests that matter per version run
// against (scripts/pyroscope-build.sh builds both): v1.6.0 refuses label
// names v1.14 and later sanitise themselves.
var RealVersions = []string{RealVersion, "v1.6.0"}

// RealBinary returns where scripts/pyroscope-build.sh puts the server of
// version: $PROFCAP_CACHE/pyroscope/bin/pyroscope-VERSION, PROFCAP_CACHE
// defaulting to $HOME/.cache/profcap.
func RealBinary(version string) string {
	cache := os.Getenv("PROFCAP_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "profcap")
	}
	return filepath.Join(cache, "pyroscope", "bin", "pyroscope-"+version)
}

// Real is a Grafana Pyroscope server run by a test: the whole server in
// one process (-target=all) on loopback, on free ports, with filesystem
// storage in a temporary directory.
type Real struct {
	URL     string
	Version string

	t       testing.TB
	bin     string
	dataDir string
	ports   [3]int // HTTP, gRPC, memberlist
	extra   []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
}

// StartReal starts the Pyroscope server of version (RealVersion when "")
// and waits until it is ready. extra are more server flags
// (-validation.reject-older-than=0s). A missing binary skips the test, or
// fails it with CI=true (scripts/pyroscope-build.sh builds it). The server
// is stopped when the test ends.
func StartReal(t testing.TB, version string, extra ...string) *Real {
	t.Helper()
	if version == "" {
		version = RealVersion
	}
	bin := RealBinary(version)
	if _, err := os.Stat(bin); err != nil {
		testreq.Missing(t, "Grafana Pyroscope %s at %s (bash scripts/pyroscope-build.sh %s)", version, bin, version)
	}
	r := &Real{Version: version, t: t, bin: bin, dataDir: t.TempDir(), extra: extra}
	for i := range r.ports {
		r.ports[i] = freePort(t)
	}
	r.URL = fmt.Sprintf("http://127.0.0.1:%d", r.ports[0])
	r.start()
	t.Cleanup(r.Stop)
	return r
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Args are the server's flags.
func (r *Real) Args() []string {
	http, grpc, ml := r.ports[0], r.ports[1], r.ports[2]
	args := []string{
		"-target=all",
		"-server.http-listen-address=127.0.0.1", fmt.Sprintf("-server.http-listen-port=%d", http),
		"-server.grpc-listen-address=127.0.0.1", fmt.Sprintf("-server.grpc-listen-port=%d", grpc),
		"-memberlist.bind-addr=127.0.0.1", fmt.Sprintf("-memberlist.bind-port=%d", ml),
		"-memberlist.advertise-addr=127.0.0.1", fmt.Sprintf("-memberlist.advertise-port=%d", ml),
		// Every component advertises loopback, not the first interface.
		"-ingester.lifecycler.addr=127.0.0.1",
		"-distributor.ring.instance-addr=127.0.0.1",
		"-compactor.ring.instance-addr=127.0.0.1",
		"-overrides-exporter.ring.instance-addr=127.0.0.1",
		"-query-frontend.instance-addr=127.0.0.1",
		"-query-scheduler.ring.instance-addr=127.0.0.1",
		"-store-gateway.sharding-ring.instance-addr=127.0.0.1",
		"-ingester.min-ready-duration=0s",
		"-storage.backend=filesystem",
		"-storage.filesystem.dir=" + filepath.Join(r.dataDir, "bucket"),
		"-pyroscopedb.data-path=" + filepath.Join(r.dataDir, "db"),
		// Nothing leaves the machine, and the server profiles nobody.
		"-usage-stats.enabled=false",
		"-self-profiling.disable-push=true",
	}
	return append(args, r.extra...)
}

func (r *Real) start() {
	r.t.Helper()
	cmd := exec.Command(r.bin, r.Args()...)
	cmd.Dir = r.dataDir
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting pyroscope %s: %v", r.Version, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	r.mu.Lock()
	r.cmd, r.done, r.log = cmd, done, log
	r.mu.Unlock()
	if err := r.waitReady(done, 3*time.Minute); err != nil {
		r.Kill()
		r.t.Fatalf("pyroscope %s %s: %v\nlast log lines:\n%s", r.Version, strings.Join(r.Args(), " "), err, tail(log.String(), 40))
	}
}

// waitReady polls /ready until it answers "ready" (the ingester is in the
// ring and the querier is up) and a query is answered.
func (r *Real) waitReady(done chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("exited before it was ready")
		default:
		}
		resp, err := c.Get(r.URL + "/ready")
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b), "ready") && r.queryable(c) {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v", timeout)
}

// queryable reports whether a query over the last hour is answered:
// v1.6.0 is /ready a moment before its store-gateway ring has a member
// ("empty ring").
func (r *Real) queryable(c *http.Client) bool {
	now := time.Now()
	body := fmt.Sprintf(`{"profileTypeID":"process_cpu:cpu:nanoseconds:cpu:nanoseconds","labelSelector":"{}","start":%d,"end":%d,"step":60}`,
		now.Add(-time.Hour).UnixMilli(), now.UnixMilli())
	resp, err := c.Post(r.URL+"/querier.v1.QuerierService/SelectSeries", "application/json", strings.NewReader(body))
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Kill ends the server with SIGKILL, as a crash or an OOM kill does: what
// its ingesters held in memory and had not written to blocks is lost.
func (r *Real) Kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Stop ends the server (SIGTERM: it flushes), at most 30 s, then SIGKILL.
func (r *Real) Stop() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart starts the server again on the same ports; with empty, on a new
// data directory (a new server behind the same URL).
func (r *Real) Restart(empty bool) {
	r.t.Helper()
	r.Kill()
	if empty {
		r.dataDir = r.t.TempDir()
	}
	r.start()
}

// Log returns what the server printed since it last started.
func (r *Real) Log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
