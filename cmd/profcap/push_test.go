package main

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/profcap/profcap/pyroscope"
	"github.com/profcap/profcap/pyroscope/pyroscopetest"
)

// pushCLI runs profcap push with args.
func pushCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runCLI(t, append([]string{"push"}, args...)...)
}

// clearPushEnv keeps the caller's environment out of the tests.
func clearPushEnv(t *testing.T) {
	for _, v := range []string{pyroscope.EnvServer, pyroscope.EnvToken, pyroscope.EnvUser, pyroscope.EnvPassword, pyroscope.EnvTenant} {
		t.Setenv(v, "")
	}
}

func TestPushCommand(t *testing.T) {
	clearPushEnv(t)
	t.Setenv(pyroscope.EnvToken, "cli-s3cret")
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	srv.RequireAuth(func(h http.Header) bool { return h.Get("Authorization") == "Bearer cli-s3cret" })

	stdout, stderr, code := pushCLI(t, dir, "--server", srv.URL, "--tenant", "team-a")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	t.Logf("stdout:\n%s", stdout)
	if n := len(srv.Received()); n != 6 {
		t.Errorf("server got %d profiles, want 6", n)
	}
	for _, r := range srv.Received() {
		if r.Tenant != "team-a" {
			t.Errorf("X-Scope-OrgID %q", r.Tenant)
		}
	}
	for _, want := range []string{
		"pushed   orchestration-1 cpu (process_cpu, ",
		"pushed   worker-1 wall (wall, ",
		"pushed 6 of 6 profiles to " + srv.URL + " (tenant team-a)\n",
		`query in Grafana: {service_name="orchestration-1", profcap_capture="` + pyroscopetest.BundleID + `"} (services: orchestration-1, workers), time range 2026-11-28T01:05:54.715225371Z to 2026-11-28T01:06:04.715225371Z`,
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout does not contain %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout+stderr, "cli-s3cret") {
		t.Error("the token was printed")
	}

	// Again: nothing is sent.
	before := srv.Requests()
	stdout, _, code = pushCLI(t, dir, "--server", srv.URL, "--tenant", "team-a")
	if code != 0 || srv.Requests() != before || !strings.Contains(stdout, "pushed 0 of 6 profiles to "+srv.URL+" (tenant team-a), 6 already there") {
		t.Errorf("re-run: exit %d, %d requests, stdout:\n%s", code, srv.Requests()-before, stdout)
	}
}

func TestPushCommandDryRun(t *testing.T) {
	clearPushEnv(t)
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	stdout, stderr, code := pushCLI(t, dir, "--server", srv.URL, "--dry-run")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	if srv.Requests() != 0 {
		t.Errorf("dry run made %d requests", srv.Requests())
	}
	t.Logf("stdout:\n%s", stdout)
	lines := regexp.MustCompile(`(?m)^push  .*$`).FindAllString(stdout, -1)
	if len(lines) != 6 {
		t.Fatalf("%d profile lines, want 6:\n%s", len(lines), stdout)
	}
	want := `push  orchestration-1 cpu process_cpu {__delta__="false", __name__="process_cpu", language="go", profcap_capture="` + pyroscopetest.BundleID +
		`", profcap_kind="cpu", profcap_target="orchestration-1", role="orchestration", service_name="orchestration-1"} 2026-11-28T01:05:54.745225371Z..2026-11-28T01:06:04.615225371Z (9.87s) `
	if !strings.HasPrefix(lines[0], want) || !regexp.MustCompile(` [1-9]\d* bytes$`).MatchString(lines[0]) {
		t.Errorf("first line\n got %s\nwant %s<N> bytes", lines[0], want)
	}
	if !strings.Contains(stdout, `push  worker-1 wall wall {__delta__="false", __name__="wall", k8s_pod="worker-1-abc", profcap_capture=`) ||
		!strings.Contains(stdout, `service="workers", service_name="workers"}`) {
		t.Errorf("worker-1 wall line missing or wrong:\n%s", stdout)
	}
	if !strings.Contains(stdout, "would push 6 of 6 profiles to "+srv.URL) {
		t.Errorf("no summary:\n%s", stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, pyroscope.StateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dry run wrote %s", pyroscope.StateFile)
	}
}

func TestPushCommandUnauthorized(t *testing.T) {
	clearPushEnv(t)
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("stale-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := pyroscopetest.WriteBundle(t)
	srv := pyroscopetest.NewServer(t)
	srv.RequireAuth(func(h http.Header) bool { return h.Get("Authorization") == "Bearer fresh-token" })
	stdout, stderr, code := pushCLI(t, dir, "--server", srv.URL, "--token-file", tok)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, stdout, stderr)
	}
	t.Logf("stderr:\n%s", stderr)
	for _, want := range []string{srv.URL + " rejected the request with HTTP 401", "check the token", "6 of 6 profiles did not go"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stdout+stderr, "stale-token") {
		t.Error("the token was printed")
	}
	if len(srv.Received()) != 0 {
		t.Error("server accepted profiles without the right token")
	}
}

func TestPushCommandUsage(t *testing.T) {
	clearPushEnv(t)
	dir := pyroscopetest.WriteBundle(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "push takes one bundle directory"},
		{[]string{dir}, "--server is required"},
		{[]string{dir, "--server", "ftp://x"}, "want http:// or https://"},
		{[]string{dir, "--server", "http://x/?q=1"}, "without query"},
		{[]string{dir, "--server", "http://x", "--token-env", "PROFCAP_TEST_UNSET_TOKEN"}, "environment variable PROFCAP_TEST_UNSET_TOKEN is not set"},
		{[]string{dir, "--server", "http://x", "--concurrency", "0"}, "--concurrency"},
		{[]string{dir, "--bogus"}, "unknown flag"},
	} {
		_, stderr, code := pushCLI(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("push %q: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
	_, stderr, code := pushCLI(t, filepath.Join(t.TempDir(), "nothing"), "--server", "http://127.0.0.1:1")
	if code != 1 || !strings.Contains(stderr, "is not a profcap bundle") {
		t.Errorf("missing bundle: exit %d, %q", code, stderr)
	}
	stdout, _, code := pushCLI(t, "--help") // help goes to stdout, as for every command
	if code != 0 || !strings.Contains(stdout, "Usage: profcap push BUNDLE") || !strings.Contains(stdout, "Examples:") || !strings.Contains(stdout, "--token-file") {
		t.Errorf("--help: exit %d\n%s", code, stdout)
	}
}

func TestPushCommandTLS(t *testing.T) {
	clearPushEnv(t)
	dir := pyroscopetest.WriteBundle(t)
	srv, ca := pyroscopetest.NewTLSServer(t)
	// Unknown CA: refused, and not retried (it would not get better).
	_, stderr, code := pushCLI(t, dir, "--server", srv.URL, "--quiet")
	t.Logf("stderr:\n%s", stderr)
	if code != 1 || !strings.Contains(stderr, "certificate") || srv.Requests() != 0 {
		t.Errorf("unknown CA: exit %d, %d requests, stderr:\n%s", code, srv.Requests(), stderr)
	}
	stdout, stderr, code := pushCLI(t, dir, "--server", srv.URL, "--ca-file", ca, "--quiet")
	if code != 0 || len(srv.Received()) != 6 {
		t.Errorf("with --ca-file: exit %d, %d received\n%s%s", code, len(srv.Received()), stdout, stderr)
	}
	if strings.Contains(stdout, "pushed   ") || !strings.Contains(stdout, "pushed 6 of 6 profiles") {
		t.Errorf("--quiet prints only the summary:\n%s", stdout)
	}
}
