package perfdata

import "golang.org/x/sys/unix"

// mapFlags prefault the mapping: every page of perf.data is read, and
// faulting them in one go costs a fraction of a fault each.
const mapFlags = unix.MAP_PRIVATE | unix.MAP_POPULATE
