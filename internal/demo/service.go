package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/felixge/fgprof"

	"github.com/profcap/profcap/internal/consoleapi"
)

// ServiceConfig configures one service of the demo cluster.
type ServiceConfig struct {
	Name     string
	Role     Role
	Language string // rust, ruby, python or go: a label that also scales a worker's CPU work
	// Port is the loopback port to serve on when Listener is nil.
	Port int
	// Listener, if set, is served instead of listening on Port. The cluster
	// manager opens every port itself and hands the listeners down, so no
	// port can be taken between choosing it and the service starting.
	Listener net.Listener
	// Peers are the base URLs (http://127.0.0.1:PORT) of the workers an
	// orchestrator dispatches steps to. Workers ignore it.
	Peers []string
	// Rate is how many workflows an orchestrator starts per second
	// (default DefaultRate).
	Rate float64
	// Work scales the CPU work of every step (default 1).
	Work float64
	// Sick makes the service an outlier among its peers, for the report's
	// outlier view to find: a sick worker checksums every step SickCPU
	// times over, and its database is SickDB times slower, with two
	// connections instead of four that drop after every query (each query
	// reconnects first: demo.(*fakeDB).reconnect); a sick orchestrator's
	// database is SickDB times slower.
	Sick bool
	// Logger receives the service's log (default: text to stderr).
	Logger *slog.Logger

	// Console, if set, records the service's work as async tasks (each
	// worker step one task: idle while it waits for the fake database, busy
	// while it computes) and is served on ConsoleListener over the
	// tokio-console gRPC API: the demo's stand-in for console-subscriber.
	Console         *consoleapi.Server
	ConsoleListener net.Listener

	// Sidecars run next to the HTTP server for the life of the service and
	// get its context; an error from one stops the service. This is where
	// the tokio-console style gRPC API (internal/consoleapi) will be hosted.
	Sidecars []Sidecar
	// OnEvent, if set, is called (synchronously, so it must be quick) as
	// workflows and steps start and finish: the task events a console API
	// would stream.
	OnEvent func(Event)

	event func(Event) // OnEvent, or nil
}

// Sidecar is something a service runs alongside its HTTP server.
type Sidecar func(ctx context.Context, svc ServiceInfo) error

// ServiceInfo describes a running service to its sidecars.
type ServiceInfo struct {
	Name string
	Role Role
	Addr string // host:port of the HTTP server
}

// EventKind says what an Event reports.
type EventKind string

const (
	EventWorkflowStarted  EventKind = "workflow_started"
	EventWorkflowFinished EventKind = "workflow_finished"
	EventStepStarted      EventKind = "step_started"
	EventStepFinished     EventKind = "step_finished"
)

// Event is a workflow or step starting or finishing.
type Event struct {
	Kind     EventKind
	Service  string
	Workflow string
	Shape    string // workflow events
	Step     string // step events
	StepKind string // step events: fetch, transform, aggregate
	Time     time.Time
	Duration time.Duration // finished events
	Err      error         // finished events
}

// DefaultRate is the workflows per second each orchestrator starts. With
// the default work per step (Work 1), two orchestrators at this rate kept
// the whole cluster at about 40-50% of one core on a 2-core x86-64 machine
// with SHA extensions (measured with /proc/PID/stat over 10 s); hashing is
// slower without them, so expect more there.
const DefaultRate = 8

// How much worse a sick service is (ServiceConfig.Sick).
const (
	SickCPU = 6
	SickDB  = 3
)

// Profiling rates set by RunService. The defaults of the runtime leave the
// mutex and block profiles empty.
const (
	// MutexProfileFraction 5 records one in five contention events: the
	// shared-stats lock is contended hundreds of times a second, so this
	// is plenty and costs little.
	MutexProfileFraction = 5
	// BlockProfileRate 100µs records every blocking wait longer than
	// 100µs (all fake database waits take milliseconds) and samples the
	// shorter ones, keeping the overhead of stack captures low.
	BlockProfileRate = int(100 * time.Microsecond)
)

type serviceMetrics struct {
	*metrics
	workflowsStarted   *counterVec
	workflowsCompleted *counterVec
	workflowsFailed    *counterVec
	workflowsCancelled *counterVec
	workflowsSkipped   *counterVec
	workflowSeconds    *counterVec // microseconds, exposed as such
	stepsDispatched    *counterVec
	stepRetries        *counterVec
	stepsProcessed     *counterVec
	stepErrors         *counterVec
	dbQueries          *counterVec
}

