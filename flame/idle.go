package flame

import (
	"strings"
	"sync"
)

// Idle stacks. A wall-clock, off-CPU or block profile of a service spends
// most of its time in threads and goroutines that have nothing to do: Go's
// scheduler threads parked in findRunnable, goroutines of an HTTP server
// waiting for the next request, Tokio workers parked, an event loop in
// epoll_wait. They are real, but they drown what a reader is looking for
// (on the demo cluster: 93% of wall time is runtime.gopark). IdleReason
// names them by runtime, so that reports can show them as one labelled
// "idle" bar, hidden by default, and give shares of the rest.
//
// The rules are deliberately about shapes that mean "waiting for work",
// not "waiting for something": a goroutine waiting for a database reply
// (demo.(*dbConn).waitForReply) is not idle, one parked in the accept loop
// of net/http is.

// A Frame is one function in a stack, with the runtime it belongs to.
type Frame struct {
	Name string
	Lang Lang
}

// Idle reasons, as reports show them.
const (
	IdleProfiler  = "profiler (serving this capture)"
	IdleGoSched   = "Go scheduler and runtime threads"
	IdleGoNet     = "Go idle connections and accept loops"
	IdleGoLoop    = "Go goroutines waiting for work"
	IdleTokio     = "Tokio workers parked and I/O driver"
	IdleLibuv     = "libuv event loop"
	IdlePython    = "Python event loop and idle threads"
	IdleRuby      = "Ruby event loop and idle threads"
	IdleEventLoop = "event loop in epoll_wait"
)

// IdleKind reports whether idle stacks are recognised in profiles of this
// kind: kinds that count waiting (wall clock, off-CPU, block, goroutines,
// await points, wake-ups). On-CPU time and memory are never idle.
func IdleKind(kind string) bool {
	switch kind {
	case "wall", "offcpu", "block", "goroutine", "await", "wakeup":
		return true
	}
	return false
}

