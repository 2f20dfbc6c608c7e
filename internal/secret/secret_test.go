package secret

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tok")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PROFCAP_TEST_SECRET", " from-env ")
	t.Setenv("PROFCAP_TEST_EMPTY", "")
	for _, tc := range []struct {
		env, file string
		required  bool
		want, err string
	}{
		{env: "PROFCAP_TEST_SECRET", file: file, want: "from-file"}, // a named file wins
		{env: "PROFCAP_TEST_SECRET", want: "from-env"},
		{env: "PROFCAP_TEST_EMPTY", want: ""},
		{env: "PROFCAP_TEST_EMPTY", required: true, err: "environment variable PROFCAP_TEST_EMPTY is not set"},
		{file: empty, err: "is empty"},
		{file: filepath.Join(dir, "missing"), err: "no such file"},
		{want: ""},
	} {
		got, err := Read("token", tc.env, tc.file, tc.required)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "token: ") {
				t.Errorf("%+v: error %v, want one with %q", tc, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: got %q, %v; want %q", tc, got, err, tc.want)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://admin:PASS@127.0.0.1:8080/debug/pprof": "http://admin:xxxxx@127.0.0.1:8080/debug/pprof",
		"http://127.0.0.1:8080/debug/pprof":            "http://127.0.0.1:8080/debug/pprof",
		"https://h/x?seconds=5&access_token=SECRET":    "https://h/x?access_token=xxxxx&seconds=5",
		"http://user@h/":               "http://user@h/",
		"http://a:PASS@h:99999999/%zz": "http://xxxxx@h:99999999/%zz",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(RedactURL(in), "PASS") || strings.Contains(RedactURL(in), "SECRET") {
			t.Errorf("%q leaks", in)
		}
	}
}

func TestRedactText(t *testing.T) {
	in := `Get "http://admin:PASS@127.0.0.1:1/x": dial tcp: connection refused; also https://u:p%40ss@h/`
	got := RedactText(in)
	if strings.Contains(got, "PASS") || strings.Contains(got, "p%40ss") || !strings.Contains(got, "http://admin:xxxxx@127.0.0.1:1/x") {
		t.Errorf("RedactText: %s", got)
	}
}
