package pyroscope

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/profcap/profcap/internal/secret"
)

// Environment variables DefaultCredentialSource reads.
const (
	EnvServer   = "PROFCAP_PYROSCOPE_URL" // the server's base URL (read by the CLI as --server's default)
	EnvToken    = "PROFCAP_PYROSCOPE_TOKEN"
	EnvUser     = "PROFCAP_PYROSCOPE_USER"
	EnvPassword = "PROFCAP_PYROSCOPE_PASSWORD"
	EnvTenant   = "PROFCAP_PYROSCOPE_TENANT"
)

// Credentials authenticate to a Pyroscope server: a bearer token or a
// username and password (basic auth), and the tenant sent as
// X-Scope-OrgID. They are never written to the bundle, the state file or
// the logs; String and GoString print no secret.
type Credentials struct {
	Token    string
	Username string
	Password string
	Tenant   string
}

// String describes the credentials without their secrets.
func (c Credentials) String() string {
	var parts []string
	switch {
	case c.Token != "":
		parts = append(parts, "bearer token")
	case c.Username != "":
		parts = append(parts, "basic auth as "+c.Username)
	}
	if c.Tenant != "" {
		parts = append(parts, "tenant "+c.Tenant)
	}
	if len(parts) == 0 {
		return "no credentials"
	}
	return strings.Join(parts, ", ")
}

// GoString keeps %#v from printing secrets.
func (c Credentials) GoString() string { return "pyroscope.Credentials{" + c.String() + "}" }

func (c Credentials) validate() error {
	switch {
	case c.Token != "" && (c.Username != "" || c.Password != ""):
		return errors.New("give either a bearer token or a username and password, not both")
	case c.Password != "" && c.Username == "":
		return errors.New("a password needs a username")
	case c.Username != "" && c.Password == "":
		return fmt.Errorf("username %s has no password (set %s or name a password file)", c.Username, EnvPassword)
	}
	return nil
}

// header sets the credentials on h.
func (c Credentials) header(h http.Header) {
	switch {
	case c.Token != "":
		h.Set("Authorization", "Bearer "+c.Token)
	case c.Username != "":
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Password)))
	}
	if c.Tenant != "" {
		h.Set("X-Scope-OrgID", c.Tenant)
	}
}

// CredentialSource says where credentials come from. Secrets are read from
// environment variables or files, never given as values: a value on the
// command line would show in the process list and shell history. An unset
// environment variable means "none"; a named file must exist and hold a
// value.
type CredentialSource struct {
	TokenEnv, TokenFile       string
	Username                  string // taken as is (not a secret); overrides UsernameEnv
	UsernameEnv               string
	PasswordEnv, PasswordFile string
	Tenant                    string // taken as is (not a secret); overrides TenantEnv
	TenantEnv                 string
}

// DefaultCredentialSource reads PROFCAP_PYROSCOPE_TOKEN,
// PROFCAP_PYROSCOPE_USER, PROFCAP_PYROSCOPE_PASSWORD and
// PROFCAP_PYROSCOPE_TENANT.
func DefaultCredentialSource() CredentialSource {
	return CredentialSource{TokenEnv: EnvToken, UsernameEnv: EnvUser, PasswordEnv: EnvPassword, TenantEnv: EnvTenant}
}

// Resolve reads the credentials.
func (s CredentialSource) Resolve() (Credentials, error) {
	var c Credentials
	var err error
	if c.Token, err = secret.Read("bearer token", s.TokenEnv, s.TokenFile, false); err != nil {
		return Credentials{}, err
	}
	c.Username = s.Username
	if c.Username == "" && s.UsernameEnv != "" {
		c.Username = strings.TrimSpace(os.Getenv(s.UsernameEnv))
	}
	if c.Password, err = secret.Read("password", s.PasswordEnv, s.PasswordFile, false); err != nil {
		return Credentials{}, err
	}
	c.Tenant = s.Tenant
	if c.Tenant == "" && s.TenantEnv != "" {
		c.Tenant = strings.TrimSpace(os.Getenv(s.TenantEnv))
	}
	if err := c.validate(); err != nil {
		return Credentials{}, err
	}
	return c, nil
}