func newServiceMetrics() *serviceMetrics {
	m := &metrics{}
	return &serviceMetrics{
		metrics:            m,
		workflowsStarted:   m.counter("demo_workflows_started_total", "Workflows an orchestrator started.", "shape"),
		workflowsCompleted: m.counter("demo_workflows_completed_total", "Workflows whose steps all finished.", "shape"),
		workflowsFailed:    m.counter("demo_workflows_failed_total", "Workflows with a step that failed on two workers.", "shape"),
		workflowsCancelled: m.counter("demo_workflows_cancelled_total", "Workflows cut short by shutdown.", "shape"),
		workflowsSkipped:   m.counter("demo_workflows_skipped_total", "Ticks with no workflow started because too many were running.", ""),
		workflowSeconds:    m.counter("demo_workflow_duration_microseconds_total", "Time spent in workflows, by shape.", "shape"),
		stepsDispatched:    m.counter("demo_steps_dispatched_total", "Steps sent to workers, retries included.", "kind"),
		stepRetries:        m.counter("demo_step_retries_total", "Steps sent to a second worker after the first failed.", "kind"),
		stepsProcessed:     m.counter("demo_steps_processed_total", "Steps a worker finished.", "kind"),
		stepErrors:         m.counter("demo_step_errors_total", "Steps a worker failed.", "kind"),
		dbQueries:          m.counter("demo_db_queries_total", "Queries to the fake database.", ""),
	}
}

// RunService runs one service until ctx is done, then shuts down its HTTP
// server and waits for running workflows to stop. It returns nil after a
// clean shutdown.
func RunService(ctx context.Context, cfg ServiceConfig) error {
	if cfg.Name == "" {
		return errors.New("service name is empty")
	}
	if _, err := ParseRole(string(cfg.Role)); err != nil {
		return err
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Work <= 0 {
		cfg.Work = 1
	}
	if cfg.Role == RoleOrchestration && len(cfg.Peers) == 0 {
		return fmt.Errorf("%s: an orchestrator needs at least one worker in its peers", cfg.Name)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	log = log.With("service", cfg.Name)
	cfg.event = cfg.OnEvent

	runtime.SetMutexProfileFraction(MutexProfileFraction)
	runtime.SetBlockProfileRate(BlockProfileRate)

	ln := cfg.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port)))
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.Name, err)
		}
	}

	m := newServiceMetrics()
	started := time.Now()
	m.gauge("demo_uptime_seconds", "Seconds since the service started.", func() float64 { return time.Since(started).Seconds() })
	m.gauge("demo_goroutines", "Goroutines in the service.", func() float64 { return float64(runtime.NumGoroutine()) })

	mux := http.NewServeMux()
	mountProfiling(mux)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"status": "ok", "name": cfg.Name, "role": cfg.Role, "pid": os.Getpid()})
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.writeText(w)
	})

	var background []func(context.Context)
	switch cfg.Role {
	case RoleWorker:
		wk := newWorker(&cfg, m)
		mux.HandleFunc("/steps", wk.handleStep)
		m.gauge("demo_step_latency_p50_seconds", "Median step latency over the recent window.", func() float64 { p, _ := wk.stats.percentiles(); return p.Seconds() })
		m.gauge("demo_step_latency_p99_seconds", "99th percentile step latency over the recent window.", func() float64 { _, p := wk.stats.percentiles(); return p.Seconds() })
		m.gauge("demo_cached_reports", "Reports held in the worker's result cache.", func() float64 { return float64(wk.cache.len()) })
	case RoleOrchestration:
		o := newOrchestrator(&cfg, m)
		mux.HandleFunc("GET /workflows", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(o.store.snapshot())
		})
		background = append(background, o.run)
	}

	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		// No WriteTimeout: profile requests legitimately take as long as
		// the ?seconds= they ask for.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)
	fail := func(err error) {
		errOnce.Do(func() { runErr = err })
		cancel()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fail(fmt.Errorf("%s: serving http: %w", cfg.Name, err))
		}
	}()
	info := ServiceInfo{Name: cfg.Name, Role: cfg.Role, Addr: ln.Addr().String()}
	for _, sc := range cfg.Sidecars {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sc(ctx, info); err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("%s: sidecar: %w", cfg.Name, err))
			}
		}()
	}
	if cfg.Console != nil && cfg.ConsoleListener != nil {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := cfg.Console.Serve(cfg.ConsoleListener); err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("%s: serving the console API: %w", cfg.Name, err))
			}
		}()
		go func() { defer wg.Done(); <-ctx.Done(); cfg.Console.Stop() }()
		background = append(background, func(ctx context.Context) { janitor(ctx, cfg.Console) })
	}
	for _, run := range background {
		wg.Add(1)
		go func() { defer wg.Done(); run(ctx) }()
	}
	log.Info("serving", "role", cfg.Role, "language", cfg.Language, "addr", info.Addr, "pid", os.Getpid(), "peers", len(cfg.Peers))

	go logSummary(ctx, log, cfg.Role, m)

	<-ctx.Done()
	shutdownCtx, done := context.WithTimeout(context.Background(), 3*time.Second)
	defer done()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
	}
	wg.Wait()
	if runErr != nil {
		log.Error("stopped", "err", runErr)
		return runErr
	}
	log.Info("stopped")
	return nil
}

