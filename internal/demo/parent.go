package demo

import (
	"context"
	"os"
	"time"
)

// WithParent returns a context that is cancelled when the process's parent
// is no longer ppid: the manager of a foreground cluster died without
// stopping its services (e.g. it was killed with SIGKILL), and the services
// were re-parented. It polls, as there is no portable notification.
func WithParent(ctx context.Context, ppid int) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if os.Getppid() != ppid {
				cancel()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return ctx, cancel
}
