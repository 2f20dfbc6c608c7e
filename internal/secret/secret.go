// Package secret reads credentials from the places profcap takes them: a
// file or an environment variable. Every command that needs a credential
// reads it here, so the rules (which source wins, what is trimmed, when a
// missing one is an error) are the same for targets and for Pyroscope.
package secret

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
)

// Read returns the secret in file, or else in the environment variable
// env. A named file wins over a variable (it was named on purpose; the
// variable may be left over in the shell). Surrounding white space (the
// trailing newline of a file) is trimmed. A file that cannot be read or is
// empty is an error; an unset or empty variable is an error only when
// required, otherwise it gives "". what names the secret in errors
// ("bearer token"); the value itself never appears in one.
func Read(what, env, file string, required bool) (string, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %v", what, err)
		}
		v := strings.TrimSpace(string(data))
		if v == "" {
			return "", fmt.Errorf("%s: %s is empty", what, file)
		}
		return v, nil
	}
	if env == "" {
		return "", nil
	}
	v := strings.TrimSpace(os.Getenv(env))
	if v == "" && required {
		return "", fmt.Errorf("%s: environment variable %s is not set", what, env)
	}
	return v, nil
}

// RedactURL returns u as profcap prints and records it: the password of
// user information replaced by "xxxxx", and the values of query
// parameters whose names suggest a credential (token, key, secret,
// password, auth, signature) too. Text that does not parse as a URL is
// returned with any "user:password@" part redacted all the same.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		if at := strings.LastIndexByte(u, '@'); at > 0 {
			if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
				return u[:scheme+3] + "xxxxx" + u[at:]
			}
		}
		return u
	}
	if p.User != nil {
		if _, has := p.User.Password(); has {
			p.User = url.UserPassword(p.User.Username(), "xxxxx")
		}
	}
	if p.RawQuery != "" {
		q := p.Query()
		changed := false
		for k := range q {
			lk := strings.ToLower(k)
			for _, w := range []string{"token", "key", "secret", "password", "passwd", "auth", "signature", "sig"} {
				if strings.Contains(lk, w) {
					q[k] = []string{"xxxxx"}
					changed = true
					break
				}
			}
		}
		if changed {
			p.RawQuery = q.Encode()
		}
	}
	return p.String()
}

var userinfo = regexp.MustCompile(`(://[^/\s:@]*:)[^/\s@]*@`)

// RedactText redacts the passwords of every URL with user information
// inside free text (an error message that quotes a URL).
func RedactText(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return userinfo.ReplaceAllString(s, "${1}xxxxx@")
}
