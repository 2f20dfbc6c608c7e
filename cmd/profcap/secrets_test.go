package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/profcap/profcap/internal/testsvc"
)

// A token and a password given through the environment reach the target
// and appear nowhere in the bundle, the terminal output or the report.
func TestSecretsNeverLeaveTheEnvironment(t *testing.T) {
	const token = "tok-3b1f9a2c7d-SECRET"
	const password = "pw-88e1c0ffee-SECRET"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testsvc.Work(ctx)
	inner := testsvc.Handler(testsvc.Normal, false)
	var unauthorized int
	bearer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			unauthorized++
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer bearer.Close()
	basic := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "profcap" || p != password {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer basic.Close()

	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte(password+"\n"), 0o600)
	t.Setenv("PROFCAP_TEST_TOKEN", token)
	cfg := filepath.Join(dir, "profcap.yaml")
	os.WriteFile(cfg, []byte(`
targets:
  - name: with-token
    pprof: `+bearer.URL+`/debug/pprof
    auth: {bearer_token_env: PROFCAP_TEST_TOKEN}
  - name: with-password
    pprof: `+basic.URL+`/debug/pprof
    auth: {username: profcap, password_file: pw}
    tls: {insecure_skip_verify: true}
`), 0o644)
	out := filepath.Join(dir, "bundle")
	stdout, stderr, code := runCLI(t, "record", "--config", cfg, "--all", "--duration", "1s", "--profiles", "heap,goroutine", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if unauthorized != 0 {
		t.Errorf("%d requests reached the target without the token", unauthorized)
	}
	for _, secret := range []string{token, password} {
		if strings.Contains(stdout+stderr, secret) {
			t.Errorf("the terminal output shows a secret")
		}
		filepath.Walk(out, func(path string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return err
			}
			data, _ := os.ReadFile(path)
			if bytes.Contains(data, []byte(secret)) {
				t.Errorf("%s contains a secret", path)
			}
			return nil
		})
	}

	// A missing variable is named, and the target fails, not profcap.
	os.Unsetenv("PROFCAP_TEST_TOKEN")
	_, stderr, code = runCLI(t, "record", "--config", cfg, "--target", "with-token", "--duration", "1s", "--out", filepath.Join(dir, "b2"))
	if code != 1 || !strings.Contains(stderr, "environment variable PROFCAP_TEST_TOKEN is not set") {
		t.Errorf("exit %d\n%s", code, stderr)
	}
}
