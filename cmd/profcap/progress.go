package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/capture"
	"github.com/profcap/profcap/internal/secret"
	"github.com/profcap/profcap/internal/termsafe"
	"github.com/profcap/profcap/report"
	"github.com/profcap/profcap/targets"
)

// progressMode is how record reports progress.
type progressMode int

const (
	progressPlain progressMode = iota // timestamped lines (not a terminal: CI, | tee)
	progressLive                      // a table redrawn in place (a terminal)
	progressQuiet                     // errors only
	progressJSON                      // one JSON event per line on stdout
)

// printer shows a capture's progress. Its methods are called one at a time
// (capture serialises events) except redraw, which takes the lock.
type printer struct {
	mu       sync.Mutex
	w        io.Writer // stderr
	out      io.Writer // stdout (JSON events)
	mode     progressMode
	start    time.Time
	deadline time.Time
	width    int
	order    []string
	state    map[string]map[bundle.Kind]string
	kinds    map[string][]bundle.Kind
	coll     map[string]map[bundle.Kind]string // collector by target and kind
	bytes    int64
	// After the window: when it ended, the kinds merged so far, and how
	// many kinds have a profile to merge (known once every result is in).
	ended   time.Time
	merged  []bundle.Kind
	toMerge map[bundle.Kind]bool
	drawn   int // lines drawn last time (live mode)
	stop    chan struct{}
	done    chan struct{}
}

