package targets

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A target from .pids/ names only a process. Discovery finds the rest from
// the process itself: the TCP sockets it listens on (/proc/PID/net/tcp and
// tcp6, matched to the socket inodes of /proc/PID/fd), each probed cheaply
// — an HTTP/1.1 port that answers /debug/pprof/ or /health is the pprof
// base; a port that does not speak HTTP/1.1 but answers an HTTP/2
// connection preface with a SETTINGS frame is the tokio-console gRPC
// server (no stream is opened: each WatchUpdates stream costs the service,
// see docs/tokio-console.md). Where the sockets cannot be read (a process
// of another user), the reference cluster's port convention is the
// fallback. See docs/cluster.md.

// DiscoverTimeout bounds each probe of a port (a connection and one
// request or one frame).
const DiscoverTimeout = 1500 * time.Millisecond

// Listener is a TCP socket a process listens on.
type Listener struct {
	Addr string // as bound, host:port
	PID  int    // the process that holds it
}

// dialAddr is where to connect to reach l: a wildcard bind is reached on
// loopback.
func (l Listener) dialAddr() string {
	host, port, err := net.SplitHostPort(l.Addr)
	if err != nil {
		return l.Addr
	}
	switch host {
	case "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// ListeningSockets returns the TCP sockets pid listens on, and those of
// its descendants (a launcher's child, up to three levels down) when pid
// itself listens on none. The error says why they could not be read
// (a process of another user: permission denied).
func ListeningSockets(pid int) ([]Listener, error) {
	ls, err := listeningOf(pid)
	if err != nil || len(ls) > 0 {
		return ls, err
	}
	kids := descendants(pid, 3)
	for _, k := range kids {
		kl, _ := listeningOf(k)
		ls = append(ls, kl...)
	}
	return ls, nil
}

// listeningOf reads one process's listening sockets.
func listeningOf(pid int) ([]Listener, error) {
	inodes, err := socketInodes(pid)
	if err != nil {
		return nil, err
	}
	if len(inodes) == 0 {
		return nil, nil
	}
	var out []Listener
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		for _, l := range parseProcNetTCP(b, f == "tcp6") {
			if inodes[l.inode] {
				out = append(out, Listener{Addr: l.addr, PID: pid})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return slices.CompactFunc(out, func(a, b Listener) bool { return a.Addr == b.Addr }), nil
}

// socketInodes returns the inodes of the sockets pid has open
// (/proc/PID/fd/N → "socket:[INODE]").
func socketInodes(pid int) (map[string]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if in, ok := strings.CutPrefix(link, "socket:["); ok {
			inodes[strings.TrimSuffix(in, "]")] = true
		}
	}
	return inodes, nil
}

type procListen struct{ addr, inode string }

// parseProcNetTCP returns the sockets in state LISTEN (0A) of a
// /proc/net/tcp or tcp6 table: "sl local_address rem_address st tx:rx
// tr:when retrnsmt uid timeout inode …", addresses in hex as the kernel
// stores them (each 32-bit word in host order, little-endian here), the
// port in big-endian hex.
func parseProcNetTCP(b []byte, v6 bool) []procListen {
	var out []procListen
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue // the header
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[3] != "0A" {
			continue
		}
		addr, ok := decodeProcAddr(f[1], v6)
		if !ok {
			continue
		}
		out = append(out, procListen{addr: addr, inode: f[9]})
	}
	return out
}

func decodeProcAddr(s string, v6 bool) (string, bool) {
	hexIP, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return "", false
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return "", false
	}
	raw, err := hex.DecodeString(hexIP)
	if err != nil || !v6 && len(raw) != 4 || v6 && len(raw) != 16 {
		return "", false
	}
	ip := make(net.IP, len(raw))
	for w := 0; w < len(raw); w += 4 { // each word little-endian
		ip[w], ip[w+1], ip[w+2], ip[w+3] = raw[w+3], raw[w+2], raw[w+1], raw[w]
	}
	return net.JoinHostPort(ip.String(), strconv.FormatUint(port, 10)), true
}

// descendants lists pid's children, grandchildren … up to depth levels.
func descendants(pid, depth int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int][]int{}
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[pp] = append(parent[pp], c)
	}
	var out []int
	level := []int{pid}
	for d := 0; d < depth && len(level) > 0; d++ {
		var next []int
		for _, p := range level {
			next = append(next, parent[p]...)
		}
		out = append(out, next...)
		level = next
	}
	return out
}

// PortKind is what a probe found on a port.
type PortKind int

const (
	PortUnknown     PortKind = iota // did not answer as any of these
	PortPprofIndex                  // HTTP/1.1, GET /debug/pprof/ answered 200
	PortHealth                      // HTTP/1.1, GET /health answered 200
	PortHTTP                        // HTTP/1.1, neither
	PortHTTP2                       // not HTTP/1.1; an HTTP/2 preface got SETTINGS back
	PortUnreachable                 // no connection
)