var (
	profilerRE = lazyRE(`(?i)fgprof|^net/http/pprof\.|^runtime/pprof\.(?:profileWriter|StartCPUProfile|\(\*profileBuilder\)|writeProfileInternal)|_Instrument_Watch\w*_Handler|console_subscriber::|^pprof::profiler|^pyroscope|^bpf_prog_[0-9a-f]+_\w`)

	// Go runtime functions only idle threads and the runtime's own
	// background goroutines run in.
	goSched = map[string]bool{
		"runtime.findRunnable": true, "runtime.findrunnable": true, "runtime.stopm": true, "runtime.stoplockedm": true,
		"runtime.mPark": true, "runtime.notesleep": true, "runtime.sysmon": true, "runtime.templateThread": true,
		"runtime.gcBgMarkWorker": true, "runtime.bgsweep": true, "runtime.bgscavenge": true, "runtime.forcegchelper": true,
		"runtime.runfinq": true, "runtime.runCleanups": true, "runtime.(*cleanupQueue).dequeue": true,
		"runtime.gcenable.gowrap1": true, "runtime.gcenable.gowrap2": true, "runtime.ensureSigM.func1": true,
		"runtime.(*traceAdvancerState).start.func1": true, "runtime.unique_runtime_registerUniqueMapCleanup.func1": true,
		"runtime.netpoll": true,
	}
	// Go frames where a goroutine parks: the leafward end of a waiting stack.
	goPark = map[string]bool{
		"runtime.gopark": true, "runtime.goparkunlock": true, "runtime.selectgo": true, "runtime.block": true,
		"runtime.chanrecv": true, "runtime.chanrecv1": true, "runtime.chanrecv2": true,
		"runtime.chansend": true, "runtime.chansend1": true, "runtime.netpollblock": true,
		"internal/poll.runtime_pollWait": true, "sync.runtime_notifyListWait": true, "runtime.notetsleepg": true,
		"time.Sleep": true, "runtime.timeSleep": true, "runtime.semacquire1": true, "sync.runtime_Semacquire": true,
		"sync.runtime_SemacquireMutex": true, "sync.runtime_SemacquireWaitGroup": true, "sync.runtime_SemacquireRWMutex": true,
		"sync.runtime_SemacquireRWMutexR": true, "internal/sync.runtime_SemacquireMutex": true,
		// Leaves of block profiles, which end where the runtime records.
		"sync.(*Cond).Wait": true, "sync.(*WaitGroup).Wait": true, "sync.(*Mutex).Lock": true,
		"sync.(*RWMutex).Lock": true, "sync.(*RWMutex).RLock": true, "internal/sync.(*Mutex).Lock": true,
		"internal/sync.(*Mutex).lockSlow": true, "sync.(*Mutex).lockSlow": true,
	}
	// Parks that wait for work to arrive (not for a lock or a send).
	// goFutex are the runtime frames between a note sleep and the kernel.
	goFutex    = map[string]bool{"runtime.futex": true, "runtime.futexsleep": true, "runtime.notetsleep_internal": true}
	goRecvPark = map[string]bool{
		"runtime.selectgo": true, "runtime.chanrecv": true, "runtime.chanrecv1": true, "runtime.chanrecv2": true,
		"sync.runtime_notifyListWait": true, "runtime.notetsleepg": true, "time.Sleep": true, "runtime.timeSleep": true,
		"runtime.block": true, "sync.(*Cond).Wait": true,
	}
	// Infrastructure loops of Go's standard library and common libraries
	// that wait for the network or a timer whatever calls them.
	goNetLoop = lazyRE(`^(?:net\.\(\*netFD\)\.accept|net\.\(\*TCPListener\)\.Accept|net\.\(\*UnixListener\)\.Accept|net/http\.\(\*connReader\)\.backgroundRead|net/http\.\(\*persistConn\)\.(?:readLoop|writeLoop)|net/http\.\(\*http2serverConn\)\.(?:serve|readFrames)|net/http\.\(\*http2ClientConn\)\.readLoop|golang\.org/x/net/http2\.\(\*(?:serverConn|ClientConn|clientConnReadLoop)\)\.(?:serve|readFrames|readLoop|run)|google\.golang\.org/grpc/internal/transport\.\(\*(?:http2Server|http2Client)\)\.(?:HandleStreams|reader|keepalive)|google\.golang\.org/grpc/internal/transport\.\(\*loopyWriter\)\.run|google\.golang\.org/grpc/internal/transport\.\(\*controlBuffer\)\.get|os/signal\.(?:loop|signal_recv))$`)

	// Tokio and the Rust crates under it.
	tokioIdle     = lazyRE(`^(?:tokio::runtime::scheduler::(?:multi_thread::(?:worker::Context::park(?:_timeout|_internal)?|park::Parker::park(?:_timeout)?|park::Inner::park(?:_condvar|_driver)?)|current_thread::Context::park(?:_yield)?)|tokio::runtime::park::|tokio::runtime::driver::Driver::park|tokio::runtime::io::driver::Driver::turn|tokio::runtime::time::Driver::park|mio::poll::Poll::poll|tokio::net::tcp::listener::TcpListener::accept)`)
	tokioBlocking = "tokio::runtime::blocking::pool::Inner::run"

	libuvIdle = lazyRE(`^(?:uv__io_poll|uv_run|uv__epoll_ctl_flush|uv_cond_wait|uv_cond_timedwait)$`)

	// glibc (and musl) calls an event loop blocks in.
	pollCall = lazyRE(`^_*(?:GI_)?_*(?:epoll_wait|epoll_pwait2?|poll|ppoll|select|pselect6?|kevent|io_uring_enter|__epoll_wait_nocancel)(?:@plt)?$`)
	loopName = lazyRE(`(?i)event|loop|poll|reactor|dispatch|selector|mio|uv_|ev_run|g_main|us_loop|run_forever`)

	pySelector = lazyRE(`^(?:select|poll|_poll|_run_once|run_forever|run_until_complete|serve_forever|get|wait|_worker|_bootstrap_inner|_bootstrap|accept|join) \((?:.*/)?(?:selectors|asyncio/base_events|asyncio/runners|socketserver|threading|queue|concurrent/futures/thread|concurrent/futures/process|multiprocessing/\w+|socket)\.py`)
	rbSelector = lazyRE(`(?:^|\s)(?:select|IO\.select|IO#wait_readable|NIO::Selector#select|Thread::Queue#pop|pop|Thread::ConditionVariable#wait|ConditionVariable#wait|Monitor#wait|sleep|Kernel#sleep|accept_nonblock|wait_readable)\b`)
	rbLoop     = lazyRE(`(?i)reactor|thread_pool|server\.rb|selector|event_?machine|nio|async/|falcon|sidekiq/(?:manager|launcher|scheduled|fetch)`)
)

