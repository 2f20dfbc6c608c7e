package pyroscope

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"
)

// conn is what every request to one server needs: its base URL, the
// credentials, an HTTP client that adds them (to the server's own host
// only) and the retry schedule.
type conn struct {
	server     string // base URL without credentials
	host       string
	creds      Credentials
	hc         *http.Client
	tries      int
	minBackoff time.Duration
	maxBackoff time.Duration
	timeout    time.Duration
}

// connOptions are the parts of Options a conn takes.
type connOptions struct {
	Server      string
	Credentials Credentials
	HTTPClient  *http.Client
	UserAgent   string
	Tries       int
	MinBackoff  time.Duration
	MaxBackoff  time.Duration
	Timeout     time.Duration
}

func newConn(o connOptions) (*conn, error) {
	c := &conn{
		creds:      o.Credentials,
		tries:      orDefault(o.Tries, DefaultTries),
		minBackoff: orDefault(o.MinBackoff, DefaultMinBackoff),
		maxBackoff: orDefault(o.MaxBackoff, DefaultMaxBackoff),
		timeout:    orDefault(o.Timeout, DefaultTimeout),
	}
	if c.maxBackoff < c.minBackoff {
		c.maxBackoff = c.minBackoff
	}
	base, user, err := parseServer(o.Server)
	if err != nil {
		return nil, err
	}
	if user != nil {
		if c.creds.Token != "" || c.creds.Username != "" {
			return nil, fmt.Errorf("server URL %s carries credentials and others were given too; give one", RedactURL(o.Server))
		}
		c.creds.Username = user.Username()
		c.creds.Password, _ = user.Password()
	}
	if err := c.creds.validate(); err != nil {
		return nil, err
	}
	c.server = base
	u, _ := url.Parse(base)
	c.host = u.Host
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	cl := *hc
	cl.Transport = &transport{next: next, host: c.host, creds: c.creds, userAgent: o.UserAgent}
	c.hc = &cl
	return c, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// retry runs one request (call) with the attempt timeout, retrying 5xx
// responses, 429 and connection errors with exponential backoff and up to
// 25% jitter, so that parallel workers do not retry in lockstep. It
// returns the attempts made and the classified error of the last one.
func (c *conn) retry(ctx context.Context, what string, call func(ctx context.Context) error) (int, error) {
	backoff := c.minBackoff
	for try := 1; ; try++ {
		rec := &response{}
		actx, cancel := context.WithTimeout(context.WithValue(ctx, responseKey{}, rec), c.timeout)
		err := call(actx)
		cancel()
		if err == nil {
			return try, nil
		}
		if ctx.Err() != nil {
			return try, context.Cause(ctx)
		}
		err, again := c.classify(err, rec, what)
		if !again || try >= c.tries {
			if again {
				err = fmt.Errorf("%w (gave up after %d tries)", err, try)
			}
			return try, err
		}
		wait := backoff + time.Duration(rand.Int64N(int64(backoff)/4+1))
		if rec.retryAfter > wait {
			wait = min(rec.retryAfter, c.maxBackoff)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return try, context.Cause(ctx)
		case <-t.C:
		}
		backoff = min(backoff*2, c.maxBackoff)
	}
}

// classify turns a failed attempt into the error reported and whether to
// try again: 5xx, 429 and connection errors are retried; other 4xx are the
// request's fault and are not. what names the API for a 404
// (push.v1.PusherService/Push).
func (c *conn) classify(err error, rec *response, what string) (error, bool) {
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	if rec.status != 0 {
		// For a body that is not a connect error (a proxy's or a plain
		// server's text) connect gives only the status: use the body.
		generic := fmt.Sprintf("%d %s", rec.status, http.StatusText(rec.status))
		if msg == "" || strings.HasPrefix(msg, "HTTP status ") || msg == generic || msg == http.StatusText(rec.status) {
			msg = rec.body
		}
		he := HTTPError{Server: c.server, Status: rec.status, Message: msg}
		switch {
		case rec.status == http.StatusUnauthorized || rec.status == http.StatusForbidden:
			return &AuthError{HTTPError: he, Credentials: c.creds.String()}, false
		case rec.status == http.StatusNotFound:
			he.Message = strings.TrimSpace(he.Message + " (is " + c.server + " a Pyroscope server? it has no " + what + ")")
			return &he, false
		case rec.status >= 500 || rec.status == http.StatusTooManyRequests:
			return &he, true
		case rec.status >= 400:
			return &he, false
		}
		// A 2xx or 3xx that is not a valid response.
		return fmt.Errorf("unexpected response (HTTP %d): %v", rec.status, err), false
	}
	// No response: the connection failed or the attempt timed out.
	inner := err
	if ce != nil && ce.Unwrap() != nil {
		inner = ce.Unwrap()
	}
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) {
		return &FatalError{fmt.Errorf("connecting to %s: %v (trust its CA with --ca-file)", c.server, inner)}, false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return &FatalError{fmt.Errorf("connecting to %s: %v", c.server, dnsErr)}, false
	}
	return fmt.Errorf("connecting to %s: %v", c.server, inner), true
}