func (k PortKind) String() string {
	switch k {
	case PortPprofIndex:
		return "answers GET /debug/pprof/"
	case PortHealth:
		return "answers GET /health"
	case PortHTTP:
		return "speaks HTTP/1.1 but serves neither /debug/pprof/ nor /health"
	case PortHTTP2:
		return "speaks HTTP/2 without TLS (gRPC: the tokio-console server)"
	case PortUnreachable:
		return "accepts no connection from here"
	}
	return "answers neither HTTP/1.1 nor HTTP/2"
}

// ProbePort finds out what addr serves, in at most two connections and
// DiscoverTimeout each: an HTTP/1.1 GET of /debug/pprof/ (then /health),
// else an HTTP/2 connection preface and an empty SETTINGS frame, which an
// HTTP/2 server answers with its own SETTINGS (RFC 9113 §3.4) before any
// request; no stream is opened.
func ProbePort(ctx context.Context, addr string) PortKind {
	cl := &http.Client{
		Timeout: DiscoverTimeout,
		Transport: &http.Transport{
			Proxy:             nil, // loopback and pod addresses: never a proxy
			DisableKeepAlives: true,
			DialContext:       (&net.Dialer{Timeout: DiscoverTimeout}).DialContext,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	status := func(path string) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return 0, err
		}
		resp, err := cl.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	st, err := status("/debug/pprof/")
	switch {
	case err == nil && st == http.StatusOK:
		return PortPprofIndex
	case err == nil:
		if st, err := status("/health"); err == nil && st == http.StatusOK {
			return PortHealth
		}
		return PortHTTP
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return PortUnreachable
	}
	if speaksHTTP2(ctx, addr) {
		return PortHTTP2
	}
	return PortUnknown
}

// speaksHTTP2 sends the HTTP/2 client preface with an empty SETTINGS frame
// and reports whether the first frame back is a SETTINGS frame.
func speaksHTTP2(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: DiscoverTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(DiscoverTimeout))
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	settings := []byte{0, 0, 0, 0x4, 0, 0, 0, 0, 0} // length 0, type SETTINGS, no flags, stream 0
	if _, err := c.Write(append([]byte(preface), settings...)); err != nil {
		return false
	}
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return false
	}
	length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
	return hdr[3] == 0x4 && hdr[4]&0x1 == 0 && length%6 == 0 && hdr[5]&0x7f == 0 && hdr[6] == 0 && hdr[7] == 0 && hdr[8] == 0
}

// clusterBase is the reference cluster's port convention: instance i of a
// service listens for REST on base + i - 1; the tokio-console binds
// 127.0.0.1:6669 by default, one per host.
var clusterBase = map[string]int{
	"orchestration": 8080,
	"worker-rust":   8100,
	"worker-ruby":   8200,
	"worker-python": 8300,
	"worker-ts":     8400,
}

// DefaultConsolePort is console-subscriber's default port.
const DefaultConsolePort = 6669

var instanceRE = regexp.MustCompile(`^(.+)-([0-9]{1,2})$`)

// conventionPort is the REST port the reference cluster's convention gives
// a target's name, or 0.
func conventionPort(name string) int {
	m := instanceRE.FindStringSubmatch(name)
	if m == nil {
		return 0
	}
	base, ok := clusterBase[m[1]]
	i, _ := strconv.Atoi(m[2])
	if !ok || i < 1 {
		return 0
	}
	return base + i - 1
}

// Discover fills in the pprof base and the tokio-console address of
// targets that name only a process (a .pids/ target), from the process's
// listening sockets: see ListeningSockets and ProbePort. Found says how
// each was found; DiscoveryNote what was seen where nothing was. Without
// probe it only reads the sockets (nothing is contacted). Targets that
// already have an address keep it. An address found for two targets is
// kept for neither (its profiles would be counted twice).
func Discover(ctx context.Context, ts []Target, probe bool) {
	var wg sync.WaitGroup
	for i := range ts {
		t := &ts[i]
		if t.Pprof != "" && t.TokioConsole != "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			discoverOne(ctx, t, probe)
		}()
	}
	wg.Wait()
	dedupe(ts)
}

