//go:build !linux

package collectors

// hardwareCycles: only Linux's perf_event_open is asked; elsewhere the
// samplers use other interfaces.
func hardwareCycles() bool { return true }
