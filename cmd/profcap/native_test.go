package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/testreq"
	"github.com/profcap/profcap/internal/testsvc"
)

// End-to-end captures of programs nobody here wrote, or built the way a
// distribution builds them: a stripped Go service with a pprof endpoint,
// Debian's nginx under wrk and Debian's PostgreSQL under pgbench, each
// recorded by `profcap record` with the default collectors.

// goSvcSrc is a Go service that burns CPU in main.spinHash (called by
// main.burner) and serves net/http/pprof on a loopback port it prints.
const goSvcSrc = `package main

import (
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
)

//go:noinline
func spinHash(n int) uint64 {
	h := uint64(1469598103934665603)
	for i := 0; i < n; i++ {
		h ^= uint64(i)
		h *= 1099511628211
	}
	return h
}

var sink uint64

func burner() {
	for {
		sink += spinHash(1 << 20)
	}
}

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go burner()
	fmt.Println(ln.Addr())
	os.Stdout.Sync()
	http.Serve(ln, nil)
}
`

// buildGoSvc builds goSvcSrc, with symbols or stripped as Debian strips
// its Go packages (-ldflags='-s -w', then strip).
func buildGoSvc(t *testing.T, stripped bool) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(goSvcSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module gosvc\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "gosvc")
	args := []string{"build", "-o", bin}
	if stripped {
		bin += "-stripped"
		args = []string{"build", "-ldflags=-s -w", "-o", bin}
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if stripped {
		if out, err := exec.Command(testreq.Command(t, "strip"), bin).CombinedOutput(); err != nil {
			t.Fatalf("strip: %v\n%s", err, out)
		}
	}
	return bin
}

// startGoSvc starts bin and returns its pid and pprof base URL.
func startGoSvc(t *testing.T, bin string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("%s printed no address: %v", bin, err)
	}
	return cmd.Process.Pid, "http://" + strings.TrimSpace(addr) + "/debug/pprof"
}

// pickLine returns the `profcap targets` line of kind marked with > (the
// collector record takes it from), split into fields.
func pickLine(out string, kind bundle.Kind) []string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == ">" && f[1] == string(kind) {
			return f
		}
	}
	return nil
}