func newPrinter(stdout, stderr io.Writer, quiet, jsonOut bool) *printer {
	p := &printer{w: stderr, out: stdout, width: 8, state: map[string]map[bundle.Kind]string{}, kinds: map[string][]bundle.Kind{},
		coll: map[string]map[bundle.Kind]string{}, toMerge: map[bundle.Kind]bool{}}
	switch {
	case jsonOut:
		p.mode = progressJSON
	case quiet:
		p.mode = progressQuiet
	case isTerminal(stderr) && os.Getenv("TERM") != "dumb":
		p.mode = progressLive
	}
	return p
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (p *printer) header(ts []targets.Target, d time.Duration, dir string) {
	for _, t := range ts {
		p.width = max(p.width, len(termsafe.String(t.Name)))
		p.order = append(p.order, t.Name)
		p.state[t.Name] = map[bundle.Kind]string{}
		p.coll[t.Name] = map[bundle.Kind]string{}
	}
	p.deadline = time.Now().Add(d)
	switch p.mode {
	case progressPlain, progressLive:
		fmt.Fprintf(p.w, "recording %d target(s) for %s into %s\n", len(ts), d, termsafe.String(filepath.Clean(dir)))
	case progressJSON:
		p.json(map[string]any{"event": "start", "targets": len(ts), "seconds": d.Seconds(), "bundle": dir})
	}
}

func (p *printer) json(v map[string]any) {
	if _, ok := v["time"]; !ok {
		v["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	}
	data, _ := json.Marshal(v)
	fmt.Fprintf(p.out, "%s\n", termsafe.JSON(data))
}

func (p *printer) event(e capture.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Type {
	case capture.EventPlanned:
		p.kinds[e.Target] = append(p.kinds[e.Target], e.Kind)
		p.state[e.Target][e.Kind] = "waiting"
		p.coll[e.Target][e.Kind] = e.Collector
	case capture.EventStarted:
		p.start = e.Time
		for _, ks := range p.state {
			for k := range ks {
				ks[k] = "capturing"
			}
		}
		if p.mode == progressLive {
			p.stop, p.done = make(chan struct{}), make(chan struct{})
			go p.ticker()
		}
	case capture.EventWindowEnd:
		p.ended = e.Time
		// What is still capturing is now being finished: perf and samply
		// symbolise, the others fetch their last request.
		for name, ks := range p.state {
			for k, st := range ks {
				if st == "capturing" || st == "waiting" {
					ks[k] = "finishing"
					if c := p.coll[name][k]; c == "perf" || c == "samply" {
						ks[k] = "symbolising"
					}
				}
			}
		}
	case capture.EventMerged:
		p.merged = append(p.merged, e.Kind)
	case capture.EventResult:
		p.bytes += e.Bytes
		if e.Status.Kept() {
			p.toMerge[e.Kind] = true
		}
		if ks := p.state[e.Target]; ks != nil {
			st := "done"
			switch e.Status {
			case bundle.StatusFailed:
				st = "failed"
			case bundle.StatusUnsupported:
				st = "n/a"
			case bundle.StatusPartial:
				st = "partial"
			}
			ks[e.Kind] = st
		}
	}
	if p.mode != progressJSON {
		e = safeEvent(e)
	}
	switch p.mode {
	case progressJSON:
		p.jsonEvent(e)
	case progressPlain:
		p.plain(e)
	case progressQuiet:
		if e.Type == capture.EventResult && e.Status == bundle.StatusFailed {
			fmt.Fprintf(p.w, "%s %s: %v\n", e.Target, e.Kind, e.Err)
		}
	case progressLive:
		if e.Type == capture.EventNote {
			p.clear()
			fmt.Fprintf(p.w, "%s\n", e.Msg)
		}
		if p.start.IsZero() {
			return
		}
		p.draw()
	}
}

// safeEvent escapes what came from outside (target names, errors, notes
// that quote a target) for a terminal.
func safeEvent(e capture.Event) capture.Event {
	e.Target, e.Msg = termsafe.String(e.Target), termsafe.String(secret.RedactText(e.Msg))
	if e.Err != nil {
		e.Err = errors.New(termsafe.String(secret.RedactText(e.Err.Error())))
	}
	return e
}

func (p *printer) jsonEvent(e capture.Event) {
	v := map[string]any{"time": e.Time.UTC().Format(time.RFC3339Nano)}
	switch e.Type {
	case capture.EventPlanned:
		v["event"], v["target"], v["kind"], v["collector"] = "planned", e.Target, e.Kind, e.Collector
	case capture.EventStarted:
		v["event"] = "window_start"
	case capture.EventWindowEnd:
		v["event"] = "window_end"
	case capture.EventResult:
		v["event"], v["target"], v["kind"], v["collector"], v["status"] = "profile", e.Target, e.Kind, e.Collector, e.Status
		v["samples"], v["bytes"] = e.Samples, e.Bytes
		if e.Err != nil {
			v["error"] = secret.RedactText(e.Err.Error())
		}
		if e.Msg != "" {
			v["note"] = secret.RedactText(e.Msg)
		}
	case capture.EventMerged:
		v["event"], v["kind"], v["path"], v["samples"] = "merged", e.Kind, e.Msg, e.Samples
	case capture.EventNote:
		v["event"], v["message"] = "note", e.Msg
	}
	p.json(v)
}

func (p *printer) plain(e capture.Event) {
	stamp := e.Time.UTC().Format("15:04:05")
	if !p.start.IsZero() {
		stamp += fmt.Sprintf(" +%5.1fs", e.Time.Sub(p.start).Seconds())
	}
	switch e.Type {
	case capture.EventResult:
		line := fmt.Sprintf("%s %-*s %-9s %-11s", stamp, p.width, e.Target, e.Kind, e.Status)
		if e.Err != nil {
			line += " " + e.Err.Error()
		} else {
			line += fmt.Sprintf(" %s, %s", countText(e.Samples, "stack"), humanSize(e.Bytes))
			if e.Msg != "" {
				line += " (" + e.Msg + ")"
			}
		}
		fmt.Fprintln(p.w, line)
	case capture.EventWindowEnd:
		fmt.Fprintf(p.w, "%s window ended; %s\n", stamp, p.after())
	case capture.EventMerged:
		if len(p.merged) == 1 {
			fmt.Fprintf(p.w, "%s merging the kinds across targets\n", stamp)
		}
		if p.allMerged() {
			fmt.Fprintf(p.w, "%s merged %d kinds; writing the report\n", stamp, len(p.merged))
		}
	case capture.EventNote:
		fmt.Fprintf(p.w, "%s %s\n", stamp, e.Msg)
	}
}

func (p *printer) ticker() {
	defer close(p.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			p.draw()
			p.mu.Unlock()
		}
	}
}

// ANSI colours and marks for the live table (compact, so a line per target
// fits a terminal and redrawing in place never wraps).
var stateColour = map[string]string{"waiting": "\x1b[2m", "capturing": "\x1b[36m", "finishing": "\x1b[35m", "symbolising": "\x1b[35m", "done": "\x1b[32m", "failed": "\x1b[31;1m", "partial": "\x1b[33m", "n/a": "\x1b[2m"}
var stateMark = map[string]string{"waiting": "·", "capturing": "…", "finishing": "↓", "symbolising": "§", "done": "✓", "failed": "✗", "partial": "~", "n/a": "-"}

// after says what runs after the window: symbolising and fetching the
// last profiles, merging the kinds, writing the report.
func (p *printer) after() string {
	sym, fin := 0, 0
	for _, ks := range p.state {
		for _, st := range ks {
			switch st {
			case "symbolising":
				sym++
			case "finishing", "capturing":
				fin++
			}
		}
	}
	var parts []string
	if sym > 0 {
		parts = append(parts, fmt.Sprintf("symbolising %s (§)", countText(sym, "perf/samply profile")))
	}
	if fin > 0 {
		parts = append(parts, fmt.Sprintf("collecting the last %s (↓)", countText(fin, "profile")))
	}
	if len(parts) > 0 {
		return strings.Join(parts, ", ")
	}
	switch {
	case p.allMerged():
		return "writing the report"
	case len(p.merged) > 0:
		return fmt.Sprintf("merging the kinds across targets (%d of %d)", len(p.merged), len(p.toMerge))
	}
	return "merging the kinds across targets"
}

// allMerged reports whether every kind with a profile has been merged.
func (p *printer) allMerged() bool {
	if len(p.merged) == 0 {
		return false
	}
	for _, st := range p.state {
		for _, s := range st {
			if s == "capturing" || s == "finishing" || s == "symbolising" {
				return false
			}
		}
	}
	return len(p.merged) >= len(p.toMerge)
}

// countText is "1 stack", "3 stacks".
func countText(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func (p *printer) clear() {
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA\x1b[J", p.drawn)
		p.drawn = 0
	}
}

// draw redraws the live table: a countdown, then one line per target.
func (p *printer) draw() {
	var b strings.Builder
	if p.ended.IsZero() {
		left := time.Until(p.deadline).Round(time.Second)
		if left < 0 {
			left = 0
		}
		fmt.Fprintf(&b, "window: %s left · %s received   (… capturing ✓ done ✗ failed ~ partial - not offered)\n", left, humanSize(p.bytes))
	} else {
		fmt.Fprintf(&b, "window ended %s ago · %s received · %s\n", time.Since(p.ended).Round(100*time.Millisecond), humanSize(p.bytes), p.after())
	}
	for _, name := range p.order {
		fmt.Fprintf(&b, "  %-*s", p.width, termsafe.String(name))
		for _, k := range p.kinds[name] {
			st := p.state[name][k]
			fmt.Fprintf(&b, " %s%s%s\x1b[0m", stateColour[st], k, stateMark[st])
		}
		b.WriteString("\n")
	}
	p.clear()
	io.WriteString(p.w, b.String())
	p.drawn = strings.Count(b.String(), "\n")
}

// finish stops the live table, leaving its last state on screen.
func (p *printer) finish() {
	if p.stop != nil {
		close(p.stop)
		<-p.done
		p.stop = nil
		p.mu.Lock()
		p.draw()
		p.drawn = 0
		p.mu.Unlock()
	}
}

// summary prints what the capture found: the workload's exit status, the
// profiles by outcome (adding up to those requested), per kind the total,
// idle share and top functions, what the cluster waits on, the instances
// that differ from their peers, and the incomplete profiles. It writes the
// same summary into the manifest when the capture did not.
func (p *printer) summary(o *capture.Outcome) {
	p.finish()
	m := o.Manifest
	sum := m.Summary
	if sum == nil {
		var err error
		if sum, err = report.Summarize(o.Dir, m); err == nil && len(m.Merged) > 0 {
			if err := bundle.WriteSummary(o.Dir, sum); err == nil {
				m.Summary = sum
			}
		}
	}
	if p.mode == progressJSON {
		v := map[string]any{"event": "done", "bundle": o.Dir, "status": m.Status, "reason": m.Reason,
			"captured": o.Captured, "failed": o.Failed, "unsupported": o.Unsupported, "report": m.Report}
		if sum != nil {
			v["summary"] = sum
		}
		if m.Workload != nil {
			v["workload_exit_code"] = m.Workload.ExitCode
		}
		p.json(v)
		return
	}
	if w := m.Workload; w != nil && p.mode != progressQuiet {
		cmd := termsafe.String(strings.Join(w.Command, " "))
		switch {
		case w.Error != "":
			fmt.Fprintf(p.w, "workload %q: %s (after %.1f s)\n", cmd, termsafe.String(w.Error), w.Seconds)
		default:
			fmt.Fprintf(p.w, "workload %q exited with status %d after %.1f s\n", cmd, w.ExitCode, w.Seconds)
		}
	}
	if p.mode != progressQuiet {
		c := countProfiles(m)
		fmt.Fprintf(p.w, "%s requested: %d ok, %d partial, %d failed, %d not offered by the target; status %s", countText(c.Requested, "profile"), c.OK, c.Partial, c.Failed, c.Unsupported, m.Status)
		if m.Reason != "" {
			fmt.Fprintf(p.w, " (%s)", termsafe.String(m.Reason))
		}
		fmt.Fprintln(p.w)
		if sum != nil {
			for _, l := range report.SummaryLines(sum) {
				fmt.Fprintf(p.w, "  %s\n", termsafe.String(l))
			}
		}
	}
	type failure struct{ target, kind, err string }
	var fails []failure
	for _, t := range m.Targets {
		for _, pr := range t.Profiles {
			// A kind no collector could take was asked for by name.
			if pr.Status == bundle.StatusFailed || pr.Status == bundle.StatusPartial || (pr.Status == bundle.StatusUnsupported && pr.Collector == "") {
				fails = append(fails, failure{termsafe.String(t.Name), string(pr.Kind), termsafe.String(pr.Error)})
			}
		}
	}
	sort.SliceStable(fails, func(i, j int) bool { return fails[i].target < fails[j].target })
	if len(fails) > 0 && p.mode != progressQuiet { // quiet mode printed each failure as it came
		fmt.Fprintf(p.w, "problems:\n")
		for _, f := range fails {
			fmt.Fprintf(p.w, "  %s %s: %s\n", f.target, f.kind, f.err)
		}
	}
	if p.mode != progressQuiet && m.Report != "" {
		fmt.Fprintf(p.w, "report: %s\n", termsafe.String(filepath.Join(o.Dir, m.Report)))
	}
}

// countProfiles counts the manifest's profile entries by outcome: they add
// up to the profiles requested.
func countProfiles(m *bundle.Manifest) bundle.ProfileCounts {
	if m.Summary != nil {
		return m.Summary.Profiles
	}
	var c bundle.ProfileCounts
	for _, t := range m.Targets {
		for _, p := range t.Profiles {
			c.Requested++
			switch p.Status {
			case bundle.StatusOK:
				c.OK++
			case bundle.StatusPartial:
				c.Partial++
			case bundle.StatusUnsupported:
				c.Unsupported++
			default:
				c.Failed++
			}
		}
	}
	return c
}
