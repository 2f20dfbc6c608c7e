package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime/pprof"
	"sync"
	"time"
)

// Workflow shapes.
const (
	shapeLinear  = "linear"
	shapeDiamond = "diamond"
	shapeTree    = "tree"
)

var shapes = []string{shapeLinear, shapeDiamond, shapeTree}

// stepSpec is one node of a workflow's DAG.
type stepSpec struct {
	ID   string
	Kind string
	Deps []int // indexes of the steps that must finish first
}

// workflow is a DAG of steps; steps are in topological order.
type workflow struct {
	ID    string
	Shape string
	Steps []stepSpec
}

// planWorkflow builds the seq'th workflow; shapes take turns.
func (o *orchestrator) planWorkflow(seq uint64) *workflow {
	wf := &workflow{ID: fmt.Sprintf("%s-wf-%d", o.name, seq), Shape: shapes[seq%uint64(len(shapes))]}
	switch wf.Shape {
	case shapeLinear:
		wf.Steps = planLinear(4)
	case shapeDiamond:
		wf.Steps = planDiamond()
	case shapeTree:
		wf.Steps = planTree(3)
	}
	return wf
}

// planLinear: fetch → transform → … → aggregate, n steps in a chain.
func planLinear(n int) []stepSpec {
	steps := make([]stepSpec, n)
	for i := range steps {
		kind := kindTransform
		switch i {
		case 0:
			kind = kindFetch
		case n - 1:
			kind = kindAggregate
		}
		steps[i] = stepSpec{ID: fmt.Sprintf("s%d", i+1), Kind: kind}
		if i > 0 {
			steps[i].Deps = []int{i - 1}
		}
	}
	return steps
}

// planDiamond: fetch fans out to two transforms that join in an aggregate.
func planDiamond() []stepSpec {
	return []stepSpec{
		{ID: "source", Kind: kindFetch},
		{ID: "left", Kind: kindTransform, Deps: []int{0}},
		{ID: "right", Kind: kindTransform, Deps: []int{0}},
		{ID: "join", Kind: kindAggregate, Deps: []int{1, 2}},
	}
}

// planTree: a binary fan-out tree of the given depth; the root fetches,
// inner nodes transform, leaves aggregate.
func planTree(depth int) []stepSpec {
	n := 1<<depth - 1
	steps := make([]stepSpec, n)
	for i := range steps {
		kind := kindTransform
		switch {
		case i == 0:
			kind = kindFetch
		case 2*i+1 >= n:
			kind = kindAggregate
		}
		steps[i] = stepSpec{ID: fmt.Sprintf("node%d", i), Kind: kind}
		if i > 0 {
			steps[i].Deps = []int{(i - 1) / 2}
		}
	}
	return steps
}

type orchestrator struct {
	name     string
	workers  []string // worker base URLs
	rate     float64  // workflows started per second
	inflight int      // most workflows running at once
	client   *http.Client
	db       *fakeDB
	store    *workflowStore
	m        *serviceMetrics
	event    func(Event)
}

func newOrchestrator(cfg *ServiceConfig, m *serviceMetrics) *orchestrator {
	dbLatency := 3 * time.Millisecond
	if cfg.Sick {
		dbLatency *= SickDB
	}
	return &orchestrator{
		name:     cfg.Name,
		workers:  cfg.Peers,
		rate:     cfg.Rate,
		inflight: 16,
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
		}},
		db:    newFakeDB(8, dbLatency),
		store: newWorkflowStore(200),
		m:     m,
		event: cfg.event,
	}
}

// run starts workflows at a steady rate until ctx is done, then waits for
// the running ones (which see ctx cancelled) to return.
func (o *orchestrator) run(ctx context.Context) {
	if len(o.workers) == 0 {
		return
	}
	o.waitForWorkers(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	interval := time.Duration(float64(time.Second) / o.rate)
	// A random phase, so that two orchestrators do not tick in lockstep.
	select {
	case <-time.After(rand.N(interval)):
	case <-ctx.Done():
		return
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	slots := make(chan struct{}, o.inflight)
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case slots <- struct{}{}:
		default:
			o.m.workflowsSkipped.inc("")
			continue
		}
		seq++
		wf := o.planWorkflow(seq)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			pprof.Do(ctx, pprof.Labels("shape", wf.Shape), func(ctx context.Context) {
				o.runWorkflow(ctx, wf)
			})
		}()
	}
}

