package consoleapi

import (
	"net"
	"net/http"
	"os"
)

// DefaultAddr is console-subscriber's default address. Every instance on a
// host needs its own: see BindAddr.
const DefaultAddr = "127.0.0.1:6669"

// BindAddr returns TOKIO_CONSOLE_BIND if set, else DefaultAddr, so that a Go
// service is configured like a Rust one.
func BindAddr() string {
	if a := os.Getenv("TOKIO_CONSOLE_BIND"); a != "" {
		return a
	}
	return DefaultAddr
}

// ListenAndServe listens on addr (h2c) and serves until Stop.
func (s *Server) ListenAndServe(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// Go runs fn on a new goroutine as a task spawned at the caller's location
// and completes the task when fn returns. fn records its polls (t.Poll) and
// wakes itself; time outside polls counts as idle or scheduled.
func (s *Server) Go(name string, kind Kind, fn func(t *Task), fields ...Field) *Task {
	t := s.Spawn(name, Caller(0), kind, fields...)
	go func() {
		defer t.Done()
		fn(t)
	}()
	return t
}

// Handler wraps h so that every request is one task named name, spawned at
// the caller's location and busy for as long as h.ServeHTTP runs: the
// simplest way to show a service's request steps in an async profile.
func (s *Server) Handler(name string, h http.Handler) http.Handler {
	loc := Caller(0)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := s.Spawn(name, loc, KindTask, Field{Name: "http.method", Value: r.Method})
		defer t.Done()
		t.Poll(func() { h.ServeHTTP(w, r) })
	})
}
