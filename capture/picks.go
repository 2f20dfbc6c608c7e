package capture

import (
	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/targets"
)

// Picks is what Plan decides, by name: for each target, the collector each
// kind is taken from (one per kind: a capture never takes a kind of a
// target from two sources). profcap targets shows it.
func Picks(ts []targets.Target, cs []collectors.Collector, want []bundle.Kind, explicit bool, prefer string) map[string]map[bundle.Kind]string {
	jobs, _ := Plan(ts, cs, want, explicit, prefer)
	out := map[string]map[bundle.Kind]string{}
	for _, j := range jobs {
		m := out[j.target.Name]
		if m == nil {
			m = map[bundle.Kind]string{}
			out[j.target.Name] = m
		}
		for _, k := range j.kinds {
			m[k] = j.collector.Name()
		}
	}
	return out
}