// waitForWorkers waits until at least one worker answers /health, so that
// a cluster starting up does not count its first workflows as failed.
func (o *orchestrator) waitForWorkers(ctx context.Context) {
	for {
		for _, w := range o.workers {
			if probeHealth(ctx, o.client, w) == nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// runWorkflow dispatches every step whose dependencies are done, as soon as
// they are done, and collects the results.
func (o *orchestrator) runWorkflow(ctx context.Context, wf *workflow) error {
	start := time.Now()
	o.m.workflowsStarted.inc(wf.Shape)
	o.emit(Event{Kind: EventWorkflowStarted, Service: o.name, Workflow: wf.ID, Shape: wf.Shape, Time: start})
	o.store.begin(wf, start)
	err := o.executeSteps(ctx, wf)
	if err == nil {
		err = o.persistWorkflow(ctx, wf)
	}
	elapsed := time.Since(start)
	switch {
	case err == nil:
		o.m.workflowsCompleted.inc(wf.Shape)
	case ctx.Err() != nil:
		o.m.workflowsCancelled.inc(wf.Shape)
	default:
		o.m.workflowsFailed.inc(wf.Shape)
	}
	o.m.workflowSeconds.add(wf.Shape, uint64(elapsed.Microseconds()))
	o.store.finish(wf.ID, elapsed, err)
	o.emit(Event{Kind: EventWorkflowFinished, Service: o.name, Workflow: wf.ID, Shape: wf.Shape, Time: time.Now(), Duration: elapsed, Err: err})
	return err
}

func (o *orchestrator) executeSteps(ctx context.Context, wf *workflow) error {
	n := len(wf.Steps)
	waiting := make([]int, n) // unfinished dependencies per step
	dependents := make([][]int, n)
	for i, s := range wf.Steps {
		waiting[i] = len(s.Deps)
		for _, d := range s.Deps {
			dependents[d] = append(dependents[d], i)
		}
	}
	type outcome struct {
		i   int
		res stepResult
		err error
	}
	outputs := make([]string, n)
	results := make(chan outcome, n)
	running := 0
	launch := func(i int) {
		var inputs []string
		for _, d := range wf.Steps[i].Deps {
			inputs = append(inputs, outputs[d])
		}
		running++
		go func() {
			res, err := o.dispatchStep(ctx, wf, i, inputs)
			results <- outcome{i, res, err}
		}()
	}
	for i := range wf.Steps {
		if waiting[i] == 0 {
			launch(i)
		}
	}
	var firstErr error
	for running > 0 {
		oc := <-results
		running--
		if oc.err != nil {
			if firstErr == nil {
				firstErr = oc.err
			}
			continue
		}
		outputs[oc.i] = oc.res.Checksum
		o.store.stepDone(wf.ID)
		if firstErr != nil {
			continue // let running steps finish, start no more
		}
		for _, d := range dependents[oc.i] {
			if waiting[d]--; waiting[d] == 0 {
				launch(d)
			}
		}
	}
	return firstErr
}

// dispatchStep sends one step to a worker picked at random, and tries the
// next worker once if that one fails. Random, not round robin: workflows
// have a fixed shape, and a rotation in step with it would send every
// fetch step to the same few workers, which would then differ from their
// peers for no reason a reader could fix.
func (o *orchestrator) dispatchStep(ctx context.Context, wf *workflow, i int, inputs []string) (stepResult, error) {
	step := wf.Steps[i]
	body, err := json.Marshal(stepRequest{
		Orchestrator: o.name, Workflow: wf.ID, Shape: wf.Shape,
		Step: step.ID, Kind: step.Kind, Inputs: inputs,
	})
	if err != nil {
		return stepResult{}, err
	}
	var lastErr error
	first := rand.N(len(o.workers))
	for attempt := range 2 {
		w := o.workers[(first+attempt)%len(o.workers)]
		o.m.stepsDispatched.inc(step.Kind)
		res, err := o.postStep(ctx, w, body)
		if err == nil {
			return res, nil
		}
		lastErr = fmt.Errorf("step %s of %s on %s: %w", step.ID, wf.ID, w, err)
		if ctx.Err() != nil {
			break
		}
		if attempt == 0 {
			o.m.stepRetries.inc(step.Kind)
		}
	}
	return stepResult{}, lastErr
}

func (o *orchestrator) postStep(ctx context.Context, workerURL string, body []byte) (stepResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, workerURL+"/steps", bytes.NewReader(body))
	if err != nil {
		return stepResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.client.Do(req)
	if err != nil {
		return stepResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return stepResult{}, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	var res stepResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return stepResult{}, fmt.Errorf("decoding step result: %w", err)
	}
	if res.Checksum == "" {
		return stepResult{}, errors.New("step result without a checksum")
	}
	return res, nil
}

// persistWorkflow writes the finished workflow to the (fake) database.
func (o *orchestrator) persistWorkflow(ctx context.Context, wf *workflow) error {
	if _, err := o.db.query(ctx, "workflows", 1); err != nil {
		return fmt.Errorf("persisting %s: %w", wf.ID, err)
	}
	o.m.dbQueries.inc("")
	return nil
}

func (o *orchestrator) emit(ev Event) {
	if o.event != nil {
		o.event(ev)
	}
}

// workflowStore keeps the recent workflows for /workflows. Every step
// completion of every workflow takes its one lock.
type workflowStore struct {
	mu     sync.Mutex
	recent []*workflowStatus // ring
	byID   map[string]*workflowStatus
	next   int
}

type workflowStatus struct {
	ID        string    `json:"id"`
	Shape     string    `json:"shape"`
	Steps     int       `json:"steps"`
	StepsDone int       `json:"steps_done"`
	State     string    `json:"state"` // running, completed, failed
	Started   time.Time `json:"started"`
	Millis    int64     `json:"millis,omitempty"`
	Error     string    `json:"error,omitempty"`
}

func newWorkflowStore(size int) *workflowStore {
	return &workflowStore{recent: make([]*workflowStatus, size), byID: map[string]*workflowStatus{}}
}

func (s *workflowStore) begin(wf *workflow, start time.Time) {
	st := &workflowStatus{ID: wf.ID, Shape: wf.Shape, Steps: len(wf.Steps), State: "running", Started: start}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.recent[s.next]; old != nil {
		delete(s.byID, old.ID)
	}
	s.recent[s.next] = st
	s.byID[st.ID] = st
	s.next = (s.next + 1) % len(s.recent)
}

func (s *workflowStore) stepDone(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.byID[id]; st != nil {
		st.StepsDone++
	}
}

func (s *workflowStore) finish(id string, elapsed time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.byID[id]
	if st == nil {
		return
	}
	st.Millis = elapsed.Milliseconds()
	st.State = "completed"
	if err != nil {
		st.State, st.Error = "failed", err.Error()
	}
}

// snapshot returns the recent workflows, newest first.
func (s *workflowStore) snapshot() []workflowStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []workflowStatus
	for i := range s.recent {
		st := s.recent[(s.next-1-i+2*len(s.recent))%len(s.recent)]
		if st != nil {
			out = append(out, *st)
		}
	}
	return out
}
