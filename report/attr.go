package report

import (
	"slices"
	"strconv"
	"strings"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/flame"
)

// How the report attributes a sample to one function. A CPU or memory
// profile counts where the value is spent: the innermost frame ("self", as
// pprof's flat). A profile of waiting (wall clock, off-CPU, block, mutex,
// goroutines, await points) ends in the runtime's and the kernel's waiting
// machinery (runtime.gopark, runtime.selectgo, __schedule, futex, a libc
// wrapper), so the report names the code that waits instead: the first
// frame of user code above that machinery, and the library call it waited
// in ("via").

// waitKind reports whether a kind's samples are attributed to the code
// that waits.
func waitKind(k bundle.Kind) bool {
	switch k {
	case bundle.Wall, bundle.OffCPU, bundle.Block, bundle.Mutex, bundle.Goroutine, bundle.Await, bundle.Wakeup:
		return true
	}
	return false
}

// waitsKinds are the kinds the "waiting on" line draws from, and the
// sample type of each that measures waiting ("" the default).
var waitsKinds = []struct {
	Kind       bundle.Kind
	SampleType string
}{{bundle.Wall, ""}, {bundle.OffCPU, ""}, {bundle.Block, "delay"}, {bundle.Async, "idle"}, {bundle.Await, ""}, {bundle.Wakeup, ""}}

// attribution is where one sample's value goes.
type attribution struct {
	Key  string // full function name (or task name, or state)
	Via  string // the library call the code waited in, for waits
	In   string // for self attribution of a system frame: the user code it ran for
	Idle string // the idle reason, "" when not idle
	Wait bool   // a waiting sample (for kinds that mix running and waiting)
}

// attributor names samples, caching names per location.
type attributor struct {
	kind   bundle.Kind
	stacks *flame.Stacks
	cache  map[string]attribution // by stack (location IDs)
	key    []byte
}

func newAttributor(k bundle.Kind) *attributor {
	return &attributor{kind: k, stacks: flame.NewStacks(), cache: map[string]attribution{}}
}

// frames returns s's frames leaf first (reused by the next call).
func (a *attributor) frames(s *profile.Sample) []flame.Frame { return a.stacks.Leaf(s) }

// attribute attributes s, once per distinct stack: samples that differ
// only in their labels (perf's thread ids) share the work.
func (a *attributor) attribute(s *profile.Sample) attribution {
	a.key = a.key[:0]
	for _, l := range s.Location {
		a.key = strconv.AppendUint(a.key, l.ID, 36)
		a.key = append(a.key, ',')
	}
	if at, ok := a.cache[string(a.key)]; ok {
		return at
	}
	at := a.compute(s)
	a.cache[string(a.key)] = at
	return at
}

func (a *attributor) compute(s *profile.Sample) attribution {
	fs := a.frames(s)
	var at attribution
	if len(fs) == 0 {
		// A goroutine the runtime recorded without a stack (starting or
		// exiting) waits for nothing in particular.
		at.Key = "[no stack]"
		if flame.IdleKind(string(a.kind)) {
			at.Idle = "no stack recorded"
		}
		return at
	}
	at.Idle = flame.IdleReason(string(a.kind), fs)
	at.Wait = flame.Waiting(string(a.kind), fs)
	if a.kind == bundle.Wakeup {
		// The code that waited, and who woke it.
		if waker, blocked, ok := flame.SplitWakeup(fs); ok && len(blocked) > 0 {
			at.Key, _ = waiter(blocked)
			at.Via = wokenBy(waker)
			return at
		}
	}
	if waitKind(a.kind) {
		at.Key, at.Via = waiter(fs)
		return at
	}
	if a.kind == bundle.Async {
		at.Key = taskName(fs)
		return at
	}
	// Self, at the innermost user-space frame for on-CPU profiles whose
	// stacks carry kernel frames (perf): those are the kernel's own.
	at.Key = fs[0].Name
	if flame.SystemFrame(fs[0]) {
		for _, f := range fs[1:] {
			if !flame.SystemFrame(f) {
				at.In = f.Name
				break
			}
		}
	}
	return at
}

// taskName names an async sample's task (leaf first: the task's name,
// its spawn location, its kind). An unnamed task is named by where it was
// spawned; the multi-thread runtime's own worker threads, which tokio
// runs as blocking tasks (busy their whole life), are said to be that.
func taskName(fs []flame.Frame) string {
	name := fs[0].Name
	if name != "unnamed" || len(fs) < 2 {
		return name
	}
	loc := fs[1].Name
	if strings.Contains(loc, "/tokio-") && strings.Contains(loc, "/runtime/scheduler/") {
		return "[tokio runtime worker thread]"
	}
	// A registry path is long: its crate and file say enough.
	if i := strings.LastIndex(loc, "/src/"); i >= 0 {
		if j := strings.LastIndexByte(loc[:i], '/'); j >= 0 {
			loc = loc[j+1:]
		}
	}
	return "unnamed task at " + loc
}