// WakeupSeparator is the frame of a wakeup stack (bcc's offwaketime
// layout) between the blocked stack, rootward, and the waker's stack,
// leafward, above which the waker's name is the leaf.
const WakeupSeparator = "--"

// SplitWakeup splits a wakeup stack (leaf first) into the waker's part
// (the waker's name first, then its stack from its root to its leaf) and
// the blocked stack (leaf first); ok is false without a separator.
func SplitWakeup(frames []Frame) (waker, blocked []Frame, ok bool) {
	for i, f := range frames {
		if f.Name == WakeupSeparator {
			return frames[:i], frames[i+1:], true
		}
	}
	return nil, frames, false
}

// ProfilerStack reports whether a stack runs a profiler serving the
// capture (fgprof, net/http/pprof, a console subscriber's watch stream, a
// BPF program run in the thread's context, such as the eBPF collector's
// stack walk at a context switch): the capture's cost, not the program's
// work.
func ProfilerStack(frames []Frame) bool {
	for _, f := range frames {
		if match(profilerRE, f.Name) {
			return true
		}
	}
	return false
}

// IdleReason says why a stack is idle, or "" when it is not. frames are
// leaf first (innermost frame first). kind is the profile kind: only the
// kinds IdleKind accepts have idle stacks.
func IdleReason(kind string, frames []Frame) string {
	if !IdleKind(kind) || len(frames) == 0 {
		return ""
	}
	if kind == "wakeup" {
		// Idle or not is the blocked thread's: its stack is rootward of
		// the separator.
		if _, blocked, ok := SplitWakeup(frames); ok {
			frames = blocked
		}
	}
	for _, f := range frames {
		if match(profilerRE, f.Name) {
			return IdleProfiler
		}
	}
	if r := idleGo(frames); r != "" {
		return r
	}
	if r := idleNative(frames); r != "" {
		return r
	}
	return ""
}

// isGoInfra reports whether a Go frame belongs to the runtime or the
// standard library (a package path whose first element has no dot), or to
// a library whose loops are infrastructure (gRPC, x/net).
func isGoInfra(name string) bool {
	if strings.HasPrefix(name, "main.") {
		return false
	}
	if strings.HasPrefix(name, "google.golang.org/grpc") || strings.HasPrefix(name, "golang.org/x/net/") {
		return true
	}
	if slash := strings.IndexByte(name, '/'); slash >= 0 {
		// "net/http.x" is the standard library, "github.com/x/y.z" is not.
		return !strings.Contains(name[:slash], ".") && isStdPkg(name[:slash])
	}
	dot := strings.IndexByte(name, '.')
	return dot > 0 && isStdPkg(name[:dot])
}

