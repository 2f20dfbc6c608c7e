package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/capture"
	"github.com/profcap/profcap/targets"
)

// The live table says what runs after the window: perf profiles being
// symbolised, the last fetches, the merges, the report.
func TestLiveTableAfterTheWindow(t *testing.T) {
	var out bytes.Buffer
	p := newPrinter(&out, &out, false, false)
	p.mode = progressLive
	p.header([]targets.Target{{Name: "api-1"}}, time.Second, "b")
	now := time.Now()
	for _, e := range []capture.Event{
		{Type: capture.EventPlanned, Target: "api-1", Kind: bundle.CPU, Collector: "perf"},
		{Type: capture.EventPlanned, Target: "api-1", Kind: bundle.Heap, Collector: "pprof"},
	} {
		p.event(e)
	}
	p.mu.Lock()
	p.start = now // no ticker: draw by hand
	p.mu.Unlock()
	last := func() string {
		p.mu.Lock()
		defer p.mu.Unlock()
		out.Reset()
		p.drawn = 0
		p.draw()
		return out.String()
	}
	p.event(capture.Event{Type: capture.EventWindowEnd, Time: now})
	if s := last(); !strings.Contains(s, "symbolising 1 perf/samply profile (§)") || !strings.Contains(s, "collecting the last 1 profile (↓)") || !strings.Contains(s, "cpu§") {
		t.Errorf("after the window:\n%s", s)
	}
	p.event(capture.Event{Type: capture.EventResult, Target: "api-1", Kind: bundle.Heap, Status: bundle.StatusOK})
	p.event(capture.Event{Type: capture.EventResult, Target: "api-1", Kind: bundle.CPU, Status: bundle.StatusOK})
	if s := last(); !strings.Contains(s, "merging the kinds across targets") {
		t.Errorf("after the results:\n%s", s)
	}
	p.event(capture.Event{Type: capture.EventMerged, Kind: bundle.CPU})
	if s := last(); !strings.Contains(s, "merging the kinds across targets (1 of 2)") {
		t.Errorf("after one merge:\n%s", s)
	}
	p.event(capture.Event{Type: capture.EventMerged, Kind: bundle.Heap})
	if s := last(); !strings.Contains(s, "writing the report") {
		t.Errorf("after the merges:\n%s", s)
	}
}

// The end summary: the workload's exit status, counts that add up to the
// profiles requested, the answer lines.
func TestSummaryPrintsWorkloadAndCounts(t *testing.T) {
	var out bytes.Buffer
	p := newPrinter(&out, &out, false, false)
	p.mode = progressPlain
	dir := t.TempDir()
	m := &bundle.Manifest{Status: bundle.StatusPartial, Workload: &bundle.Workload{Command: []string{"sh", "-c", "exit 4"}, ExitCode: 4, Seconds: 1.2},
		Targets: []*bundle.Target{{Name: "a", Profiles: []*bundle.Profile{{Kind: "cpu", Status: "ok"}, {Kind: "heap", Status: "partial"}, {Kind: "mutex", Status: "failed", Error: "boom"}, {Kind: "async", Status: "unsupported", Collector: "x"}}}}}
	p.summary(&capture.Outcome{Dir: dir, Manifest: m})
	s := out.String()
	for _, want := range []string{`workload "sh -c exit 4" exited with status 4 after 1.2 s`, "4 profiles requested: 1 ok, 1 partial, 1 failed, 1 not offered by the target; status partial", "a mutex: boom"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	out.Reset()
	m.Workload = &bundle.Workload{Command: []string{"nope"}, ExitCode: -1, Error: errors.New("exec: not found").Error()}
	p.summary(&capture.Outcome{Dir: dir, Manifest: m})
	if !strings.Contains(out.String(), `workload "nope": exec: not found`) {
		t.Errorf("summary of a workload that did not start:\n%s", out.String())
	}
}
