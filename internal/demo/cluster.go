package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/profcap/profcap/targets"
)

// Cluster layout inside the cluster directory, as the reference cluster's
// scripts write it.
const (
	PidsDir    = ".pids"
	LogsDir    = ".logs"
	ConfigFile = targets.DefaultConfig // profcap.yaml
)

// ServiceCommand is the profcap subcommand each service process runs; Stop
// only signals processes whose command line has it.
const ServiceCommand = "demo-service"

// Defaults for Options and Stop.
const (
	DefaultHealthTimeout = 20 * time.Second
	DefaultStopGrace     = 5 * time.Second
)

// Options configures Start.
type Options struct {
	// Dir is the cluster directory: it gets .pids/, .logs/ and profcap.yaml.
	Dir string
	// Executable is the profcap binary to run the services with
	// (default: os.Executable(), the running profcap).
	Executable string
	// PortOffset shifts every port of the reference layout (8080, 8100,
	// 8200, 8300) by this much.
	PortOffset int
	// FreePorts lets the kernel pick a free port for every service instead
	// of using the reference layout.
	FreePorts bool
	// Detach lets the services outlive the process that started them.
	// Otherwise each service exits as soon as its parent is gone.
	Detach bool
	// Rate and Work are passed to every service (see ServiceConfig).
	Rate, Work float64
	// Workers is how many instances of each worker run (default 1):
	// worker-rust-1 … worker-rust-N, and as many Ruby and Python workers.
	Workers int
	// Sick names services to make sick (ServiceConfig.Sick): a worker
	// spends more CPU on every step and waits on a slower database
	// that reconnects for every query; an orchestrator's database is
	// slower. The report's outlier view should single them out.
	Sick []string
	// HealthTimeout bounds the wait for every /health to answer
	// (default DefaultHealthTimeout).
	HealthTimeout time.Duration
	// OnExit, if set, is called when a service exits before Stop was
	// called on the cluster (e.g. it crashed or was killed from outside).
	OnExit func(s Service, err error)
}

// Service is one running service of a cluster.
type Service struct {
	Instance
	Port    int
	Console string // tokio-console gRPC address, 127.0.0.1:PORT
	PID     int
	URL     string // http://127.0.0.1:PORT
	PIDFile string // absolute
	LogFile string // absolute
	Sick    bool   // started sick (Options.Sick)
}

// Cluster is a running demo cluster started by Start.
type Cluster struct {
	Dir        string // absolute
	ConfigPath string // DIR/profcap.yaml
	Services   []Service

	procs    []*child
	done     chan struct{}
	mu       sync.Mutex
	stopping bool
	stopOnce sync.Once
	stopErr  error
}

type child struct {
	svc    *Service
	cmd    *exec.Cmd
	exited chan struct{} // closed after Wait returns
	err    error         // from Wait
}

// ErrRunning is returned by Start when the directory already has a live
// demo cluster.
var ErrRunning = errors.New("a demo cluster is already running")

