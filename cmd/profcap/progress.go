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
	"github.com/profcap/profcap/internal/pprofutil"
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
	bytes    int64
	drawn    int // lines drawn last time (live mode)
	stop     chan struct{}
	done     chan struct{}
}

func newPrinter(stdout, stderr io.Writer, quiet, jsonOut bool) *printer {
	p := &printer{w: stderr, out: stdout, width: 8, state: map[string]map[bundle.Kind]string{}, kinds: map[string][]bundle.Kind{}}
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
	case capture.EventResult:
		p.bytes += e.Bytes
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
			line += fmt.Sprintf(" %d samples, %s", e.Samples, humanSize(e.Bytes))
			if e.Msg != "" {
				line += " (" + e.Msg + ")"
			}
		}
		fmt.Fprintln(p.w, line)
	case capture.EventWindowEnd:
		fmt.Fprintf(p.w, "%s window ended; collecting the last results\n", stamp)
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
var stateColour = map[string]string{"waiting": "\x1b[2m", "capturing": "\x1b[36m", "done": "\x1b[32m", "failed": "\x1b[31;1m", "partial": "\x1b[33m", "n/a": "\x1b[2m"}
var stateMark = map[string]string{"waiting": "·", "capturing": "…", "done": "✓", "failed": "✗", "partial": "~", "n/a": "-"}

func (p *printer) clear() {
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA\x1b[J", p.drawn)
		p.drawn = 0
	}
}

// draw redraws the live table: a countdown, then one line per target.
func (p *printer) draw() {
	var b strings.Builder
	left := time.Until(p.deadline).Round(time.Second)
	if left < 0 {
		left = 0
	}
	fmt.Fprintf(&b, "window: %s left · %s received   (… capturing ✓ done ✗ failed ~ partial - not offered)\n", left, humanSize(p.bytes))
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

// summary prints, per kind, the top functions across the cluster and, per
// target, what failed.
func (p *printer) summary(o *capture.Outcome) {
	p.finish()
	m := o.Manifest
	if p.mode == progressJSON {
		p.json(map[string]any{"event": "done", "bundle": o.Dir, "status": m.Status, "reason": m.Reason,
			"captured": o.Captured, "failed": o.Failed, "unsupported": o.Unsupported, "report": m.Report})
		return
	}
	if p.mode != progressQuiet {
		fmt.Fprintf(p.w, "captured %d profile(s), %d failed, %d unsupported; status %s", o.Captured, o.Failed, o.Unsupported, m.Status)
		if m.Reason != "" {
			fmt.Fprintf(p.w, " (%s)", termsafe.String(m.Reason))
		}
		fmt.Fprintln(p.w)
		for _, mg := range m.Merged {
			pr, err := bundle.LoadProfile(o.Dir, mg.Path)
			if err != nil {
				continue
			}
			idx, err := pprofutil.SampleIndex(pr, "")
			if err != nil {
				continue
			}
			_, _, total := report.Top(pr, idx, 0)
			top := pr
			if mg.Kind == bundle.OffCPU {
				top = report.UserLeaves(pr) // not "__schedule 100%"
			}
			bySelf, _, _ := report.Top(top, idx, 5)
			var parts []string
			for _, f := range bySelf {
				parts = append(parts, fmt.Sprintf("%s %.0f%%", termsafe.String(shortFunc(f.Name)), f.SelfPct))
			}
			fmt.Fprintf(p.w, "  %-9s %-10s top: %s\n", mg.Kind, pprofutil.FormatValue(total, pr.SampleType[idx].Unit), strings.Join(parts, ", "))
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

// shortFunc trims a function name's package path for the one-line summary.
func shortFunc(name string) string {
	if i := strings.LastIndex(name, "/"); i >= 0 && !strings.Contains(name[i:], " ") {
		name = name[i+1:]
	}
	if len(name) > 48 {
		name = name[:47] + "…"
	}
	return name
}
