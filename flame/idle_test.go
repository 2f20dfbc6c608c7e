package flame

import (
	"strings"
	"testing"
)

// stack builds leaf-first frames from "caller;callee" order (root first,
// as folded stacks are written). Names prefixed "k:" are kernel frames.
func stack(folded string) []Frame {
	parts := strings.Split(folded, ";")
	out := make([]Frame, 0, len(parts))
	for i := len(parts) - 1; i >= 0; i-- {
		n, m := parts[i], ""
		if rest, ok := strings.CutPrefix(n, "k:"); ok {
			n, m = rest, "[kernel.kallsyms]"
		}
		out = append(out, Frame{Name: n, Lang: classify(n, "", m)})
	}
	return out
}

const demoPkg = "github.com/profcap/profcap/internal/demo."

func TestIdleReason(t *testing.T) {
	for _, tc := range []struct {
		name, kind, stack, want string
	}{
		// Stacks seen in the demo cluster's profiles.
		{"http keep-alive", "wall", "runtime.goexit;net/http.(*Server).Serve.gowrap3;net/http.(*conn).serve;bufio.(*Reader).Peek;bufio.(*Reader).fill;net/http.(*connReader).Read;net.(*conn).Read;net.(*netFD).Read;internal/poll.(*FD).Read;internal/poll.(*pollDesc).waitRead;internal/poll.(*pollDesc).wait;internal/poll.runtime_pollWait;runtime.netpollblock;runtime.gopark", IdleGoNet},
		{"client conn readLoop", "wall", "runtime.goexit;net/http.(*persistConn).readLoop;bufio.(*Reader).Peek;bufio.(*Reader).fill;net/http.(*persistConn).Read;net.(*conn).Read;net.(*netFD).Read;internal/poll.(*FD).Read;internal/poll.(*pollDesc).waitRead;internal/poll.(*pollDesc).wait;internal/poll.runtime_pollWait;runtime.netpollblock;runtime.gopark", IdleGoNet},
		{"client conn writeLoop", "wall", "runtime.goexit;net/http.(*persistConn).writeLoop;runtime.selectgo;runtime.gopark", IdleGoNet},
		{"accept under user code", "wall", "runtime.goexit;" + demoPkg + "RunService.func10;net/http.(*Server).Serve;net.(*TCPListener).Accept;net.(*TCPListener).accept;net.(*netFD).accept;internal/poll.(*FD).Accept;internal/poll.(*pollDesc).waitRead;internal/poll.(*pollDesc).wait;internal/poll.runtime_pollWait;runtime.netpollblock;runtime.gopark", IdleGoNet},
		{"grpc keepalive", "block", "google.golang.org/grpc/internal/transport.(*http2Server).keepalive;runtime.selectgo", IdleGoNet},
		{"grpc loopy", "wall", "runtime.goexit;google.golang.org/grpc/internal/transport.NewServerTransport.func3;google.golang.org/grpc/internal/transport.(*loopyWriter).run;google.golang.org/grpc/internal/transport.(*controlBuffer).get;runtime.selectgo;runtime.gopark", IdleGoNet},
		{"signal loop", "wall", "runtime.goexit;os/signal.loop;os/signal.signal_recv;runtime.notetsleepg", IdleGoNet},
		{"signal loop off-CPU", "offcpu", "runtime.goexit.abi0;os/signal.loop;os/signal.signal_recv;runtime.notetsleepg;runtime.notetsleep_internal;runtime.futexsleep;k:entry_SYSCALL_64_after_hwframe;k:do_syscall_64;k:__x64_sys_futex;k:do_futex;k:futex_wait;k:__schedule", IdleGoNet},
		{"NotifyContext", "wall", "runtime.goexit;os/signal.NotifyContext.func1;runtime.selectgo;runtime.gopark", IdleGoLoop},
		{"janitor loop", "wall", "runtime.goexit;" + demoPkg + "RunService.func15;" + demoPkg + "RunService.func14;" + demoPkg + "janitor;runtime.selectgo;runtime.gopark", IdleGoLoop},
		{"janitor in block", "block", demoPkg + "RunService.func15;" + demoPkg + "RunService.func14;" + demoPkg + "janitor;runtime.selectgo", IdleGoLoop},
		{"publish loop", "block", "github.com/profcap/profcap/internal/consoleapi.(*Server).Serve.gowrap1;github.com/profcap/profcap/internal/consoleapi.(*Server).publishLoop;runtime.selectgo", IdleGoLoop},
		{"main waits", "wall", "runtime.goexit;runtime.main;main.main;main.realMain;main.run;main.runDemoService;" + demoPkg + "RunService;runtime.chanrecv1;runtime.chanrecv;runtime.gopark", IdleGoLoop},
		{"fgprof handler", "block", "net/http.(*Server).Serve.gowrap3;net/http.(*conn).serve;net/http.serverHandler.ServeHTTP;net/http.(*ServeMux).ServeHTTP;net/http.HandlerFunc.ServeHTTP;" + demoPkg + "fgprofHandler;runtime.selectgo", IdleProfiler},
		{"console watch", "wall", "runtime.goexit;google.golang.org/grpc.(*Server).serveStreams.func2.1;google.golang.org/grpc.(*Server).handleStream;google.golang.org/grpc.(*Server).processRPC;github.com/profcap/profcap/internal/consolepb._Instrument_WatchUpdates_Handler;github.com/profcap/profcap/internal/consoleapi.(*service).WatchUpdates;runtime.selectgo;runtime.gopark", IdleProfiler},
		{"console state stream", "block", "google.golang.org/grpc.(*Server).processRPC;github.com/profcap/profcap/internal/consolepb._Instrument_WatchState_Handler;github.com/profcap/profcap/internal/consoleapi.(*service).WatchState;runtime.selectgo", IdleProfiler},
		{"scheduler thread", "offcpu", "runtime.mcall;runtime.exitsyscallNoP;runtime.stopm;runtime.notesleep;runtime.futex.abi0;k:entry_SYSCALL_64_after_hwframe;k:do_syscall_64;k:__x64_sys_futex;k:do_futex;k:futex_wait;k:__schedule", IdleGoSched},
		{"netpoll thread", "offcpu", "runtime.mstart;runtime.schedule;runtime.findRunnable;runtime.netpoll;internal/runtime/syscall/linux.Syscall6;k:do_epoll_wait;k:__schedule", IdleGoSched},
		{"sysmon", "offcpu", "runtime.mstart;runtime.sysmon;runtime.usleep.abi0;k:__schedule", IdleGoSched},
		// Real waits: not idle.
		{"db reply", "block", "net/http.(*Server).Serve.gowrap3;net/http.(*conn).serve;net/http.serverHandler.ServeHTTP;net/http.HandlerFunc.ServeHTTP;" + demoPkg + "(*worker).handleStep;runtime/pprof.Do;" + demoPkg + "(*worker).runStep;" + demoPkg + "(*fakeDB).query;" + demoPkg + "(*dbConn).waitForReply;runtime.selectgo", ""},
		{"db pool", "wall", "runtime.goexit;" + demoPkg + "(*orchestrator).run.func1;runtime/pprof.Do;" + demoPkg + "(*orchestrator).run.func1.2;" + demoPkg + "(*orchestrator).runWorkflow;" + demoPkg + "(*orchestrator).persistWorkflow;" + demoPkg + "(*fakeDB).query;" + demoPkg + "(*fakeDB).acquireConn;runtime.selectgo;runtime.gopark", ""},
		{"http client call", "wall", "runtime.goexit;" + demoPkg + "(*orchestrator).executeSteps.func1.1;" + demoPkg + "(*orchestrator).dispatchStep;" + demoPkg + "(*orchestrator).postStep;net/http.(*Client).Do;net/http.(*Client).do;net/http.send;net/http.(*Transport).RoundTrip;net/http.(*persistConn).roundTrip;runtime.selectgo;runtime.gopark", ""},
		{"waits for its steps", "wall", "runtime.goexit;" + demoPkg + "(*orchestrator).run.func1;runtime/pprof.Do;" + demoPkg + "(*orchestrator).run.func1.2;" + demoPkg + "(*orchestrator).runWorkflow;" + demoPkg + "(*orchestrator).executeSteps;runtime.chanrecv1;runtime.chanrecv;runtime.gopark", ""},
		{"mutex", "block", demoPkg + "(*worker).tallyRegions.func1;" + demoPkg + "(*sharedStats).addToRegion;sync.(*Mutex).Lock", ""},
		{"loop blocked on a lock", "block", "main.worker.func1;sync.(*Mutex).Lock", ""},
		{"running", "wall", "runtime.goexit;" + demoPkg + "(*worker).computeChecksum;crypto/internal/fips140/sha256.blockSHANI.abi0", ""},
		{"syscall write", "offcpu", "runtime.goexit.abi0;net/http.(*conn).serve;net/http.(*response).finishRequest;bufio.(*Writer).Flush;net.(*conn).Write;syscall.write;internal/runtime/syscall/linux.Syscall6;k:entry_SYSCALL_64_after_hwframe;k:__schedule", ""},
		{"cpu is never idle", "cpu", "runtime.mstart;runtime.schedule;runtime.findRunnable", ""},
		// Other runtimes.
		{"tokio worker park", "offcpu", "std::sys::pal::unix::thread::Thread::new::thread_start;tokio::runtime::scheduler::multi_thread::worker::run;tokio::runtime::scheduler::multi_thread::worker::Context::run;tokio::runtime::scheduler::multi_thread::worker::Context::park_timeout;tokio::runtime::scheduler::multi_thread::park::Parker::park;std::sync::condvar::Condvar::wait;syscall;k:__schedule", IdleTokio},
		{"tokio io driver", "offcpu", "tokio::runtime::scheduler::multi_thread::worker::Context::park_timeout;tokio::runtime::driver::Driver::park;tokio::runtime::io::driver::Driver::turn;mio::poll::Poll::poll;epoll_wait;k:__schedule", IdleTokio},
		{"tokio blocking pool idle", "offcpu", "tokio::runtime::blocking::pool::Inner::run;std::sync::condvar::Condvar::wait_timeout;std::sys::sync::condvar::futex::Condvar::wait_timeout;syscall;k:__schedule", IdleTokio},
		{"tokio blocking pool busy", "offcpu", "tokio::runtime::blocking::pool::Inner::run;tokio::runtime::task::harness::Harness::poll;std::fs::read;read;k:__schedule", ""},
		{"tokio task waiting on db", "offcpu", "tokio::runtime::scheduler::multi_thread::worker::Context::run_task;refsvc::db::query;std::thread::sleep;nanosleep;k:__schedule", ""},
		{"libuv", "offcpu", "main;node::Start;uv_run;uv__io_poll;epoll_pwait;k:__schedule", IdleLibuv},
		{"python selector", "wall", "<module> (/app/main.py:10);run (asyncio/runners.py:44);run_until_complete (asyncio/base_events.py:636);run_forever (asyncio/base_events.py:603);_run_once (asyncio/base_events.py:1871);select (/usr/lib/python3.12/selectors.py:468)", IdlePython},
		{"python busy", "wall", "<module> (/app/main.py:10);handle (/app/server.py:11)", ""},
		{"ruby puma reactor", "wall", "block in run - /gems/puma/lib/puma/reactor.rb:42;select [c function] - (unknown)", IdleRuby},
		{"glibc epoll under a loop", "offcpu", "main;event_base_loop;epoll_dispatch;epoll_wait;k:__schedule", IdleEventLoop},
		{"glibc epoll without a loop", "offcpu", "main;do_work;epoll_wait;k:__schedule", ""},
	} {
		if got := IdleReason(tc.kind, stack(tc.stack)); got != tc.want {
			t.Errorf("%s: IdleReason = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestTreeGroupsIdle(t *testing.T) {
	p := foldedProfile(t, "runtime.goexit;net/http.(*persistConn).writeLoop;runtime.selectgo;runtime.gopark 90\n"+
		"main.handle;main.query;runtime.selectgo;runtime.gopark 10\n")
	tr := mustTree(t, p, Options{Kind: "wall"})
	if n := find(tr.Root, IdleFrame, IdleGoNet, "runtime.goexit"); n == nil || n.Total[0] != 90 {
		t.Fatalf("idle not grouped: %q", render(t, tr, Options{}, WriteFolded))
	}
	if n := find(tr.Root, "main.handle"); n == nil || n.Total[0] != 10 {
		t.Fatalf("work moved: %q", render(t, tr, Options{}, WriteFolded))
	}
	if tr.Idle == nil || tr.Idle[0] != 90 {
		t.Errorf("Idle = %v, want [90]", tr.Idle)
	}
	// cpu profiles are never grouped.
	if n := find(mustTree(t, p, Options{Kind: "cpu"}).Root, IdleFrame); n != nil {
		t.Errorf("cpu tree has an idle frame")
	}
}
