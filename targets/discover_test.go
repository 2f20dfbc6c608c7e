package targets

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
)

func TestParseProcNetTCP(t *testing.T) {
	v4 := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4001 1 0000000000000000 100 0 0 10 0
   1: 00000000:1A0D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4003 1 0000000000000000 20 4 30 10 -1
`)
	got := parseProcNetTCP(v4, false)
	want := []procListen{{"127.0.0.1:8080", "4001"}, {"0.0.0.0:6669", "4002"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tcp: %v, want %v (the established socket left out)", got, want)
	}
	v6 := []byte(`  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:1A0E 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5002 1 0000000000000000 100 0 0 10 0
`)
	got = parseProcNetTCP(v6, true)
	want = []procListen{{"[::1]:8081", "5001"}, {"[::]:6670", "5002"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tcp6: %v, want %v", got, want)
	}
	if l := (Listener{Addr: "0.0.0.0:6669"}); l.dialAddr() != "127.0.0.1:6669" {
		t.Errorf("dial %s", l.dialAddr())
	}
	if l := (Listener{Addr: "[::]:6669"}); l.dialAddr() != "[::1]:6669" {
		t.Errorf("dial %s", l.dialAddr())
	}
}

func needProc(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("discovery reads /proc (Linux)")
	}
}

// TestListeningSocketsOfThisProcess: the sockets this process listens on
// are found through its own /proc entries; a connected socket is not.
func TestListeningSocketsOfThisProcess(t *testing.T) {
	needProc(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ls, err := ListeningSockets(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, x := range ls {
		found = found || x.Addr == l.Addr().String() && x.PID == os.Getpid()
		if x.Addr == c.LocalAddr().String() {
			t.Errorf("the connected socket %s listed as listening", x.Addr)
		}
	}
	if !found {
		t.Errorf("listening sockets %v lack %s", ls, l.Addr())
	}
}

// servers starts what a reference service listens on: an HTTP port with
// /health (and optionally /debug/pprof/) and a gRPC server (tokio-console
// speaks gRPC over HTTP/2 without TLS).
func httpServer(t *testing.T, paths ...string) string {
	t.Helper()
	mux := http.NewServeMux()
	for _, p := range paths {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	}
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func grpcServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

func TestProbePort(t *testing.T) {
	ctx := context.Background()
	garbage, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	go func() {
		for {
			c, err := garbage.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("220 smtp.example ESMTP\r\n"))
			c.Close()
		}
	}()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()
	for _, tc := range []struct {
		name, addr string
		want       PortKind
	}{
		{"pprof index", httpServer(t, "/debug/pprof/", "/health"), PortPprofIndex},
		{"health", httpServer(t, "/health"), PortHealth},
		{"other HTTP", httpServer(t, "/metrics"), PortHTTP},
		{"gRPC", grpcServer(t), PortHTTP2},
		{"not HTTP", garbage.Addr().String(), PortUnknown},
		{"closed", closedAddr, PortUnreachable},
	} {
		if got := ProbePort(ctx, tc.addr); got != tc.want {
			t.Errorf("%s (%s): %v, want %v", tc.name, tc.addr, got, tc.want)
		}
	}
}

// TestDiscoverPidsTarget: a .pids/ target naming this process gets the
// pprof base from the port answering /health and the tokio-console from
// the gRPC port, each saying how it was found; --no-probe only lists the
// ports; DiscoverOff leaves the PID alone.
func TestDiscoverPidsTarget(t *testing.T) {
	needProc(t)
	web := httpServer(t, "/health")
	console := grpcServer(t)
	dir := t.TempDir()
	pids := filepath.Join(dir, ".pids")
	os.Mkdir(pids, 0o755)
	os.WriteFile(filepath.Join(pids, "orchestration-1.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	sel := Selection{Config: filepath.Join(dir, "none.yaml"), PidsDir: pids, Names: []string{"orchestration-1"}, Require: true}
	ts, _, err := Resolve(sel)
	if err != nil {
		t.Fatal(err)
	}
	tg := ts[0]
	if tg.Pprof != "http://"+web+"/debug/pprof" || !strings.Contains(tg.Found["pprof"], web+" answers GET /health") {
		t.Errorf("pprof %q found %q, want %s", tg.Pprof, tg.Found["pprof"], web)
	}
	if tg.TokioConsole != console || !strings.Contains(tg.Found["tokio_console"], "speaks HTTP/2") {
		t.Errorf("console %q found %q, want %s", tg.TokioConsole, tg.Found["tokio_console"], console)
	}
	sel.Discover = DiscoverSockets
	ts, _, _ = Resolve(sel)
	if ts[0].Pprof != "" || !strings.Contains(ts[0].DiscoveryNote, web) || !strings.Contains(ts[0].DiscoveryNote, "not probed") {
		t.Errorf("sockets only: pprof %q note %q", ts[0].Pprof, ts[0].DiscoveryNote)
	}
	sel.Discover = DiscoverOff
	ts, _, _ = Resolve(sel)
	if ts[0].Pprof != "" || ts[0].TokioConsole != "" || ts[0].DiscoveryNote != "" {
		t.Errorf("off: %+v", ts[0])
	}
}

// TestDiscoverConvention: where a process's sockets cannot be read, the
// reference cluster's port convention gives the addresses, said to be
// unchecked; a name outside the convention gets nothing.
func TestDiscoverConvention(t *testing.T) {
	for name, want := range map[string]int{
		"orchestration-1": 8080, "orchestration-2": 8081, "worker-rust-3": 8102,
		"worker-ruby-1": 8200, "worker-python-2": 8301, "worker-ts-10": 8409,
		"api-gateway-1": 0, "orchestration": 0, "worker-rust-0": 0,
	} {
		if got := conventionPort(name); got != want {
			t.Errorf("conventionPort(%s) = %d, want %d", name, got, want)
		}
	}
	web := httpServer(t, "/health")
	console := grpcServer(t)
	port := func(addr string) int {
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		return n
	}
	tg := Target{Name: "orchestration-1"}
	conventional(context.Background(), &tg, "cannot read pid 1's sockets: permission denied", port(web), port(console))
	if tg.Pprof != "http://"+web+"/debug/pprof" || !strings.Contains(tg.Found["pprof"], "port convention") || !strings.Contains(tg.Found["pprof"], "not checked") {
		t.Errorf("pprof %q found %q", tg.Pprof, tg.Found["pprof"])
	}
	if tg.TokioConsole != console || !strings.Contains(tg.Found["tokio_console"], "not checked") {
		t.Errorf("console %q found %q", tg.TokioConsole, tg.Found["tokio_console"])
	}
}

// TestDiscoverDedupe: an address discovered for two targets is dropped from
// both (configured addresses stay): one service taken as two targets would
// count its profiles twice.
func TestDiscoverDedupe(t *testing.T) {
	ts := []Target{
		{Name: "a", Pprof: "http://127.0.0.1:8080/debug/pprof", Found: map[string]string{"pprof": "x"}},
		{Name: "b", Pprof: "http://127.0.0.1:8080/debug/pprof"},
		{Name: "c", TokioConsole: "127.0.0.1:6669", Found: map[string]string{"tokio_console": "y"}},
		{Name: "d", TokioConsole: "127.0.0.1:6669", Found: map[string]string{"tokio_console": "y"}},
	}
	dedupe(ts)
	if ts[0].Pprof != "" || !strings.Contains(ts[0].DiscoveryNote, "not taken twice") || ts[1].Pprof == "" {
		t.Errorf("pprof: %+v / %+v", ts[0], ts[1])
	}
	if ts[2].TokioConsole != "" || ts[3].TokioConsole != "" {
		t.Errorf("console: %+v / %+v", ts[2], ts[3])
	}
}
