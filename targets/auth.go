package targets

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/profcap/profcap/internal/secret"
)

// Auth says how to authenticate to a target's HTTP endpoints. Secrets are
// never written in the targets file itself: they are read from an
// environment variable or a file when the capture starts, and never written
// to the bundle, the logs or the report.
type Auth struct {
	BearerTokenEnv  string `yaml:"bearer_token_env,omitempty"`
	BearerTokenFile string `yaml:"bearer_token_file,omitempty"`
	Username        string `yaml:"username,omitempty"`
	PasswordEnv     string `yaml:"password_env,omitempty"`
	PasswordFile    string `yaml:"password_file,omitempty"`
}

// TLS configures HTTPS to a target.
type TLS struct {
	CAFile   string `yaml:"ca_file,omitempty"`
	CertFile string `yaml:"cert_file,omitempty"` // client certificate (mTLS)
	KeyFile  string `yaml:"key_file,omitempty"`
	// InsecureSkipVerify turns off certificate checks; only when named.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify,omitempty"`
}

func (a *Auth) validate() error {
	if a == nil {
		return nil
	}
	bearer := a.BearerTokenEnv != "" || a.BearerTokenFile != ""
	basic := a.Username != "" || a.PasswordEnv != "" || a.PasswordFile != ""
	switch {
	case bearer && basic:
		return errors.New("auth: give either a bearer token or a username and password, not both")
	case a.BearerTokenEnv != "" && a.BearerTokenFile != "":
		return errors.New("auth: give bearer_token_env or bearer_token_file, not both")
	case a.PasswordEnv != "" && a.PasswordFile != "":
		return errors.New("auth: give password_env or password_file, not both")
	case basic && a.Username == "":
		return errors.New("auth: a password needs a username")
	case basic && a.PasswordEnv == "" && a.PasswordFile == "":
		return errors.New("auth: username needs password_env or password_file (passwords are not written in the targets file)")
	}
	return nil
}

func (t *TLS) validate() error {
	if t == nil {
		return nil
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("tls: cert_file and key_file go together")
	}
	return nil
}

// Secrets is the resolved credential material of a target. Its String
// method never prints them.
type Secrets struct {
	header string // Authorization header value
}

func (s Secrets) String() string { return "[redacted]" }

// ResolveAuth reads the target's credentials from the environment or files.
func (t *Target) ResolveAuth() (Secrets, error) {
	a := t.Auth
	if a == nil {
		return Secrets{}, nil
	}
	switch {
	case a.BearerTokenEnv != "" || a.BearerTokenFile != "":
		tok, err := secret.Read("bearer token", a.BearerTokenEnv, a.BearerTokenFile, true)
		if err != nil {
			return Secrets{}, err
		}
		return Secrets{header: "Bearer " + tok}, nil
	case a.Username != "":
		pw, err := secret.Read("password", a.PasswordEnv, a.PasswordFile, true)
		if err != nil {
			return Secrets{}, err
		}
		req, _ := http.NewRequest(http.MethodGet, "http://x", nil)
		req.SetBasicAuth(a.Username, pw)
		return Secrets{header: req.Header.Get("Authorization")}, nil
	}
	return Secrets{}, nil
}

// HTTPClient returns an HTTP client for the target's endpoints: its TLS
// settings, and its credentials added to every request. base supplies the
// transport settings (timeouts) to start from; nil means Go's defaults.
func (t *Target) HTTPClient(base *http.Transport) (*http.Client, error) {
	sec, err := t.ResolveAuth()
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	var tr *http.Transport
	if base != nil {
		tr = base.Clone()
	} else {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	if t.TLS != nil {
		cfg, err := t.TLS.config()
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
		tr.TLSClientConfig = cfg
	}
	var rt http.RoundTripper = tr
	if sec.header != "" {
		rt = &authTransport{next: tr, header: sec.header}
	}
	return &http.Client{Transport: rt, CheckRedirect: sameHostRedirects}, nil
}

func (c *TLS) config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: ca_file %s holds no PEM certificate", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: client certificate: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// sameHostRedirects follows at most 5 redirects, and none to another host or
// scheme: the transport adds the target's credentials to every request, and
// they must not be sent anywhere the targets file did not name.
func sameHostRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("stopped after 5 redirects")
	}
	if first := via[0].URL; req.URL.Host != first.Host || req.URL.Scheme != first.Scheme {
		return fmt.Errorf("refusing a redirect from %s to %s://%s: credentials are sent only to the configured host", first.Host, req.URL.Scheme, req.URL.Host)
	}
	return nil
}

type authTransport struct {
	next   http.RoundTripper
	header string
}

func (a *authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", a.header)
	return a.next.RoundTrip(r)
}