// ServerInfo identifies the server behind a URL beyond the URL: its build
// (/api/v1/status/buildinfo) and when its process started
// (process_start_time_seconds in /metrics). pushed.json records it; a
// server that differs from the one recorded (restarted, replaced, another
// one behind the same address) may not hold what the recorded one
// accepted, so a push then checks what it holds before trusting the
// record.
type ServerInfo struct {
	Version  string `json:"version,omitempty"`
	Revision string `json:"revision,omitempty"`
	Started  string `json:"started,omitempty"` // RFC 3339
}

// Known reports whether anything identifies the server.
func (s ServerInfo) Known() bool { return s.Version != "" || s.Started != "" }

// Same reports whether s and o can be the same server process: every field
// both know is equal.
func (s ServerInfo) Same(o ServerInfo) bool {
	eq := func(a, b string) bool { return a == "" || b == "" || a == b }
	return eq(s.Version, o.Version) && eq(s.Revision, o.Revision) && eq(s.Started, o.Started)
}

func (s ServerInfo) String() string {
	if !s.Known() {
		return "unknown server"
	}
	var parts []string
	if s.Version != "" {
		v := "Pyroscope " + s.Version
		if s.Revision != "" {
			v += " (" + s.Revision + ")"
		}
		parts = append(parts, v)
	}
	if s.Started != "" {
		parts = append(parts, "started "+s.Started)
	}
	return strings.Join(parts, ", ")
}

// maxMetrics bounds how much of /metrics is read looking for the start
// time (a Pyroscope server's is about 300 KiB).
const maxMetrics = 8 << 20

// info asks the server who it is. Either half may be missing (a proxy that
// forwards only the APIs); errors are not retried: info is a hint.
func (c *conn) info(ctx context.Context) ServerInfo {
	var si ServerInfo
	get := func(path string, limit int64, read func(io.Reader)) {
		ctx, cancel := context.WithTimeout(ctx, min(c.timeout, 10*time.Second))
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.server+path, nil)
		if err != nil {
			return
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			read(io.LimitReader(resp.Body, limit))
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, limit))
	}
	get("/api/v1/status/buildinfo", 64<<10, func(r io.Reader) {
		var bi struct {
			Data struct {
				Version  string `json:"version"`
				Revision string `json:"revision"`
			} `json:"data"`
		}
		if json.NewDecoder(r).Decode(&bi) == nil {
			si.Version, si.Revision = printable([]byte(bi.Data.Version)), printable([]byte(bi.Data.Revision))
		}
	})
	get("/metrics", maxMetrics, func(r io.Reader) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			v, ok := strings.CutPrefix(sc.Text(), "process_start_time_seconds ")
			if !ok {
				continue
			}
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && f > 0 {
				si.Started = time.Unix(0, int64(f*1e9)).UTC().Truncate(time.Second).Format(time.RFC3339)
			}
			return
		}
	})
	return si
}

// response records what the server answered to one attempt: the connect
// client maps HTTP statuses onto its codes, and retrying needs the status.
type response struct {
	status     int
	retryAfter time.Duration
	body       string // start of a non-connect error body
}

// maxMessage bounds how much of an error body is quoted.
const maxMessage = 512

// printable reduces an error body to one line of text.
func printable(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == utf8.RuneError {
			return ' '
		}
		return r
	}, string(b))
	return strings.Join(strings.Fields(s), " ")
}

type responseKey struct{}

// transport adds the credentials, the tenant and the user agent to requests
// to the server's host (not to a host a redirect leads to) and records
// each response's status.
type transport struct {
	next      http.RoundTripper
	host      string
	creds     Credentials
	userAgent string
}

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if r.URL.Host == t.host {
		t.creds.header(r.Header)
	}
	if t.userAgent != "" {
		r.Header.Set("User-Agent", t.userAgent)
	}
	resp, err := t.next.RoundTrip(r)
	if rec, ok := r.Context().Value(responseKey{}).(*response); ok && err == nil {
		rec.status = resp.StatusCode
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			rec.retryAfter = time.Duration(s) * time.Second
		}
		if resp.StatusCode >= 300 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			// Keep the start of a plain error body for the message; the
			// client still reads the whole body.
			head, _ := io.ReadAll(io.LimitReader(resp.Body, maxMessage))
			rec.body = printable(head)
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
		}
	}
	return resp, err
}

// pushProcedure names the push API in messages.
const pushProcedure = pushv1connect.PusherServicePushProcedure