func isStdPkg(p string) bool {
	if p == "" {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// isGoWrapper reports whether a Go frame only starts or wraps a
// goroutine's real function: a closure, a go statement's wrapper, a method
// value, runtime.goexit, pprof.Do.
var goWrapperRE = lazyRE(`\.(?:func\d+|gowrap\d+)(?:\.\d+)*$|-fm$`)

func isGoWrapper(name string) bool {
	return match(goWrapperRE, name) || name == "runtime.goexit" || name == "runtime.goexit.abi0" ||
		name == "runtime/pprof.Do" || name == "runtime.main" || strings.HasPrefix(name, "created by ")
}

func isGoFrame(f Frame) bool {
	return f.Lang == LangGo
}

func idleGo(frames []Frame) string {
	// Scheduler threads and the runtime's background goroutines.
	for _, f := range frames {
		if goSched[f.Name] || goSched[strings.TrimSuffix(f.Name, ".abi0")] {
			return IdleGoSched
		}
	}
	// Skip kernel and libc frames at the leaf (off-CPU stacks of Go
	// threads) and the runtime's futex plumbing under a note sleep (the
	// signal goroutine's thread blocks in notetsleepg → futexsleep →
	// futex), then find where the goroutine parks.
	i := 0
	for i < len(frames) && (!isGoFrame(frames[i]) && frames[i].Lang != LangOther || goFutex[strings.TrimSuffix(frames[i].Name, ".abi0")]) {
		i++
	}
	if i == len(frames) || !goPark[frames[i].Name] {
		return "" // running, or not a Go stack
	}
	recv := false
	for i < len(frames) && goPark[frames[i].Name] {
		recv = recv || goRecvPark[frames[i].Name]
		i++
	}
	// Everything between the park and the first frame of code that is not
	// the standard library's is infrastructure; a known idle loop there
	// makes the stack idle whatever called it.
	j := i
	for j < len(frames) && isGoInfra(frames[j].Name) {
		if match(goNetLoop, frames[j].Name) {
			return IdleGoNet
		}
		j++
	}
	// net/http's connection loop reading the next request is idle; one
	// serving a handler is not.
	for _, f := range frames[i:j] {
		if f.Name == "net/http.(*conn).serve" {
			serving := false
			for _, g := range frames[i:j] {
				if strings.HasPrefix(g.Name, "net/http.serverHandler.ServeHTTP") || strings.HasPrefix(g.Name, "net/http.HandlerFunc.ServeHTTP") {
					serving = true
				}
			}
			if !serving {
				return IdleGoNet
			}
		}
	}
	if j == len(frames) {
		// Only the standard library and the runtime: a background
		// goroutine of a library (signal handling, idle connections).
		return IdleGoLoop
	}
	if !recv {
		return "" // blocked on a lock or a send: that is contention, not idleness
	}
	// The main goroutine waiting (for a signal, for the server to stop).
	for _, f := range frames[j:] {
		if f.Name == "runtime.main" {
			return IdleGoLoop
		}
	}
	// A goroutine whose own function waits for work at its top, e.g.
	// go func() { for { select { case <-tick.C: ... } } }(): the waiting
	// function is the goroutine's entry (only wrappers outside it).
	for _, f := range frames[j+1:] {
		if !isGoWrapper(f.Name) && !isGoInfra(f.Name) {
			return ""
		}
		if isGoInfra(f.Name) && f.Name != "runtime.goexit" && f.Name != "runtime.goexit.abi0" && f.Name != "runtime/pprof.Do" && f.Name != "runtime.main" {
			return "" // called by a library: a handler waiting, not a loop
		}
	}
	return IdleGoLoop
}

func idleNative(frames []Frame) string {
	// Tokio: workers parked, the I/O and time drivers, the blocking pool
	// waiting for work.
	for i, f := range frames {
		if match(tokioIdle, f.Name) {
			return IdleTokio
		}
		if strings.HasPrefix(f.Name, tokioBlocking) {
			// Idle only if nothing but waiting is leafward of it.
			busy := false
			for _, g := range frames[:i] {
				if g.Lang == LangKernel || isWaitPrimitive(g.Name) {
					continue
				}
				busy = true
				break
			}
			if !busy {
				return IdleTokio
			}
		}
		if match(libuvIdle, f.Name) {
			return IdleLibuv
		}
	}
	// Interpreters: the leafmost Python or Ruby frame.
	for _, f := range frames {
		if f.Lang == LangPython || strings.Contains(f.Name, ".py:") || strings.Contains(f.Name, ".py)") {
			if match(pySelector, f.Name) {
				return IdlePython
			}
			break
		}
	}
	for k, f := range frames {
		if f.Lang == LangRuby || strings.Contains(f.Name, ".rb") || strings.Contains(f.Name, "[c function]") {
			if match(rbSelector, f.Name) {
				for _, g := range frames[k:] {
					if match(rbLoop, g.Name) {
						return IdleRuby
					}
				}
			}
			break
		}
	}
	// A libc poll call under an event loop.
	i := 0
	for i < len(frames) && frames[i].Lang == LangKernel {
		i++
	}
	if i < len(frames) && match(pollCall, frames[i].Name) {
		for _, f := range frames[i+1 : min(len(frames), i+6)] {
			if match(loopName, f.Name) {
				return IdleEventLoop
			}
		}
	}
	return ""
}

var waitPrimRE = lazyRE(`(?i)futex|condvar|park|wait|sleep|epoll|syscall|pthread_cond|__lll_lock|sem_|parking_lot`)

func isWaitPrimitive(name string) bool {
	return match(waitPrimRE, name) || strings.HasPrefix(name, "std::sys") || strings.HasPrefix(name, "std::thread")
}

var (
	// Functions of libc, the dynamic loader and the system call layer
	// that user code calls to wait or to do I/O.
	libcRE = lazyRE(`^(?:_+\w*|\w+@plt|epoll_\w+|e?poll|ppoll|p?select|futex\w*|syscall|nanosleep|clock_nanosleep|usleep|sleep|read|write|readv|writev|pread\w*|pwrite\w*|recv\w*|send\w*|accept4?|connect|sem_\w+|pthread_\w+|sigtimedwait|sigwait\w*|wait4?|waitpid|kevent|io_uring_\w+|start_thread|thread_start|clone3?|mmap|munmap|madvise|memcpy\w*|memmove\w*|memset\w*|malloc|free|calloc|realloc|\[unknown\]|\[vdso\]|libc\.so[^+]*\+0x[0-9a-f]+|ld-linux[^+]*\+0x[0-9a-f]+|libpthread[^+]*\+0x[0-9a-f]+)$`)
	// Rust's standard library, Tokio and the crates every async service
	// runs on.
	rustSysRE = lazyRE(`^<?(?:std|core|alloc|tokio|tokio_util|futures\w*|mio|parking_lot\w*|crossbeam\w*|hyper|hyper_util|h2|tower\w*|tonic|want|pin_project\w*|tracing\w*|console_subscriber|__rust\w*)(?:::|\b)`)
	pySysRE   = lazyRE(`\((?:.*/)?(?:python3\.\d+/|lib/python)|\((?:asyncio|concurrent|multiprocessing|selectors|socket|ssl|threading|queue|socketserver|http|urllib|json|logging)[/.]`)
)

// SystemFrame reports whether a frame belongs to the operating system, a
// language's runtime or standard library, or the infrastructure libraries
// services run on (gRPC, HTTP/2, Tokio, Hyper): what waits and allocates on
// behalf of user code. Reports attribute time to the first frame that is
// not one: "the first frame of user code".
func SystemFrame(f Frame) bool {
	switch {
	case f.Lang == LangKernel || f.Lang == LangGroup:
		return true
	case f.Lang == LangGo:
		return isGoInfra(f.Name)
	case strings.HasPrefix(f.Name, "[") && f.Name != "[unknown]":
		return false // a state or group frame ([preempted: ...]) is a reason of its own
	case match(libcRE, f.Name):
		return true
	case match(rustSysRE, f.Name):
		return true
	case f.Lang == LangPython || strings.Contains(f.Name, ".py"):
		return match(pySysRE, f.Name)
	case f.Lang == LangRuby || strings.Contains(f.Name, ".rb"):
		return strings.Contains(f.Name, "[c function]") || strings.Contains(f.Name, "<internal:")
	}
	return false
}

// Waiting reports whether a stack of a kind that mixes running and waiting
// (wall clock) is waiting: a Go goroutine parked, or a thread in the
// kernel or a blocking call. Stacks of the other waiting kinds always are.
func Waiting(kind string, frames []Frame) bool {
	if kind != "wall" {
		return true
	}
	i := 0
	for i < len(frames) && frames[i].Lang == LangKernel {
		i++
	}
	if i > 0 {
		return true
	}
	if len(frames) == 0 {
		return false
	}
	leaf := frames[0].Name
	return goPark[leaf] || match(pollCall, leaf) || match(libcRE, leaf) && (strings.Contains(leaf, "wait") || strings.Contains(leaf, "sleep") || strings.Contains(leaf, "futex") || strings.Contains(leaf, "poll") || strings.Contains(leaf, "recv") || strings.Contains(leaf, "read")) ||
		match(pySelector, leaf) || match(rbSelector, leaf)
}

// match is re.MatchString(s), remembered: a profile names a few thousand
// functions in hundreds of thousands of stacks, and the idle and
// attribution rules ask the same questions of every stack.
func match(re *lazyRegexp, s string) bool {
	k := matchKey{re, s}
	matchMu.Lock()
	v, ok := matchCache[k]
	matchMu.Unlock()
	if ok {
		return v
	}
	v = re.MatchString(s)
	matchMu.Lock()
	if len(matchCache) > 1<<20 {
		clear(matchCache) // bound the memory of a long-running caller
	}
	matchCache[k] = v
	matchMu.Unlock()
	return v
}

type matchKey struct {
	re *lazyRegexp
	s  string
}

var (
	matchMu    sync.Mutex
	matchCache = map[matchKey]bool{}
)