// TestStrippedGoTakesCPUFromPprof: a Go service whose binary has no
// symbols (go build -ldflags='-s -w', strip) and a pprof endpoint takes cpu
// from the endpoint, whose profile names its functions, where eBPF and perf
// would give gosvc-stripped+0x... frames; targets marks it and says why.
// The same service built with symbols keeps its native cpu collector.
func TestStrippedGoTakesCPUFromPprof(t *testing.T) {
	testreq.Command(t, "perf") // a native collector to be passed over
	for _, stripped := range []bool{true, false} {
		t.Run(fmt.Sprintf("stripped=%v", stripped), func(t *testing.T) {
			pid, url := startGoSvc(t, buildGoSvc(t, stripped))
			dir := t.TempDir()
			cfg := fmt.Sprintf("targets:\n  - name: gosvc\n    pid: %d\n    pprof: %s\n", pid, url)
			if err := os.WriteFile(filepath.Join(dir, "profcap.yaml"), []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			out, stderr, code := profcapIn(t, dir, "targets")
			if code != 0 {
				t.Fatalf("targets: exit %d\n%s", code, stderr)
			}
			pick := pickLine(out, bundle.CPU)
			if pick == nil {
				t.Fatalf("no collector marked for cpu:\n%s", out)
			}
			reason := strings.Join(pick[3:], " ")
			if stripped {
				if pick[2] != "pprof" || !strings.Contains(reason, "Go binary without symbols") {
					t.Errorf("targets marks %v for cpu, want pprof with the reason:\n%s", pick, out)
				}
				for _, c := range []string{"ebpf", "perf"} {
					if !regexp.MustCompile(`(?m)^\s+cpu\s+` + c + `\s+unavailable\s+.*Go binary without symbols`).MatchString(out) {
						t.Errorf("targets does not say why %s leaves cpu to pprof:\n%s", c, out)
					}
				}
			} else if pick[2] == "pprof" || strings.Contains(out, "without symbols") {
				t.Errorf("with symbols targets marks %v for cpu, want the native collector as before:\n%s", pick, out)
			}

			_, stderr, code = profcapIn(t, dir, "record", "--profiles", "cpu,offcpu", "--duration", "3s", "--out", "cap")
			if code != 0 {
				t.Fatalf("record: exit %d\n%s", code, stderr)
			}
			m, err := bundle.Read(filepath.Join(dir, "cap"))
			if err != nil {
				t.Fatal(err)
			}
			got := byKind(t, m, "gosvc")
			cpu := got[bundle.CPU]
			if cpu.Status != bundle.StatusOK || cpu.Collector != pick[2] {
				t.Fatalf("cpu %+v, want ok from %s (targets' pick)", cpu, pick[2])
			}
			if stripped && !strings.Contains(cpu.Note, "Go binary without symbols") {
				t.Errorf("the cpu note does not say why pprof took it: %q", cpu.Note)
			}
			if got[bundle.OffCPU].Collector == "pprof" || got[bundle.OffCPU].Status != bundle.StatusOK {
				t.Errorf("offcpu %+v, want ok from a native collector", got[bundle.OffCPU])
			}
			p := loadProfile(t, filepath.Join(dir, "cap", cpu.Path))
			// pprof's stacks have every caller; a frame-pointer walk loses
			// the caller of a Go leaf that sets up no frame (main.spinHash:
			// main.burner), which eBPF's leaf fix-up restores from the
			// binary's pclntab.
			var total, named, withCaller int64
			for _, s := range p.Sample {
				total += s.Value[0]
				if stackHas(s, "main.spinHash") {
					named += s.Value[0]
					if under(s, "main.spinHash", "main.burner") {
						withCaller += s.Value[0]
					}
				}
			}
			t.Logf("cpu from %s: %d samples, %.1f%% in main.spinHash, %.1f%% of them under main.burner", cpu.Collector, total, pct(named, total), pct(withCaller, named))
			if total == 0 || pct(named, total) < 50 {
				t.Errorf("cpu from %s: %.1f%% of %d in main.spinHash, want most (the service burns one core there)\n%s", cpu.Collector, pct(named, total), total, topFuncs(p, 10))
			}
			if (cpu.Collector == "pprof" || cpu.Collector == "ebpf") && pct(withCaller, named) < 90 {
				t.Errorf("cpu from %s: %.1f%% of main.spinHash under main.burner, want all\n%s", cpu.Collector, pct(withCaller, named), topFuncs(p, 10))
			}
		})
	}
}

func loadProfile(t *testing.T, path string) *profile.Profile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return p
}

func frames(s *profile.Sample) []string {
	var fs []string // leaf first
	for _, l := range s.Location {
		if len(l.Line) == 0 {
			fs = append(fs, "")
		}
		for _, ln := range l.Line {
			fs = append(fs, ln.Function.Name)
		}
	}
	return fs
}

func stackHas(s *profile.Sample, fn string) bool { return slices.Contains(frames(s), fn) }

// under says whether fn is in s's stack with caller somewhere below it
// (nearer the root).
func under(s *profile.Sample, fn, caller string) bool {
	fs := frames(s)
	i := slices.Index(fs, fn)
	return i >= 0 && slices.Contains(fs[i+1:], caller)
}

// unknownStack says whether s has a frame profcap could not place: an
// [unknown] frame or a location without a line.
func unknownStack(s *profile.Sample) bool {
	return slices.ContainsFunc(frames(s), func(f string) bool { return f == "" || strings.Contains(f, "[unknown]") })
}

