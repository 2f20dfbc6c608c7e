//go:build linux && amd64

package ebpf

import (
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
)

func TestSmoke(t *testing.T) {
	needEBPF(t)
	cmd := start(t, "spinsleep")
	res, w := record(t, New(Options{}), cmd.Process.Pid, 2*time.Second, bundle.CPU, bundle.OffCPU, bundle.Wakeup)
	for k, r := range res {
		t.Logf("%s: %s cov %.3f note %s", k, r.Status, coverage(r, w), r.Note)
		for _, c := range r.Profile.Comments {
			t.Logf("  # %s", c)
		}
		top(t, r.Profile, len(r.Profile.SampleType)-1, 6)
	}
}
