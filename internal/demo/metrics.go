package demo

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// metrics is a tiny Prometheus-text registry: counters with at most one
// label, and gauges read at scrape time. The demo only needs this much, and
// it keeps the services free of a metrics dependency.
type metrics struct {
	mu      sync.Mutex
	entries []metricEntry
}

type metricEntry struct {
	name, help, typ string
	write           func(w io.Writer, name string)
}

// counterVec is a counter family keyed by one label ("" for no label).
type counterVec struct {
	label string
	mu    sync.Mutex
	vals  map[string]*atomic.Uint64
}

func (m *metrics) counter(name, help, label string) *counterVec {
	c := &counterVec{label: label, vals: map[string]*atomic.Uint64{}}
	if label == "" {
		c.vals[""] = new(atomic.Uint64) // always present, so a scrape shows 0
	}
	m.mu.Lock()
	m.entries = append(m.entries, metricEntry{name: name, help: help, typ: "counter", write: c.write})
	m.mu.Unlock()
	return c
}

func (m *metrics) gauge(name, help string, read func() float64) {
	m.mu.Lock()
	m.entries = append(m.entries, metricEntry{name: name, help: help, typ: "gauge", write: func(w io.Writer, name string) {
		fmt.Fprintf(w, "%s %g\n", name, read())
	}})
	m.mu.Unlock()
}

func (c *counterVec) get(lv string) *atomic.Uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.vals[lv]
	if v == nil {
		v = new(atomic.Uint64)
		c.vals[lv] = v
	}
	return v
}

func (c *counterVec) inc(lv string)           { c.get(lv).Add(1) }
func (c *counterVec) add(lv string, n uint64) { c.get(lv).Add(n) }
func (c *counterVec) value(lv string) uint64  { return c.get(lv).Load() }

func (c *counterVec) write(w io.Writer, name string) {
	c.mu.Lock()
	keys := make([]string, 0, len(c.vals))
	for k := range c.vals {
		keys = append(keys, k)
	}
	c.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		if c.label == "" {
			fmt.Fprintf(w, "%s %d\n", name, c.get(k).Load())
		} else {
			fmt.Fprintf(w, "%s{%s=%q} %d\n", name, c.label, k, c.get(k).Load())
		}
	}
}

// writeText writes every metric in the Prometheus text exposition format.
func (m *metrics) writeText(w io.Writer) {
	m.mu.Lock()
	entries := append([]metricEntry(nil), m.entries...)
	m.mu.Unlock()
	for _, e := range entries {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", e.name, strings.ReplaceAll(e.help, "\n", " "), e.name, e.typ)
		e.write(w, e.name)
	}
}
