// Package testreq lets a test say which real part it needs (perf, a
// browser, a runtime, root). Where the part is missing the test is skipped
// on a developer's machine, but fails when CI=true: the repository's own
// set-up (make test) installs every part, so a missing one in CI is a
// broken install, never a green run that tested nothing.
package testreq

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// CI reports whether the tests run in CI (CI=true in the environment).
func CI() bool { return os.Getenv("CI") == "true" }

// Missing skips the test, or fails it under CI, saying what is missing and
// how make test provides it.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("a real part this test needs is missing (make test installs it; CI=true forbids skipping): %s", msg)
	}
	t.Skipf("missing: %s (make test installs it)", msg)
}

// Command returns the path of the named program, or calls Missing.
func Command(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s is not on PATH", name)
	}
	return p
}

// Root requires root (or the capabilities a test's tool needs as root).
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root is needed: %s", why)
	}
}
