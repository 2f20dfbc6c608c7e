package perfscript

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestCollapseFile: a mapped file folds to what reading it gives, in every
// mode; an empty file and a pipe are read.
func TestCollapseFile(t *testing.T) {
	dir := t.TempDir()
	data := readFixture(t, "conformance/perf-java-stacks-01.txt")
	data = bytes.Repeat(data, 3)
	path := filepath.Join(dir, "in.txt")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for mode, opt := range collapseModes {
		var want, got bytes.Buffer
		if err := Collapse(bytes.NewReader(data), &want, opt); err != nil {
			t.Fatal(err)
		}
		if err := CollapseFile(context.Background(), path, &got, opt); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("%s: CollapseFile differs from Collapse", mode)
		}
	}
	empty := filepath.Join(dir, "empty.txt")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := CollapseFile(context.Background(), empty, &out, CollapseOptions{}); err != nil || out.Len() != 0 {
		t.Errorf("empty file: %q, %v", out.String(), err)
	}
	if err := CollapseFile(context.Background(), filepath.Join(dir, "missing"), &out, CollapseOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := CollapseFile(ctx, path, &out, CollapseOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want %v", err, context.Canceled)
	}
}

// TestCollapseFileShrinks: a mapped file truncated under the collapser
// gives an error, not a crash.
func TestCollapseFileShrinks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.txt")
	data := bytes.Repeat(readFixture(t, "conformance/perf-java-stacks-01.txt"), 40)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := syscall.Mmap(int(f.Fd()), 0, len(data), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	cfg := smallSegments(2, 64<<10)
	if err := collapseBytes(context.Background(), m, &bytes.Buffer{}, CollapseOptions{}, cfg); !errors.Is(err, errShrank) {
		t.Errorf("err = %v, want %v", err, errShrank)
	}
}