// waiter returns the first frame of user code from the leaf, and the
// outermost system frame below it that is a library call worth naming. A
// state frame ("[preempted: runnable, waiting for a CPU]") is the reason
// itself. A stack of system frames only is attributed to its outermost
// frame that is not the runtime's entry.
func waiter(fs []flame.Frame) (key, via string) {
	for _, f := range fs {
		if strings.HasPrefix(f.Name, "[preempted") || strings.HasPrefix(f.Name, "[runnable") {
			return f.Name, ""
		}
	}
	for i, f := range fs {
		if flame.SystemFrame(f) {
			continue
		}
		if i > 0 {
			via = viaName(fs[:i])
		}
		return f.Name, via
	}
	// Only system frames: the outermost that is not a thread or goroutine
	// entry, so that "net/http.(*conn).serve" rather than runtime.goexit
	// names a stack of the standard library alone.
	for i := len(fs) - 1; i >= 0; i-- {
		n := fs[i].Name
		if entryFrame(n) {
			continue
		}
		return n, ""
	}
	return fs[0].Name, ""
}

// wokenBy names the waker of a wakeup sample from its part of the stack
// (leaf first: the waker's name, then its stack from root to leaf): its
// innermost frame of user code, else its name; the collector's markers
// for blocks without one say why.
func wokenBy(waker []flame.Frame) string {
	if len(waker) == 0 {
		return ""
	}
	switch n := waker[0].Name; {
	case strings.HasPrefix(n, "[not woken"):
		return "not woken in the window"
	case n == "[interrupt]":
		return "woken by an interrupt"
	case strings.HasPrefix(n, "[waker unknown"):
		return ""
	}
	if len(waker) == 1 {
		return "woken by " + waker[0].Name
	}
	// The waker's stack leaf first, named as a waiter's is: its
	// innermost user code, else its outermost frame that is not a
	// thread's entry (a Go scheduler's runtime.wakep, say).
	stack := slices.Clone(waker[1:])
	slices.Reverse(stack)
	key, _ := waiter(stack)
	return "woken by " + flame.ShortName(key)
}

func entryFrame(n string) bool {
	switch n {
	case "runtime.goexit", "runtime.goexit.abi0", "runtime.main", "runtime.mstart", "runtime.mstart0", "runtime.mstart1",
		"runtime.mcall", "runtime.systemstack", "runtime.rt0_go.abi0", "start_thread", "clone", "clone3", "_start",
		"__libc_start_main", "__libc_start_call_main", "thread_start", "runtime.asmcgocall.abi0":
		return true
	}
	return strings.HasPrefix(n, "[") || strings.HasSuffix(n, ".gowrap1") || strings.HasSuffix(n, ".gowrap2") || strings.HasSuffix(n, ".gowrap3") ||
		rustThreadEntry(n) || unnamedLibcFrame(n)
}

// rustThreadEntry: the frames Rust's standard library puts under every
// thread's closure (Thread::new::thread_start, the closure's FnOnce shim,
// __rust_begin_short_backtrace, Builder::spawn_unchecked_'s closure).
func rustThreadEntry(n string) bool {
	return strings.HasSuffix(n, "::thread_start") || strings.Contains(n, "rust_begin_short_backtrace") ||
		strings.HasPrefix(n, "core::ops::function::FnOnce::call_once") || strings.Contains(n, "spawn_unchecked_")
}

// unnamedLibcFrame: a frame of libc or the dynamic loader that only has
// an address (Debian's libc has no .symtab, and start_thread is not
// exported): at a stack's root it is the thread's start.
func unnamedLibcFrame(n string) bool {
	i := strings.Index(n, "+0x")
	return i > 0 && (strings.HasPrefix(n, "libc.so") || strings.HasPrefix(n, "ld-linux") || strings.HasPrefix(n, "libpthread"))
}

// viaName names how user code waited, from the system frames leafward of
// it (leaf first): the library call it made, or the kind of wait.
func viaName(sys []flame.Frame) string {
	// The outermost system frame is the call user code made.
	call := sys[len(sys)-1].Name
	if !internalFrame(call) {
		return flame.ShortName(call)
	}
	for _, f := range sys {
		switch n := f.Name; {
		case n == "runtime.selectgo":
			return "select"
		case strings.HasPrefix(n, "runtime.chanrecv"):
			return "channel receive"
		case strings.HasPrefix(n, "runtime.chansend"):
			return "channel send"
		case n == "internal/poll.runtime_pollWait" || n == "runtime.netpollblock":
			return "network"
		case strings.Contains(n, "Semacquire") || strings.Contains(n, "Mutex"):
			return "lock"
		case n == "time.Sleep" || n == "runtime.timeSleep":
			return "sleep"
		case strings.Contains(n, "futex"):
			return "futex"
		}
	}
	return ""
}

// internalFrame reports whether a frame is the runtime's own machinery
// rather than an API user code calls.
func internalFrame(n string) bool {
	return strings.HasPrefix(n, "runtime.") || strings.HasPrefix(n, "internal/") || strings.HasPrefix(n, "sync.runtime_") ||
		strings.HasPrefix(n, "__") || strings.HasPrefix(n, "std::sys") || strings.HasPrefix(n, "syscall") ||
		strings.Contains(n, "futex") || n == "epoll_wait"
}