func pct(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

func samplePID(s *profile.Sample) int {
	if v := s.NumLabel["pid"]; len(v) > 0 {
		return int(v[0])
	}
	return 0
}

// topFuncs lists the functions with the most samples in their stacks.
func topFuncs(p *profile.Profile, n int) string {
	cum := map[string]int64{}
	var total int64
	for _, s := range p.Sample {
		total += s.Value[0]
		seen := map[string]bool{}
		for _, f := range frames(s) {
			if !seen[f] {
				cum[f] += s.Value[0]
				seen[f] = true
			}
		}
	}
	names := make([]string, 0, len(cum))
	for f := range cum {
		names = append(names, f)
	}
	slices.SortFunc(names, func(a, b string) int { return int(cum[b] - cum[a]) })
	var b strings.Builder
	for _, f := range names[:min(n, len(names))] {
		fmt.Fprintf(&b, "  %5.1f%% %s\n", pct(cum[f], total), f)
	}
	return b.String()
}

// freePort returns a loopback TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitPort waits until something accepts on port.
func waitPort(t *testing.T, port int, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("%s does not accept on port %d", what, port)
}

// childPIDs lists the processes whose parent is pid and whose cmdline
// matches re.
func childPIDs(pid int, re *regexp.Regexp) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
		if err != nil {
			continue
		}
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c))
		if re.Match(cl) {
			out = append(out, c)
		}
	}
	return out
}

// recordNative runs `profcap record --pid pid` for cpu and offcpu with the
// default collectors (or extra flags) in dir and returns the manifest's
// profiles.
func recordNative(t *testing.T, dir string, pid int, window string, extra ...string) (map[bundle.Kind]bundle.Profile, string) {
	t.Helper()
	out := filepath.Join(dir, "cap")
	args := append([]string{"record", "--pid", strconv.Itoa(pid), "--profiles", "cpu,offcpu", "--duration", window, "--baseline", "0", "--out", out}, extra...)
	_, stderr, code := profcapIn(t, dir, args...)
	if code != 0 {
		t.Fatalf("record: exit %d\n%s", code, stderr)
	}
	m, err := bundle.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	return byKind(t, m, fmt.Sprintf("pid-%d", pid)), out
}