// Start starts the five services of the demo cluster as child processes
// of their own sessions, writes DIR/.pids/NAME.pid, DIR/.logs/NAME.log and
// DIR/profcap.yaml, and waits until every service answers /health. If
// anything fails, it stops what it started.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if err := checkPlatform(); err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		return nil, errors.New("no cluster directory given")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	exe := opts.Executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("finding the profcap binary to run the services: %w", err)
		}
	}
	if opts.HealthTimeout <= 0 {
		opts.HealthTimeout = DefaultHealthTimeout
	}
	for _, sub := range []string{PidsDir, LogsDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("creating the cluster directory: %w", err)
		}
	}
	// The services carry the directory in their command line, which Stop
	// compares: use one spelling of it however it was reached.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	if err := checkNotRunning(dir); err != nil {
		return nil, err
	}
	if opts.Workers > MaxWorkers {
		return nil, fmt.Errorf("at most %d instances of each worker", MaxWorkers)
	}
	layout := LayoutFor(opts.Workers)
	if err := checkSick(layout, opts.Sick); err != nil {
		return nil, err
	}

	// Open every port here and hand the listeners down: a port that is
	// taken fails now, by name, and none can be taken in between.
	lns, err := listenAll(layout, opts)
	if err != nil {
		return nil, err
	}
	defer closeAll(lns)
	cls, err := listenConsoles(layout, opts)
	if err != nil {
		return nil, err
	}
	defer closeAll(cls)

	c := &Cluster{Dir: dir, ConfigPath: filepath.Join(dir, ConfigFile), done: make(chan struct{})}
	var peers []string
	for i, in := range layout {
		port := lns[i].Addr().(*net.TCPAddr).Port
		s := Service{
			Instance: in,
			Port:     port,
			Console:  cls[i].Addr().String(),
			URL:      "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			PIDFile:  filepath.Join(dir, PidsDir, in.Name+".pid"),
			LogFile:  filepath.Join(dir, LogsDir, in.Name+".log"),
		}
		c.Services = append(c.Services, s)
		if in.Role == RoleWorker {
			peers = append(peers, s.URL)
		}
	}

	for i := range c.Services {
		if err := c.spawn(exe, &c.Services[i], lns[i], cls[i], peers, opts); err != nil {
			c.Stop(context.Background())
			return nil, err
		}
		lns[i].Close() // the child has its own copies
		cls[i].Close()
	}
	go func() {
		for _, p := range c.procs {
			<-p.exited
		}
		close(c.done)
	}()
	for _, p := range c.procs {
		go func() {
			<-p.exited
			c.mu.Lock()
			stopping := c.stopping
			c.mu.Unlock()
			if !stopping && opts.OnExit != nil {
				opts.OnExit(*p.svc, p.err)
			}
		}()
	}

	if err := c.waitHealthy(ctx, opts.HealthTimeout); err != nil {
		c.Stop(context.Background())
		return nil, err
	}
	if err := writeConfig(c.ConfigPath, c.Services); err != nil {
		c.Stop(context.Background())
		return nil, err
	}
	return c, nil
}

