// Package demo is profcap's built-in demo cluster: five Go services on
// loopback shaped like the reference cluster (two orchestration services and
// three workers) that run workflows of steps so that every kind of profile
// has something to show.
//
// Each service serves net/http/pprof under /debug/pprof/, fgprof under
// /debug/fgprof, /health and Prometheus-text /metrics. Orchestrators plan
// workflows (linear, diamond and tree DAGs of steps) at a steady rate and
// dispatch ready steps over HTTP to the workers; workers do the steps with
// real CPU work (hashing, JSON encoding), allocations, contention on a shared
// mutex and a slow fake database behind a small connection pool.
//
// RunService is the body of one service (what `profcap demo-service` runs);
// Start and Stop manage the whole cluster as separate processes, with the
// reference cluster's .pids/NAME.pid and .logs/NAME.log layout and a
// profcap.yaml naming every service.
package demo

import "fmt"

// Role is what a service does in the cluster.
type Role string

const (
	RoleOrchestration Role = "orchestration"
	RoleWorker        Role = "worker"
)

// Instance is one service of the cluster layout.
type Instance struct {
	Name     string
	Role     Role
	Language string // the reference cluster's implementation language; a label only
	BasePort int    // the reference layout's port for the first instance of its kind
	Index    int    // 1-based instance number within its kind
}

// Port is the instance's port in the reference layout shifted by offset:
// instance i of a kind uses base+i-1.
func (in Instance) Port(offset int) int { return in.BasePort + in.Index - 1 + offset }

// ConsoleBasePort is where the demo's tokio-console style gRPC endpoints
// start: 6669 is console-subscriber's default, and since the five services
// share one host each gets its own port (6669, 6670, …), as the reference
// cluster must with TOKIO_CONSOLE_BIND.
const ConsoleBasePort = 6669

// ConsolePort is the console port of the instance at position i of Layout.
func ConsolePort(i, offset int) int { return ConsoleBasePort + i + offset }

// Layout is the reference cluster: orchestration on 8080+, the Rust worker
// on 8100+, Ruby on 8200+ and Python on 8300+, one instance of each worker.
var Layout = LayoutFor(1)

// LayoutFor is the reference cluster with workers instances of each worker
// (at least one): worker-rust-1 … worker-rust-N on 8100 …, and so on.
func LayoutFor(workers int) []Instance {
	workers = max(1, workers)
	l := []Instance{
		{Name: "orchestration-1", Role: RoleOrchestration, Language: "go", BasePort: 8080, Index: 1},
		{Name: "orchestration-2", Role: RoleOrchestration, Language: "go", BasePort: 8080, Index: 2},
	}
	for _, w := range []struct {
		lang string
		port int
	}{{"rust", 8100}, {"ruby", 8200}, {"python", 8300}} {
		for i := 1; i <= workers; i++ {
			l = append(l, Instance{Name: fmt.Sprintf("worker-%s-%d", w.lang, i), Role: RoleWorker, Language: w.lang, BasePort: w.port, Index: i})
		}
	}
	return l
}

// MaxWorkers bounds --workers: ports of one worker kind are 100 apart.
const MaxWorkers = 20

// Group is the instance's kind of service, the "role" label profcap.yaml
// gives it: orchestration, worker-rust, worker-ruby, worker-python. The
// report compares the instances of one group with each other.
func (in Instance) Group() string {
	if in.Role == RoleWorker {
		return "worker-" + in.Language
	}
	return string(in.Role)
}

// ParseRole parses a --role value.
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case RoleOrchestration, RoleWorker:
		return Role(s), nil
	}
	return "", fmt.Errorf("unknown role %q: want %q or %q", s, RoleOrchestration, RoleWorker)
}
