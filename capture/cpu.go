package capture

import (
	"context"
	"fmt"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/internal/procstat"
	"github.com/profcap/profcap/targets"
)

// cpuMeter measures local targets' CPU use (from /proc) during a baseline
// before the window and during the window.
type cpuMeter struct {
	d      time.Duration
	pids   map[string]int
	errs   map[string]string
	b0, b1 map[string]time.Duration // baseline start, end
	w0, w1 map[string]time.Duration // window start, end
	bt     [2]time.Time
	wt     [2]time.Time
}

func newCPUMeter(ts []targets.Target, baseline time.Duration) *cpuMeter {
	m := &cpuMeter{d: baseline, pids: map[string]int{}, errs: map[string]string{},
		b0: map[string]time.Duration{}, b1: map[string]time.Duration{}, w0: map[string]time.Duration{}, w1: map[string]time.Duration{}}
	for i := range ts {
		if pid, err := ts[i].ResolvePID(); err == nil && pid > 0 {
			// A launcher (uv run) uses no CPU; measure the process it runs.
			pid, _ = collectors.FollowLauncher(pid)
			m.pids[ts[i].Name] = pid
		}
	}
	return m
}

func (m *cpuMeter) sample(into map[string]time.Duration) time.Time {
	for name, pid := range m.pids {
		if d, err := procstat.CPUTime(pid); err == nil {
			into[name] = d
		} else if m.errs[name] == "" {
			m.errs[name] = fmt.Sprintf("reading /proc/%d/stat: %v", pid, err)
		}
	}
	return time.Now()
}

// baseline measures for m.d before the window (or not at all).
func (m *cpuMeter) baseline(ctx context.Context) {
	if m.d <= 0 || len(m.pids) == 0 {
		return
	}
	m.bt[0] = m.sample(m.b0)
	select {
	case <-time.After(m.d):
	case <-ctx.Done():
	}
	m.bt[1] = m.sample(m.b1)
}

func (m *cpuMeter) windowStart() {
	if len(m.pids) > 0 {
		m.wt[0] = m.sample(m.w0)
	}
}

func (m *cpuMeter) windowEnd() {
	if len(m.pids) > 0 {
		m.wt[1] = m.sample(m.w1)
	}
}

// use is the manifest entry for a target (nil if it is not local).
func (m *cpuMeter) use(name string) *bundle.CPUUse {
	if _, ok := m.pids[name]; !ok {
		return nil
	}
	u := &bundle.CPUUse{Error: m.errs[name]}
	cores := func(a, b map[string]time.Duration, t [2]time.Time) float64 {
		x, ok1 := a[name]
		y, ok2 := b[name]
		el := t[1].Sub(t[0])
		if !ok1 || !ok2 || el <= 0 {
			return 0
		}
		return float64(y-x) / float64(el)
	}
	if m.d > 0 {
		u.BaselineSeconds = m.bt[1].Sub(m.bt[0]).Seconds()
		u.BaselineCores = cores(m.b0, m.b1, m.bt)
	}
	u.WindowCores = cores(m.w0, m.w1, m.wt)
	return u
}