// TestNginxUnderWrk: `profcap record --pid` of Debian's nginx master while
// wrk loads it shows the workers' request paths with their callers down to
// main. Debian's nginx has no frame pointers (the eBPF collector walks it
// by its .eh_frame; perf would need DWARF) and no .symtab: names come
// from .dynsym, which holds
// the functions nginx exports for dynamic modules; its static functions
// (ngx_worker_process_cycle, ngx_epoll_process_events, ...) stay
// nginx+0x... frames without the nginx-dbgsym package (one per function,
// named by its start), but are frames, with their callers, not [unknown].
func TestNginxUnderWrk(t *testing.T) {
	testreq.Root(t, "perf and eBPF of another user's processes")
	testreq.Command(t, "perf")
	nginx := testreq.Command(t, "nginx")
	wrk := testreq.Command(t, "wrk")

	dir := t.TempDir()
	port := freePort(t)
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("hello from nginx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := testsvc.NginxConf(dir, port)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// Workers run as nobody: the files they serve must be reachable.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command(nginx, "-c", filepath.Join(dir, "nginx.conf"), "-p", dir, "-e", filepath.Join(dir, "error.log"))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// SIGTERM is nginx's fast shutdown: the master stops its workers
		// (a SIGKILL would leave them running).
		srv.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			srv.Process.Kill()
			<-done
		}
	})
	waitPort(t, port, "nginx")
	master := srv.Process.Pid
	var workers []int // the master forks them after it listens
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if workers = childPIDs(master, regexp.MustCompile(`^nginx: worker`)); len(workers) >= 2 {
			break
		}
	}
	if len(workers) != 2 {
		t.Fatalf("nginx master %d has workers %v, want 2", master, workers)
	}

	// wrk runs over the whole window (the capture waits a second or two
	// for perf before it opens) and counts what nginx served.
	load := exec.Command(wrk, "-t1", "-c8", "-d10s", fmt.Sprintf("http://127.0.0.1:%d/", port))
	var wrkOut strings.Builder
	load.Stdout, load.Stderr = &wrkOut, &wrkOut
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { load.Process.Kill(); load.Wait() })
	time.Sleep(500 * time.Millisecond)
	got, capDir := recordNative(t, t.TempDir(), master, "5s")
	if err := load.Wait(); err != nil {
		t.Fatalf("wrk: %v\n%s", err, wrkOut.String())
	}
	reqs := regexp.MustCompile(`(\d+) requests in ([\d.]+)s`).FindStringSubmatch(wrkOut.String())
	rate := regexp.MustCompile(`Requests/sec:\s+([\d.]+)`).FindStringSubmatch(wrkOut.String())
	if reqs == nil || rate == nil || reqs[1] == "0" {
		t.Fatalf("wrk served nothing:\n%s", wrkOut.String())
	}

	cpu := got[bundle.CPU]
	if cpu.Status != bundle.StatusOK || cpu.Samples == 0 {
		t.Fatalf("cpu %+v, want ok with samples", cpu)
	}
	p := loadProfile(t, filepath.Join(capDir, cpu.Path))
	var total, ofWorkers, unknown, loop, request, whole int64
	for _, s := range p.Sample {
		v := s.Value[0]
		total += v
		if slices.Contains(workers, samplePID(s)) {
			ofWorkers += v
		}
		if unknownStack(s) {
			unknown += v
		}
		if stackHas(s, "ngx_process_events_and_timers") {
			loop += v
		}
		if under(s, "ngx_http_core_run_phases", "ngx_process_events_and_timers") {
			request += v
		}
		if stackHas(s, "main") {
			whole += v
		}
	}
	t.Logf("wrk: %s requests in %ss (%s/s); cpu from %s: %d samples, %.1f%% in the workers %v, %.1f%% under [unknown], %.1f%% under ngx_process_events_and_timers, %.1f%% in ngx_http_core_run_phases under it, %.1f%% reach main",
		reqs[1], reqs[2], rate[1], cpu.Collector, total, pct(ofWorkers, total), workers, pct(unknown, total), pct(loop, total), pct(request, total), pct(whole, total))
	if pct(ofWorkers, total) < 90 {
		t.Errorf("%.1f%% of cpu in the workers %v, want the most (the master does nothing under wrk)", pct(ofWorkers, total), workers)
	}
	if pct(unknown, total) > 5 {
		t.Errorf("%.1f%% of cpu under [unknown], want at most 5%%\n%s", pct(unknown, total), topFuncs(p, 30))
	}
	if pct(loop, total) < 70 || pct(request, total) < 30 || pct(whole, total) < 70 {
		t.Errorf("request paths without callers: %.1f%% under the event loop, %.1f%% in ngx_http_core_run_phases under it, %.1f%% reach main\n%s",
			pct(loop, total), pct(request, total), pct(whole, total), topFuncs(p, 30))
	}
	// What has a name and what not, for the record: static functions have
	// none without the debug package.
	for _, fn := range []string{"ngx_http_process_request", "ngx_http_handler", "ngx_epoll_process_events", "ngx_worker_process_cycle", "ngx_spawn_process", "ngx_master_process_cycle"} {
		var n int64
		for _, s := range p.Sample {
			if stackHas(s, fn) {
				n += s.Value[0]
			}
		}
		t.Logf("  %-30s %5.1f%% of cpu", fn, pct(n, total))
	}
	if off := got[bundle.OffCPU]; off.Status != bundle.StatusOK || off.Collector != cpu.Collector {
		t.Errorf("offcpu %+v, want ok from %s", off, cpu.Collector)
	}
}

