//go:build !linux || !amd64

package ebpf

import (
	"context"
	"errors"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
)

func machineCheck() error {
	return errors.New("the eBPF collector runs on Linux on x86-64 only (its BPF objects are built for that)")
}

func (c *Collector) collect(ctx context.Context, w *collectors.Window, pid int, notes []string, kinds []bundle.Kind, emit collectors.Emit) {
	for _, k := range kinds {
		emit(collectors.Result{Kind: k, Collector: Name, Status: bundle.StatusUnsupported, Err: machineCheck()})
	}
}
