package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/profcap/profcap/internal/testsvc"
	"github.com/profcap/profcap/pyroscope/pyroscopetest"
)

// record --push sends the new bundle's profiles to Pyroscope after the
// capture, with the token from the environment. (The fake has no query API:
// verifying against a real server is TestRecordPushRealServer.)
func TestRecordPush(t *testing.T) {
	svc := testsvc.Start(t, testsvc.Normal, false)
	srv := pyroscopetest.NewServer(t)
	t.Setenv("PROFCAP_PYROSCOPE_TOKEN", "push-token-SECRET")
	dir := filepath.Join(t.TempDir(), "cap")
	_, stderr, code := runCLI(t, "record", "--url", svc.URL(), "--duration", "1s", "--profiles", "heap,goroutine", "--out", dir, "--push", srv.URL, "--push-verify=false")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "pushed 2 of 2 profile(s) to "+srv.URL+"\n") {
		t.Errorf("stderr:\n%s", stderr)
	}
	got := srv.Received()
	if len(got) != 2 {
		t.Fatalf("server got %d profiles, want 2", len(got))
	}
	for _, r := range got {
		if r.Auth != "Bearer push-token-SECRET" || r.Labels["profcap_kind"] == "" || r.Profile == nil {
			t.Errorf("received %+v", r.Labels)
		}
	}
}