// TestPostgresUnderPgbench: off-CPU of Debian's PostgreSQL under pgbench,
// recorded by `profcap record --pid` of the postmaster: every backend
// pgbench connected is in the profile, its commits wait in the WAL flush
// (fdatasync under XLogFlush under CommitTransactionCommand, PostgresMain)
// and its row-lock waits in ProcSleep under LockAcquireExtended and
// XactLockTableWait (pgbench's tpcb updates the scale-1 pgbench_branches
// row from every client). Debian's postgres has no .symtab: exported
// functions are named from .dynsym; static ones and GCC's local clones
// (XLogWrite, the clone of issue_xlog_fsync that calls fdatasync) are
// postgres+0x... frames, one per function (its start, from .eh_frame_hdr).
func TestPostgresUnderPgbench(t *testing.T) {
	testreq.Root(t, "perf of the postgres user's processes")
	testreq.Command(t, "perf")
	pgbench := testreq.Command(t, "pgbench")
	bin := postgresBin(t)
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		testreq.Missing(t, "a postgres user (Debian's postgresql package creates it): %v", err)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)

	// The cluster lives where the postgres user may write (t.TempDir is
	// root's, mode 0700), on the disk of /tmp: fdatasync must really wait.
	dir, err := os.MkdirTemp("", "profcap-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// As the postgres user (initdb and postgres refuse root), in a
	// directory it may enter; output to a file, which the backends the
	// postmaster forks may keep open after it exits.
	asPostgres := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		cmd.Stdout, cmd.Stderr = logf, logf
		return cmd
	}
	if err := asPostgres("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync").Run(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, serverLog(dir))
	}
	port := freePort(t)
	srv := asPostgres("postgres", "-D", data, "-p", strconv.Itoa(port), "-k", dir, "-c", "listen_addresses=127.0.0.1")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// SIGINT is PostgreSQL's fast shutdown: the postmaster ends its
		// backends and exits.
		srv.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			srv.Process.Kill()
			<-done
		}
	})
	waitPort(t, port, "postgres")
	postmaster := srv.Process.Pid
	pg := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres"}
	if out, err := exec.Command(pgbench, append(pg, "-i", "-s", "1", "postgres")...).CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s\n%s", err, out, serverLog(dir))
	}

	const clients = 8
	load := exec.Command(pgbench, append(pg, "-c", strconv.Itoa(clients), "-j", "2", "-T", "20", "postgres")...)
	var pgbOut strings.Builder
	load.Stdout, load.Stderr = &pgbOut, &pgbOut
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { load.Process.Kill(); load.Wait() })
	// pgbench connects its clients first: wait for their backends.
	backendRE := regexp.MustCompile(`^postgres: postgres postgres 127\.0\.0\.1`)
	var backends []int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if backends = childPIDs(postmaster, backendRE); len(backends) >= clients {
			break
		}
	}
	if len(backends) != clients {
		t.Fatalf("postmaster %d has backends %v, want %d for pgbench's clients", postmaster, backends, clients)
	}
	// The default collectors (eBPF where it loads: Debian's postgres
	// keeps frame pointers), then perf, the fallback where eBPF cannot
	// load, given the postmaster and its children alive at its start.
	type capture struct {
		collector string
		got       map[bundle.Kind]bundle.Profile
		dir       string
	}
	var caps []capture
	for _, force := range []string{"", "perf"} {
		var extra []string
		if force != "" {
			extra = []string{"--collector", force}
		}
		got, capDir := recordNative(t, t.TempDir(), postmaster, "5s", extra...)
		caps = append(caps, capture{force, got, capDir})
	}
	if err := load.Wait(); err != nil {
		t.Fatalf("pgbench: %v\n%s", err, pgbOut.String())
	}
	txns := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(pgbOut.String())
	tps := regexp.MustCompile(`tps = ([\d.]+)`).FindStringSubmatch(pgbOut.String())
	if txns == nil || tps == nil || txns[1] == "0" {
		t.Fatalf("pgbench processed nothing:\n%s", pgbOut.String())
	}
	t.Logf("pgbench over both captures: %s transactions, tps %s (%d clients)", txns[1], tps[1], clients)
	for _, c := range caps {
		checkBackendsOffCPU(t, c.got, c.dir, c.collector, backends)
	}
}