func listenAll(layout []Instance, opts Options) ([]net.Listener, error) {
	var lns []net.Listener
	for _, in := range layout {
		port := 0
		if !opts.FreePorts {
			port = in.Port(opts.PortOffset)
			if port <= 0 || port > 65535 {
				closeAll(lns)
				return nil, fmt.Errorf("%s: port %d is out of range (check --port-offset)", in.Name, port)
			}
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			closeAll(lns)
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("%s: port %d on 127.0.0.1 is already in use: pick other ports with --port-offset N or --free-ports", in.Name, port)
			}
			return nil, fmt.Errorf("%s: listening on port %d: %w", in.Name, port, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// listenConsoles opens each service's tokio-console port (see ConsolePort).
func listenConsoles(layout []Instance, opts Options) ([]net.Listener, error) {
	var lns []net.Listener
	for i, in := range layout {
		port := 0
		if !opts.FreePorts {
			port = ConsolePort(i, opts.PortOffset)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			closeAll(lns)
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("%s: tokio-console port %d on 127.0.0.1 is already in use: pick other ports with --port-offset N or --free-ports", in.Name, port)
			}
			return nil, fmt.Errorf("%s: listening on console port %d: %w", in.Name, port, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// listenFD and consoleFD are the descriptor numbers the child finds its
// HTTP and console listeners on (ExtraFiles[0] and [1]).
const (
	listenFD  = 3
	consoleFD = 4
)

func (c *Cluster) spawn(exe string, s *Service, ln, cln net.Listener, peers []string, opts Options) error {
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		return fmt.Errorf("%s: passing the listener: %w", s.Name, err)
	}
	defer lf.Close()
	cf, err := cln.(*net.TCPListener).File()
	if err != nil {
		return fmt.Errorf("%s: passing the console listener: %w", s.Name, err)
	}
	defer cf.Close()
	logf, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("%s: creating log file: %w", s.Name, err)
	}
	defer logf.Close()

	args := []string{ServiceCommand,
		"--name", s.Name,
		"--role", string(s.Role),
		"--language", s.Language,
		"--port", strconv.Itoa(s.Port),
		"--listen-fd", strconv.Itoa(listenFD),
		"--console-fd", strconv.Itoa(consoleFD),
		"--cluster", c.Dir,
	}
	if s.Role == RoleOrchestration {
		args = append(args, "--peers", strings.Join(peers, ","))
	}
	if opts.Rate > 0 {
		args = append(args, "--rate", strconv.FormatFloat(opts.Rate, 'g', -1, 64))
	}
	if opts.Work > 0 {
		args = append(args, "--work", strconv.FormatFloat(opts.Work, 'g', -1, 64))
	}
	if slices.Contains(opts.Sick, s.Name) {
		args = append(args, "--sick")
		s.Sick = true
	}
	if !opts.Detach {
		args = append(args, "--parent-pid", strconv.Itoa(os.Getpid()))
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir = c.Dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{lf, cf}
	// Own session and process group: a Ctrl-C in the terminal reaches the
	// manager only, which then stops the services in order; and detached
	// services do not get the terminal's hangup.
	cmd.SysProcAttr = detachedAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: starting %s: %w", s.Name, exe, err)
	}
	s.PID = cmd.Process.Pid
	p := &child{svc: s, cmd: cmd, exited: make(chan struct{})}
	c.procs = append(c.procs, p)
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := writePIDFile(s.PIDFile, s.PID); err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return nil
}

func writePIDFile(file string, pid int) error {
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing pid file: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing pid file: %w", err)
	}
	return nil
}

// waitHealthy polls every service's /health until all answer, one exits,
// or the timeout passes.
func (c *Cluster) waitHealthy(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{}
	defer client.CloseIdleConnections()
	errs := make([]error, len(c.procs))
	var wg sync.WaitGroup
	for i, p := range c.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.waitOne(ctx, client, p, timeout)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Cluster) waitOne(ctx context.Context, client *http.Client, p *child, timeout time.Duration) error {
	s := p.svc
	var last error
	for {
		if last = probeHealth(ctx, client, s.URL); last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited while starting (%v); see %s%s", s.Name, p.err, s.LogFile, logTail(s.LogFile))
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("%s did not answer %s/health within %v (%v); see %s%s", s.Name, s.URL, timeout, last, s.LogFile, logTail(s.LogFile))
			}
			return fmt.Errorf("%s: waiting for health: %w", s.Name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// logTail returns the last lines of a log file, indented, for an error.
func logTail(file string) string {
	data, err := os.ReadFile(file)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	lines = lines[max(0, len(lines)-5):]
	return ":\n    " + strings.Join(lines, "\n    ")
}

// writeConfig writes the targets file naming every service.
func writeConfig(file string, svcs []Service) error {
	var cfg targets.Config
	for _, s := range svcs {
		cfg.Targets = append(cfg.Targets, targets.Target{
			Name:         s.Name,
			Pprof:        s.URL + "/debug/pprof",
			PIDFile:      filepath.Join(PidsDir, s.Name+".pid"),
			TokioConsole: s.Console,
			Labels:       map[string]string{"role": s.Group(), "language": s.Language},
		})
	}
	body, err := yaml.Marshal(&cfg)
	if err != nil {
		return err
	}
	data := append([]byte("# Written by 'profcap demo': the demo cluster's services.\n# Stop the cluster with: profcap demo --stop --dir "+filepath.Dir(file)+"\n"), body...)
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", file, err)
	}
	return os.Rename(tmp, file)
}

// Done is closed when every service process has exited.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Stop stops the services: SIGTERM, then SIGKILL to any still running after
// DefaultStopGrace or as soon as ctx is done. It removes the PID files.
// Safe to call more than once.
func (c *Cluster) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() {
		c.mu.Lock()
		c.stopping = true
		c.mu.Unlock()
		for _, p := range c.procs {
			p.cmd.Process.Signal(syscall.SIGTERM)
		}
		grace := time.NewTimer(DefaultStopGrace)
		defer grace.Stop()
		var errs []error
		for _, p := range c.procs {
			select {
			case <-p.exited:
			case <-grace.C:
				grace.Reset(0) // the rest are killed without waiting again
				p.cmd.Process.Kill()
				<-p.exited
			case <-ctx.Done():
				p.cmd.Process.Kill()
				<-p.exited
			}
			if err := removeIfPID(p.svc.PIDFile, p.svc.PID); err != nil {
				errs = append(errs, err)
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// removeIfPID removes a PID file if it still holds pid.
func removeIfPID(file string, pid int) error {
	got, err := readPIDFile(file)
	if errors.Is(err, os.ErrNotExist) || (err == nil && got != pid) {
		return nil
	}
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func readPIDFile(file string) (int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: not a process id: %q", file, strings.TrimSpace(string(data)))
	}
	return pid, nil
}

// pidFiles lists DIR/.pids/*.pid as name → path, sorted by name.
func pidFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(dir, PidsDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".pid"); ok && !e.IsDir() && targets.ValidName(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// checkNotRunning fails if a PID file in dir names a live service of this
// cluster, and removes the stale ones.
func checkNotRunning(dir string) error {
	names, err := pidFiles(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		file := filepath.Join(dir, PidsDir, name+".pid")
		pid, err := readPIDFile(file)
		if err == nil && processAlive(pid) && isDemoService(pid, name, dir) {
			return fmt.Errorf("%w in %s (%s is pid %d): stop it with 'profcap demo --stop --dir %s'", ErrRunning, dir, name, pid, dir)
		}
		os.Remove(file)
	}
	return nil
}

// StopResult says what Stop did about one PID file.
type StopResult struct {
	Name    string
	PID     int
	Outcome string // stopped, killed, not running, not a demo service (left running), bad pid file
	Err     error
}

// Stop stops the demo cluster in dir by its PID files, without needing the
// process that started it: SIGTERM, then SIGKILL after grace (or at once
// when ctx is done). A PID file whose process is not this cluster's
// demo-service (a stale file whose PID was reused) never gets its process
// signalled. Every PID file is removed. Stop returns no results and no
// error when dir has no PID files.
func Stop(ctx context.Context, dir string, grace time.Duration) ([]StopResult, error) {
	if err := checkPlatform(); err != nil {
		return nil, err
	}
	if grace <= 0 {
		grace = DefaultStopGrace
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	names, err := pidFiles(dir)
	if err != nil {
		return nil, err
	}
	results := make([]StopResult, len(names))
	var signalled []int // indexes into results
	for i, name := range names {
		r := &results[i]
		r.Name = name
		file := filepath.Join(dir, PidsDir, name+".pid")
		pid, err := readPIDFile(file)
		switch {
		case err != nil:
			r.Outcome, r.Err = "bad pid file", err
		case !processAlive(pid):
			r.PID, r.Outcome = pid, "not running"
		case !isDemoService(pid, name, dir):
			r.PID, r.Outcome = pid, "not a demo service (left running)"
		default:
			r.PID = pid
			if err := signal(pid, syscall.SIGTERM); err != nil {
				r.Outcome, r.Err = "signal failed", fmt.Errorf("signalling %s (pid %d): %w", name, pid, err)
				continue
			}
			signalled = append(signalled, i)
			continue
		}
		os.Remove(file)
	}

	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	killed := false
	var errs []error
	for len(signalled) > 0 {
		left := signalled[:0]
		for _, i := range signalled {
			r := &results[i]
			if processAlive(r.PID) {
				left = append(left, i)
				continue
			}
			if r.Outcome == "" {
				r.Outcome = "stopped"
			}
			os.Remove(filepath.Join(dir, PidsDir, r.Name+".pid"))
		}
		signalled = left
		if len(signalled) == 0 {
			break
		}
		select {
		case <-tick.C:
			continue
		case <-deadline.C:
		case <-ctx.Done():
		}
		if killed {
			for _, i := range signalled {
				r := &results[i]
				r.Outcome, r.Err = "still running", fmt.Errorf("%s (pid %d) survived SIGKILL", r.Name, r.PID)
				errs = append(errs, r.Err)
			}
			break
		}
		for _, i := range signalled {
			r := &results[i]
			if isDemoService(r.PID, r.Name, dir) {
				signal(r.PID, syscall.SIGKILL)
				r.Outcome = "killed"
			}
		}
		killed = true
		deadline.Reset(2 * time.Second)
	}
	for _, r := range results {
		if r.Err != nil && r.Outcome != "still running" {
			errs = append(errs, r.Err)
		}
	}
	return results, errors.Join(errs...)
}

// checkSick fails when a name to make sick is not a service of the layout,
// suggesting the nearest one.
func checkSick(layout []Instance, sick []string) error {
	var names []string
	for _, in := range layout {
		names = append(names, in.Name)
	}
	for _, n := range sick {
		if slices.Contains(names, n) {
			continue
		}
		msg := fmt.Sprintf("--sick %q: no such service (the cluster has %s)", n, strings.Join(names, ", "))
		if near := nearest(n, names); near != "" {
			msg = fmt.Sprintf("--sick %q: no such service; did you mean %q? (more instances of a worker: --workers N)", n, near)
		}
		return errors.New(msg)
	}
	return nil
}

// nearest is the name closest to s by edit distance, if close enough.
func nearest(s string, names []string) string {
	best, bd := "", len(s)/2+2
	for _, n := range names {
		if d := editDistance(s, n); d < bd {
			best, bd = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