func discoverOne(ctx context.Context, t *Target, probe bool) {
	pid, err := t.ResolvePID()
	if err != nil || pid == 0 {
		return
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return // not running: nothing to ask (and a convention port would be someone else's)
	}
	ls, err := ListeningSockets(pid)
	if err != nil {
		if probe {
			conventional(ctx, t, fmt.Sprintf("cannot read pid %d's sockets: %v", pid, cause(err)), conventionPort(t.Name), DefaultConsolePort)
		} else {
			t.DiscoveryNote = fmt.Sprintf("cannot read pid %d's sockets (%v)", pid, cause(err))
		}
		return
	}
	if len(ls) == 0 {
		t.DiscoveryNote = fmt.Sprintf("pid %d listens on no TCP port", pid)
		return
	}
	var addrs []string
	for _, l := range ls {
		addrs = append(addrs, listenerName(l, pid))
	}
	if !probe {
		t.DiscoveryNote = fmt.Sprintf("listens on %s (not probed)", strings.Join(addrs, ", "))
		return
	}
	kinds := make([]PortKind, len(ls))
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kinds[i] = ProbePort(ctx, l.dialAddr())
		}()
	}
	wg.Wait()
	pick := func(want ...PortKind) (Listener, PortKind, bool) {
		for _, k := range want {
			for i, l := range ls {
				if kinds[i] == k {
					return l, k, true
				}
			}
		}
		return Listener{}, 0, false
	}
	if t.Pprof == "" {
		if l, k, ok := pick(PortPprofIndex, PortHealth); ok {
			t.Pprof = "http://" + l.dialAddr() + "/debug/pprof"
			t.found("pprof", fmt.Sprintf("%s %s", listenerName(l, pid), k))
		}
	}
	if t.TokioConsole == "" {
		if l, k, ok := pick(PortHTTP2); ok {
			t.TokioConsole = l.dialAddr()
			t.found("tokio_console", fmt.Sprintf("%s %s", listenerName(l, pid), k))
		}
	}
	var rest []string
	for i, l := range ls {
		if kinds[i] != PortPprofIndex && kinds[i] != PortHealth && kinds[i] != PortHTTP2 {
			rest = append(rest, fmt.Sprintf("%s %s", listenerName(l, pid), kinds[i]))
		}
	}
	if len(rest) > 0 {
		t.DiscoveryNote = strings.Join(rest, "; ")
	}
}

// cause is the reason of a file error without its path.
func cause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func listenerName(l Listener, pid int) string {
	if l.PID != pid {
		return fmt.Sprintf("%s (pid %d, a child)", l.Addr, l.PID)
	}
	return l.Addr
}

// conventional applies the reference cluster's port convention where the
// process's own sockets cannot be read: the REST port of the target's name
// if it answers /debug/pprof/ or /health, and the default console port if
// it speaks HTTP/2. Neither can be checked to belong to the process.
func conventional(ctx context.Context, t *Target, why string, restPort, consolePort int) {
	t.DiscoveryNote = why
	if restPort == 0 {
		return // not a name of the convention
	}
	if t.Pprof == "" {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(restPort))
		if k := ProbePort(ctx, addr); k == PortPprofIndex || k == PortHealth {
			t.Pprof = "http://" + addr + "/debug/pprof"
			t.found("pprof", fmt.Sprintf("the reference cluster's port convention (%s: %s), %s; not checked to be this process's (%s)", t.Name, addr, k, why))
		}
	}
	if t.TokioConsole == "" {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(consolePort))
		if ProbePort(ctx, addr) == PortHTTP2 {
			t.TokioConsole = addr
			t.found("tokio_console", fmt.Sprintf("console-subscriber's default address %s, which speaks HTTP/2; not checked to be this process's (%s)", addr, why))
		}
	}
}

func (t *Target) found(field, how string) {
	if t.Found == nil {
		t.Found = map[string]string{}
	}
	t.Found[field] = how
}

// dedupe drops a discovered address that another target also has: one
// service's profiles taken as two targets' would count its CPU twice.
func dedupe(ts []Target) {
	owners := map[string][]int{}
	for i, t := range ts {
		if t.Pprof != "" {
			owners["pprof "+t.Pprof] = append(owners["pprof "+t.Pprof], i)
		}
		if t.TokioConsole != "" {
			owners["console "+t.TokioConsole] = append(owners["console "+t.TokioConsole], i)
		}
	}
	for key, idx := range owners {
		if len(idx) < 2 {
			continue
		}
		field, addr, _ := strings.Cut(key, " ")
		var names []string
		for _, i := range idx {
			names = append(names, ts[i].Name)
		}
		for _, i := range idx {
			t := &ts[i]
			f := map[string]string{"pprof": "pprof", "console": "tokio_console"}[field]
			if t.Found[f] == "" {
				continue // configured: kept as given
			}
			delete(t.Found, f)
			if f == "pprof" {
				t.Pprof = ""
			} else {
				t.TokioConsole = ""
			}
			note := fmt.Sprintf("%s was found for %s: left out, so that its profiles are not taken twice", addr, strings.Join(names, " and "))
			t.DiscoveryNote = strings.TrimPrefix(t.DiscoveryNote+"; "+note, "; ")
		}
	}
}