// janitor is a housekeeping task that yields after every small slice of
// work (tokio::task::yield_now): it wakes itself on nearly every poll, which
// is what the console's self-wakes lint points out.
func janitor(ctx context.Context, c *consoleapi.Server) {
	t := c.Spawn("cache-janitor", consoleapi.Caller(0), consoleapi.KindTask)
	defer t.Done()
	x := uint64(1)
	for ctx.Err() == nil {
		t.Poll(func() {
			for i := 0; i < 2000; i++ {
				x = x*6364136223846793005 + 1442695040888963407
			}
			t.SelfWake()
		})
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	_ = x
}

// logSummary logs what the service did every 30 seconds.
func logSummary(ctx context.Context, log *slog.Logger, role Role, m *serviceMetrics) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	sum := func(c *counterVec) uint64 {
		var n uint64
		for _, k := range []string{shapeLinear, shapeDiamond, shapeTree, kindFetch, kindTransform, kindAggregate} {
			c.mu.Lock()
			v := c.vals[k]
			c.mu.Unlock()
			if v != nil {
				n += v.Load()
			}
		}
		return n
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if role == RoleOrchestration {
			log.Info("summary", "workflows_completed", sum(m.workflowsCompleted), "workflows_failed", sum(m.workflowsFailed), "skipped", m.workflowsSkipped.value(""))
		} else {
			log.Info("summary", "steps_processed", sum(m.stepsProcessed), "step_errors", sum(m.stepErrors))
		}
	}
}

// mountProfiling mounts net/http/pprof and fgprof on mux.
func mountProfiling(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index) // also serves heap, goroutine, mutex, block, allocs, threadcreate
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/fgprof", fgprofHandler)
}

// fgprofHandler is fgprof.Handler that also stops early when the client
// goes away, instead of sampling for the full duration regardless.
// Query: seconds (default 30), format=pprof (default) or folded.
func fgprofHandler(w http.ResponseWriter, r *http.Request) {
	seconds := 30
	if s := r.URL.Query().Get("seconds"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > 3600 {
			http.Error(w, fmt.Sprintf("bad seconds %q: want 1 to 3600", s), http.StatusBadRequest)
			return
		}
		seconds = n
	}
	format := fgprof.Format(r.URL.Query().Get("format"))
	switch format {
	case "":
		format = fgprof.FormatPprof
	case fgprof.FormatPprof, fgprof.FormatFolded:
	default:
		http.Error(w, fmt.Sprintf("bad format %q: want pprof or folded", format), http.StatusBadRequest)
		return
	}
	if format == fgprof.FormatPprof {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="fgprof.pb.gz"`)
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	stop := fgprof.Start(w, format)
	t := time.NewTimer(time.Duration(seconds) * time.Second)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
	if err := stop(); err != nil {
		// Headers are sent; all we can do is cut the body short.
		panic(http.ErrAbortHandler)
	}
}

// probeHealth GETs base/health and wants a 200.
func probeHealth(ctx context.Context, c *http.Client, base string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s", resp.Status)
	}
	return nil
}
