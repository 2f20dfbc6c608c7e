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
