// Package testsvc is a small Go service with net/http/pprof (and optionally
// fgprof) for tests: it burns CPU in a named function, allocates, contends
// on a mutex and blocks, so every pprof kind has data. Tests run it in
// another process (see Main) because a Go process serves one CPU profile at
// a time.
package testsvc

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/felixge/fgprof"
)

// Mode selects a misbehaviour for fault-injection tests.
type Mode string

const (
	Normal  Mode = "normal"
	Hang    Mode = "hang"    // accepts connections, never answers
	Garbage Mode = "garbage" // answers 200 with bytes that are not a profile
	Huge    Mode = "huge"    // answers with an endless body
	Drip    Mode = "drip"    // pprof endpoints, but heap answers one byte a second
	Idle    Mode = "idle"    // pprof endpoints and no workload (for scale tests)
)

// Handler returns the service's mux.
func Handler(mode Mode, withFgprof bool) http.Handler {
	mux := http.NewServeMux()
	switch mode {
	case Hang:
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		return mux
	case Garbage:
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "<html>this is not a profile</html>")
		})
		return mux
	case Huge:
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/heap", func(w http.ResponseWriter, r *http.Request) {
			buf := make([]byte, 64<<10)
			for r.Context().Err() == nil {
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
		})
		return mux
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	if mode == Drip {
		mux.HandleFunc("/debug/pprof/heap", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			for r.Context().Err() == nil {
				if _, err := w.Write([]byte{0x1f}); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				time.Sleep(time.Second)
			}
		})
	}
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	if withFgprof {
		mux.Handle("/debug/fgprof", fgprof.Handler())
	}
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}

// Work runs the service's workload until ctx is done.
func Work(ctx context.Context) {
	runtime.SetMutexProfileFraction(5)
	runtime.SetBlockProfileRate(int(time.Millisecond))
	go hotLoopForProfcapTests(ctx)
	var mu sync.Mutex
	for i := 0; i < 2; i++ {
		go func() {
			for ctx.Err() == nil {
				mu.Lock()
				time.Sleep(200 * time.Microsecond)
				mu.Unlock()
			}
		}()
	}
	go func() {
		var keep [][]byte
		for ctx.Err() == nil {
			keep = append(keep, allocateForProfcapTests())
			if len(keep) > 64 {
				keep = keep[1:]
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
}

// hotLoopForProfcapTests is the function tests expect at the top of the cpu
// profile. It burns about half a core.
func hotLoopForProfcapTests(ctx context.Context) {
	x := uint64(88172645463325252)
	for ctx.Err() == nil {
		deadline := time.Now().Add(10 * time.Millisecond)
		for time.Now().Before(deadline) {
			for i := 0; i < 1<<16; i++ { // xorshift: all time in this function
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	sink = x
}

var sink uint64

//go:noinline
func allocateForProfcapTests() []byte {
	return []byte(strings.Repeat("x", 16<<10))
}

// Main runs the service if the environment asks for it (PROFCAP_TESTSVC set
// to a Mode) and exits; otherwise it returns. Call it first in TestMain so
// a test binary can run copies of itself as services. The service prints
// "listening HOST:PORT" on stdout once it accepts connections.
func Main() {
	mode := os.Getenv("PROFCAP_TESTSVC")
	if mode == "" {
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if Mode(mode) == Normal {
		Work(ctx)
	}
	srv := &http.Server{Handler: Handler(Mode(mode), os.Getenv("PROFCAP_TESTSVC_FGPROF") != "")}
	go func() { <-ctx.Done(); srv.Close() }()
	fmt.Printf("listening %s\n", ln.Addr())
	_ = srv.Serve(ln)
	os.Exit(0)
}
