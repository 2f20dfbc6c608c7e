package ebpf

// Frame is one symbolised address (symbolize.Frame's fields the
// collector uses).
type Frame struct {
	// Function is the function's name; for a function without one whose
	// start is known (a stripped file's .eh_frame_hdr), "MODULE+0xSTART";
	// "" when neither is known.
	Function, File string
	Line           int
	Module         string
	BuildID        string
	Offset         uint64 // in Module: the file offset for user frames, the symbol offset for kernel ones
	Known          bool
}

// symbolizer is what the collector needs of symbolisation: the
// symbolize.Symbolizer's methods (symbols_linux.go adapts it).
type symbolizer interface {
	// Snapshot records /proc/PID/maps, so that its addresses resolve after
	// the process exits.
	Snapshot(pid int) error
	// Inherit gives pid the snapshot of parent (a child that exited before
	// its own snapshot, and did not exec, has its parent's layout).
	Inherit(pid, parent int)
	User(pid int, addrs []uint64) []Frame
	Kernel(addrs []uint64) []Frame
	Notes() []string
}