// checkBackendsOffCPU checks the offcpu profile of a capture of the
// postmaster for its backends: each in it, none blocked longer than the
// window, the WAL flush and the lock waits under their callers.
func checkBackendsOffCPU(t *testing.T, got map[bundle.Kind]bundle.Profile, capDir, force string, backends []int) {
	t.Helper()
	off := got[bundle.OffCPU]
	if off.Status != bundle.StatusOK || off.Samples == 0 {
		t.Fatalf("offcpu %+v, want ok with samples", off)
	}
	if force != "" && off.Collector != force {
		t.Errorf("offcpu from %s, want %s (--collector)", off.Collector, force)
	}
	p := loadProfile(t, filepath.Join(capDir, off.Path))
	var ofBackends, unknown, wal, walNamed, lock, lockCaller int64
	perBackend := map[int]int64{}
	for _, s := range p.Sample {
		if !slices.Contains(backends, samplePID(s)) {
			continue
		}
		v := s.Value[0]
		ofBackends += v
		perBackend[samplePID(s)] += v
		if unknownStack(s) {
			unknown += v
		}
		if under(s, "fdatasync", "XLogFlush") && stackHas(s, "PostgresMain") {
			wal += v
			if stackHas(s, "issue_xlog_fsync") {
				walNamed += v
			}
		}
		if under(s, "ProcSleep", "LockAcquireExtended") && stackHas(s, "PostgresMain") {
			lock += v
			if under(s, "LockAcquireExtended", "XactLockTableWait") {
				lockCaller += v
			}
		}
	}
	var missing []int
	for _, b := range backends {
		if perBackend[b] == 0 {
			missing = append(missing, b)
		} else if perBackend[b] > p.DurationNanos*105/100 {
			t.Errorf("backend %d blocked %.2f s in a %.2f s window", b, float64(perBackend[b])/1e9, float64(p.DurationNanos)/1e9)
		}
	}
	sec := func(ns int64) float64 { return float64(ns) / 1e9 }
	t.Logf("offcpu from %s, %.2f s window: %d backends blocked %.2f s (%.1f%% of their time), %.1f%% under [unknown], WAL flush (fdatasync under XLogFlush) %.2f s = %.1f%% (issue_xlog_fsync named in %.2f s), lock waits (ProcSleep under LockAcquireExtended) %.2f s = %.1f%% (%.2f s under XactLockTableWait)",
		off.Collector, sec(p.DurationNanos), len(backends), sec(ofBackends), pct(ofBackends, p.DurationNanos*int64(len(backends))), pct(unknown, ofBackends), sec(wal), pct(wal, ofBackends), sec(walNamed), sec(lock), pct(lock, ofBackends), sec(lockCaller))
	if len(missing) > 0 {
		t.Errorf("%s: backends %v of %v are not in the offcpu profile", off.Collector, missing, backends)
	}
	if wal == 0 {
		t.Errorf("%s: no WAL flush under its callers in the backends' offcpu\n%s", off.Collector, topFuncs(p, 40))
	}
	if lock == 0 || lockCaller == 0 {
		t.Errorf("%s: no lock wait under its callers in the backends' offcpu (%.2f s, %.2f s under XactLockTableWait)\n%s", off.Collector, sec(lock), sec(lockCaller), topFuncs(p, 40))
	}
	if pct(unknown, ofBackends) > 5 {
		t.Errorf("%s: %.1f%% of the backends' offcpu under [unknown], want at most 5%%\n%s", off.Collector, pct(unknown, ofBackends), topFuncs(p, 40))
	}
	if cpu := got[bundle.CPU]; cpu.Status != bundle.StatusOK || cpu.Collector != off.Collector {
		t.Errorf("cpu %+v, want ok from %s", cpu, off.Collector)
	}
}

// postgresBin is the directory of Debian's PostgreSQL server programs.
func postgresBin(t *testing.T) string {
	t.Helper()
	ds, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.Sort(ds)
	for i := len(ds) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(ds[i], "initdb")); err == nil {
			return ds[i]
		}
	}
	testreq.Missing(t, "PostgreSQL's server (/usr/lib/postgresql/*/bin/initdb: apt-get install postgresql)")
	return ""
}

// serverLog is what initdb and postgres wrote, for a failure's message.
func serverLog(dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
	return string(b)
}
