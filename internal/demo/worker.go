package demo

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/profcap/profcap/internal/consoleapi"
	"math/rand/v2"
	"net/http"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Step kinds. Each stresses something different so a flame graph of a
// worker shows them apart: fetch waits on the database, transform hashes,
// aggregate allocates and encodes.
const (
	kindFetch     = "fetch"
	kindTransform = "transform"
	kindAggregate = "aggregate"
)

// stepRequest is what an orchestrator POSTs to a worker's /steps.
type stepRequest struct {
	Orchestrator string   `json:"orchestrator"`
	Workflow     string   `json:"workflow"`
	Shape        string   `json:"shape"`
	Step         string   `json:"step"`
	Kind         string   `json:"kind"`
	Inputs       []string `json:"inputs,omitempty"` // checksums of the steps this one depends on
}

// stepResult is a worker's reply.
type stepResult struct {
	Worker   string `json:"worker"`
	Checksum string `json:"checksum"`
	Rows     int    `json:"rows"`
	Bytes    int    `json:"bytes"`
	Micros   int64  `json:"micros"`
}

// stepCost says how much of each kind of work one step does.
type stepCost struct {
	queries   int  // fake database round trips
	queryRows int  // rows per query
	genRows   int  // rows generated in memory
	rounds    int  // checksum rounds over the encoded report
	compress  bool // gzip the report before caching it
	sort      bool // sort the rows before encoding them
}

var stepCosts = map[string]stepCost{
	kindFetch:     {queries: 3, queryRows: 40, genRows: 300, rounds: 6},
	kindTransform: {queries: 1, queryRows: 20, genRows: 3000, rounds: 12, sort: true},
	kindAggregate: {queries: 1, queryRows: 20, genRows: 3000, rounds: 2, compress: true},
}

// languageSpeed scales a worker's CPU work so the three workers differ the
// way their namesakes in the reference cluster do (a label, not a claim).
var languageSpeed = map[string]float64{"rust": 0.6, "ruby": 1.2, "python": 1.4}

type worker struct {
	console *consoleapi.Server // nil: no async task tracking
	name    string
	scale   float64 // multiplies generated rows and checksum rounds
	sick    bool    // SickCPU times the checksum rounds of every step
	db      *fakeDB
	stats   *sharedStats
	cache   *resultCache
	m       *serviceMetrics
	event   func(Event)
}

func newWorker(cfg *ServiceConfig, m *serviceMetrics) *worker {
	scale := cfg.Work
	if s, ok := languageSpeed[cfg.Language]; ok {
		scale *= s
	}
	// Four connections and a 6ms mean latency: enough that bursts of
	// fetch steps queue for a connection, which the block profile shows.
	db := newFakeDB(4, 6*time.Millisecond)
	if cfg.Sick {
		db = newFakeDB(2, SickDB*6*time.Millisecond)
		db.flaky = true
	}
	return &worker{
		name:    cfg.Name,
		sick:    cfg.Sick,
		db:      db,
		stats:   newSharedStats(1024),
		cache:   newResultCache(32), // reports are up to ~0.5 MB: ~16 MB live per worker
		scale:   scale,
		m:       m,
		event:   cfg.event,
		console: cfg.Console,
	}
}

