// Package pyroscopetest runs a Pyroscope push endpoint on loopback for
// tests: the public API module's PusherServiceHandler served over real HTTP,
// recording every profile it accepts (decoded with google/pprof) and
// failing on demand.
package pyroscopetest

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"
)

// Received is one profile the server accepted.
type Received struct {
	Labels  map[string]string
	ID      string
	Raw     []byte
	Profile *profile.Profile // parsed and checked with CheckValid
	Tenant  string           // X-Scope-OrgID
	Auth    string           // Authorization header
}

// Server is a push endpoint on loopback.
type Server struct {
	URL string
	srv *httptest.Server

	mu       sync.Mutex
	received []Received
	requests int
	fail     []int                                      // statuses to answer the next requests with
	reject   func(r *pushv1.PushRequest) *connect.Error // a permanent, per-request refusal
	auth     func(h http.Header) bool
	block    chan struct{}
}

var _ pushv1connect.PusherServiceHandler = (*Server)(nil)

// NewServer starts a server; it is closed when the test ends.
func NewServer(t testing.TB) *Server {
	return newServer(t, false)
}

// NewTLSServer starts a server on HTTPS with a self-signed certificate;
// CAFile names a PEM file holding it.
func NewTLSServer(t testing.TB) (s *Server, caFile string) {
	s = newServer(t, true)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	return s, caFile
}

func newServer(t testing.TB, tls bool) *Server {
	s := &Server{}
	path, h := pushv1connect.NewPusherServiceHandler(s)
	mux := http.NewServeMux()
	mux.Handle(path, s.middleware(h))
	s.srv = httptest.NewUnstartedServer(mux)
	// Refused handshakes are what some tests are about; not log noise.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tls {
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	s.URL = s.srv.URL
	t.Cleanup(s.Close)
	return s
}

// Close stops the server.
func (s *Server) Close() {
	s.mu.Lock()
	if s.block != nil {
		close(s.block)
		s.block = nil
	}
	s.mu.Unlock()
	s.srv.Close()
}

// FailNext makes the next len(statuses) requests fail with those HTTP
// statuses (a plain-text body, as a proxy in front of Pyroscope sends).
func (s *Server) FailNext(statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = append(s.fail, statuses...)
}

// Reject makes the handler refuse requests for which fn returns an error.
func (s *Server) Reject(fn func(r *pushv1.PushRequest) *connect.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reject = fn
}

// RequireAuth makes the server answer 401 to requests fn refuses.
func (s *Server) RequireAuth(fn func(h http.Header) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.auth = fn
}

// Block makes every request wait until the server is closed or the client
// gives up.
func (s *Server) Block() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.block = make(chan struct{})
}

// Received returns the profiles accepted so far.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

// Requests returns how many requests reached the server.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests++
		block := s.block
		var status int
		if len(s.fail) > 0 {
			status, s.fail = s.fail[0], s.fail[1:]
		}
		auth := s.auth
		s.mu.Unlock()
		if block != nil {
			select {
			case <-block:
			case <-r.Context().Done():
			}
			http.Error(w, "server shutting down", http.StatusServiceUnavailable)
			return
		}
		if status != 0 {
			http.Error(w, fmt.Sprintf("injected failure %d", status), status)
			return
		}
		if auth != nil && !auth(r.Header) {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Push implements pushv1connect.PusherServiceHandler.
func (s *Server) Push(_ context.Context, req *connect.Request[pushv1.PushRequest]) (*connect.Response[pushv1.PushResponse], error) {
	s.mu.Lock()
	reject := s.reject
	s.mu.Unlock()
	if reject != nil {
		if err := reject(req.Msg); err != nil {
			return nil, err
		}
	}
	var got []Received
	for _, series := range req.Msg.Series {
		labels := map[string]string{}
		for _, l := range series.Labels {
			if _, dup := labels[l.Name]; dup {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("duplicate label %s", l.Name))
			}
			labels[l.Name] = l.Value
		}
		if labels["__name__"] == "" {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("series without __name__"))
		}
		for _, smp := range series.Samples {
			p, err := profile.ParseData(smp.RawProfile)
			if err == nil {
				err = p.CheckValid()
			}
			if err != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid pprof: %v", err))
			}
			got = append(got, Received{
				Labels: labels, ID: smp.ID, Raw: smp.RawProfile, Profile: p,
				Tenant: req.Header().Get("X-Scope-OrgID"), Auth: req.Header().Get("Authorization"),
			})
		}
	}
	s.mu.Lock()
	s.received = append(s.received, got...)
	s.mu.Unlock()
	return connect.NewResponse(&pushv1.PushResponse{}), nil
}
