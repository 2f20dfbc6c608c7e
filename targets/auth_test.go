package targets

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Credentials go to the configured host only: a redirect elsewhere is
// refused, not followed with the token.
func TestAuthNotSentAcrossRedirects(t *testing.T) {
	var leaked string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked = r.Header.Get("Authorization")
	}))
	defer other.Close()
	var got string
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
		if r.URL.Path == "/elsewhere" {
			http.Redirect(w, r, other.URL+"/steal", http.StatusFound)
			return
		}
		if r.URL.Path == "/here" {
			http.Redirect(w, r, "/ok", http.StatusFound)
		}
	}))
	defer svc.Close()
	t.Setenv("PROFCAP_TEST_TOKEN", "tok-SECRET")
	tg := &Target{Name: "a", Auth: &Auth{BearerTokenEnv: "PROFCAP_TEST_TOKEN"}}
	c, err := tg.HTTPClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Get(svc.URL + "/here"); err != nil || got != "Bearer tok-SECRET" {
		t.Errorf("same-host redirect: %v, auth %q", err, got)
	} else {
		resp.Body.Close()
	}
	_, err = c.Get(svc.URL + "/elsewhere")
	if err == nil || !strings.Contains(err.Error(), "credentials are sent only to the configured host") {
		t.Errorf("cross-host redirect: %v", err)
	}
	if leaked != "" {
		t.Errorf("the token reached another host: %q", leaked)
	}
	if s, _ := tg.ResolveAuth(); s.String() != "[redacted]" || strings.Contains(s.String(), "SECRET") {
		t.Errorf("Secrets.String() = %q", s.String())
	}
}