// handleStep serves POST /steps.
func (w *worker) handleStep(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		http.Error(rw, "use POST", http.StatusMethodNotAllowed)
		return
	}
	var req stepRequest
	if err := json.NewDecoder(http.MaxBytesReader(rw, r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(rw, "bad step request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if _, ok := stepCosts[req.Kind]; !ok {
		http.Error(rw, fmt.Sprintf("unknown step kind %q", req.Kind), http.StatusBadRequest)
		return
	}
	var (
		res stepResult
		err error
	)
	// Labels let a CPU profile of a worker be split by step kind and shape.
	pprof.Do(r.Context(), pprof.Labels("step_kind", req.Kind, "shape", req.Shape), func(ctx context.Context) {
		res, err = w.runStep(ctx, req)
	})
	if err != nil {
		w.m.stepErrors.inc(req.Kind)
		code := http.StatusInternalServerError
		if errors.Is(err, context.Canceled) {
			code = http.StatusServiceUnavailable
		}
		http.Error(rw, err.Error(), code)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode(res)
}

// runStep does one step: load rows from the database, generate more in
// memory, encode a report, checksum it, record the latency in the shared
// stats and keep the report in the cache.
func (w *worker) runStep(ctx context.Context, req stepRequest) (stepResult, error) {
	start := time.Now()
	ev := Event{Kind: EventStepStarted, Service: w.name, Workflow: req.Workflow, Step: req.Step, StepKind: req.Kind, Time: start}
	w.emit(ev)
	cost := stepCosts[req.Kind]
	// As an async task (tokio-console view): spawned now, idle while it
	// waits for the database (holding a waker, woken by the reply), busy
	// while it computes.
	task := w.spawnTask(req)
	defer task.done()
	var rows []dbRow
	for q := range cost.queries {
		task.waitBegins()
		got, err := w.db.query(ctx, fmt.Sprintf("%s_%d", req.Kind, q), cost.queryRows)
		task.woken()
		if err != nil {
			w.finish(ev, err)
			return stepResult{}, err
		}
		w.m.dbQueries.inc("")
		rows = append(rows, got...)
	}
	var (
		report []byte
		sum    [32]byte
		err    error
	)
	task.poll(func() {
		rows = append(rows, w.generateRows(req, w.scaled(cost.genRows))...)
		if cost.sort {
			w.sortRows(rows)
		}
		w.tallyRegions(rows)
		if report, err = w.encodeReport(req, rows); err != nil {
			return
		}
		rounds := w.scaled(cost.rounds)
		if w.sick {
			// Every step, so that every second of a window shows it: a
			// sickness of one step kind comes and goes with the random
			// mix of steps a worker draws.
			rounds *= SickCPU
		}
		sum = w.computeChecksum(report, rounds)
		if cost.compress {
			report, err = w.compressReport(report)
		}
	})
	if err != nil {
		w.finish(ev, err)
		return stepResult{}, err
	}
	elapsed := time.Since(start)
	w.stats.recordLatency(elapsed)
	w.cache.put(req.Workflow+"/"+req.Step, report)
	w.m.stepsProcessed.inc(req.Kind)
	w.finish(ev, nil)
	return stepResult{
		Worker:   w.name,
		Checksum: hex.EncodeToString(sum[:]),
		Rows:     len(rows),
		Bytes:    len(report),
		Micros:   elapsed.Microseconds(),
	}, nil
}

// stepTask records one step as an async task on the console server; every
// method is a no-op without one.
type stepTask struct{ t *consoleapi.Task }

// stepLocation is where the demo "spawns" step tasks: one location for all
// steps, so tasks aggregate by name (the step kind) in the async profile.
var stepLocation = consoleapi.Location{File: "src/worker/steps.rs", Line: 42, Column: 9}

func (w *worker) spawnTask(req stepRequest) stepTask {
	if w.console == nil {
		return stepTask{}
	}
	return stepTask{w.console.Spawn("step:"+req.Kind, stepLocation, consoleapi.KindTask,
		consoleapi.Field{Name: "shape", Value: req.Shape}, consoleapi.Field{Name: "size.bytes", Value: 640})}
}

// waitBegins: the task's poll registers interest in the reply (clones its
// waker) and returns Pending.
func (s stepTask) waitBegins() {
	if s.t != nil {
		s.t.Poll(s.t.CloneWaker)
	}
}

// woken: the reply wakes the task (by value, consuming the waker).
func (s stepTask) woken() {
	if s.t != nil {
		s.t.Wake()
	}
}

func (s stepTask) poll(fn func()) {
	if s.t == nil {
		fn()
		return
	}
	s.t.Poll(fn)
}

func (s stepTask) done() {
	if s.t != nil {
		s.t.Done()
	}
}

func (w *worker) emit(ev Event) {
	if w.event != nil {
		w.event(ev)
	}
}

func (w *worker) finish(ev Event, err error) {
	ev.Kind, ev.Duration, ev.Err = EventStepFinished, time.Since(ev.Time), err
	ev.Time = time.Now()
	w.emit(ev)
}

func (w *worker) scaled(n int) int { return max(1, int(float64(n)*w.scale+0.5)) }

// generateRows makes n rows in memory, derived from the step's inputs:
// many small allocations (strings, the slice) for the heap profiles.
func (w *worker) generateRows(req stepRequest, n int) []dbRow {
	rows := make([]dbRow, 0, n)
	seed := req.Workflow + req.Step
	for _, in := range req.Inputs {
		seed += in
	}
	for i := range n {
		id := rand.Int64N(1_000_000)
		rows = append(rows, dbRow{
			ID:      id,
			Account: seed[:min(len(seed), 24)] + "-" + strconv.Itoa(i),
			Region:  regions[i%len(regions)],
			Amount:  float64(id) / 100,
			Note:    fmt.Sprintf("%s step %s row %d", req.Kind, req.Step, i),
		})
	}
	return rows
}

// sortRows orders rows by account, then amount: CPU in string compares.
func (w *worker) sortRows(rows []dbRow) {
	slices.SortFunc(rows, func(a, b dbRow) int {
		if c := strings.Compare(a.Account, b.Account); c != 0 {
			return c
		}
		return cmp.Compare(a.Amount, b.Amount)
	})
}

// tallyShards is how many goroutines tallyRegions splits a step's rows
// across: enough that they fight over the stats lock on every step.
const tallyShards = 4

// tallyRegions adds every row's amount to the per-region totals shared by
// the whole worker, from tallyShards goroutines at once, one lock
// acquisition per row: a hot map behind one mutex, the contention the mutex
// profile shows as demo.(*sharedStats).addToRegion.
func (w *worker) tallyRegions(rows []dbRow) {
	var wg sync.WaitGroup
	per := (len(rows) + tallyShards - 1) / tallyShards
	for start := 0; start < len(rows); start += per {
		shard := rows[start:min(start+per, len(rows))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, r := range shard {
				w.stats.addToRegion(r.Region, r.Amount)
			}
		}()
	}
	wg.Wait()
}

// report is what a step produces.
type report struct {
	Workflow string   `json:"workflow"`
	Step     string   `json:"step"`
	Kind     string   `json:"kind"`
	Worker   string   `json:"worker"`
	Inputs   []string `json:"inputs"`
	Total    float64  `json:"total"`
	Rows     []dbRow  `json:"rows"`
}

// encodeReport encodes a step's report as JSON (CPU and allocations).
func (w *worker) encodeReport(req stepRequest, rows []dbRow) ([]byte, error) {
	r := report{Workflow: req.Workflow, Step: req.Step, Kind: req.Kind, Worker: w.name, Inputs: req.Inputs, Rows: rows}
	for _, row := range rows {
		r.Total += row.Amount
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding report of step %s: %w", req.Step, err)
	}
	return b, nil
}

// compressReport gzips a report for the cache: CPU in compress/flate.
func (w *worker) compressReport(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// computeChecksum hashes data rounds times, each round chained on the last:
// the worker's main on-CPU cost.
func (w *worker) computeChecksum(data []byte, rounds int) [sha256.Size]byte {
	var sum [sha256.Size]byte
	for range rounds {
		h := sha256.New()
		h.Write(sum[:])
		h.Write(data)
		h.Sum(sum[:0])
	}
	return sum
}

// sharedStats is one latency window shared by all of a worker's in-flight
// steps behind one mutex. recordLatency recomputes the percentiles while
// holding the lock, which is the contention the mutex profile shows.
type sharedStats struct {
	mu      sync.Mutex
	regions map[string]float64 // running totals by region
	window  []time.Duration
	next    int
	n       int
	p50     time.Duration
	p99     time.Duration
}

func newSharedStats(size int) *sharedStats {
	return &sharedStats{window: make([]time.Duration, size), regions: map[string]float64{}}
}

func (s *sharedStats) addToRegion(region string, amount float64) {
	s.mu.Lock()
	s.regions[region] += amount
	s.mu.Unlock()
}

func (s *sharedStats) recordLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.window[s.next] = d
	s.next = (s.next + 1) % len(s.window)
	s.n = min(s.n+1, len(s.window))
	s.p50, s.p99 = s.percentilesLocked()
}

func (s *sharedStats) percentilesLocked() (p50, p99 time.Duration) {
	sorted := slices.Clone(s.window[:s.n])
	slices.Sort(sorted)
	return sorted[len(sorted)/2], sorted[len(sorted)*99/100]
}

func (s *sharedStats) percentiles() (p50, p99 time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p50, s.p99
}

// resultCache keeps the last reports, so the in-use heap profile has
// something live in it besides the runtime.
type resultCache struct {
	mu   sync.Mutex
	keys []string
	vals map[string][]byte
	next int
}

func newResultCache(size int) *resultCache {
	return &resultCache{keys: make([]string, size), vals: make(map[string][]byte, size)}
}

func (c *resultCache) put(key string, val []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.keys[c.next]; old != "" {
		delete(c.vals, old)
	}
	c.keys[c.next] = key
	c.vals[key] = val
	c.next = (c.next + 1) % len(c.keys)
}

func (c *resultCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.vals)
}
