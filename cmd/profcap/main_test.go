package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/profcap/profcap/internal/termsafe"
	"github.com/profcap/profcap/internal/testsvc"
)

// TestMain lets the test binary run copies of itself as test services
// (internal/testsvc). Other test files in this package must not define
// TestMain.
func TestMain(m *testing.M) {
	testsvc.Main()
	os.Exit(m.Run())
}

// runCLI runs profcap with args and returns stdout, stderr and the exit code
// realMain would give.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	if err != nil && err.Error() != "" {
		errb.WriteString("profcap: " + termsafe.Message(err.Error(), 500) + "\n")
	}
	return out.String(), errb.String(), exitCode(err)
}

// normalize replaces what changes from run to run (times, ports, ids,
// counts, sizes) with fixed words so outputs can be compared with golden files.
func normalize(s string, repl ...string) string {
	for i := 0; i+1 < len(repl); i += 2 {
		s = strings.ReplaceAll(s, repl[i], repl[i+1])
	}
	for _, r := range []struct{ re, with string }{
		{`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`, "TIME"},
		{`\d{8}T\d{6}Z-[A-Za-z0-9._-]+-[0-9a-f]{6}`, "ID"},
		{`127\.0\.0\.1[:_-]\d+`, "HOST"},
		{`"(samples|bytes)": \d+`, `"$1": N`},
		{`"(seconds|max_start_skew_seconds)": [0-9.e-]+`, `"$1": S`},
		{`\[ *\d+\.\ds\]`, "[T]"},
		{`\d+ samples, [0-9.]+ (B|KiB|MiB)`, "N samples, SIZE"},
		{`"profcap": "[^"]*"`, `"profcap": "VERSION"`},
	} {
		s = regexp.MustCompile(r.re).ReplaceAllString(s, r.with)
	}
	return s
}

// goToolPprofTop runs `go tool pprof -top` on a file, as a user would.
func goToolPprofTop(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"tool", "pprof", "-top"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof -top %v: %v\n%s", args, err, out)
	}
	return string(out)
}
