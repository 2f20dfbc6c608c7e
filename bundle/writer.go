package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/pprof/profile"
)

// File and directory modes of everything a bundle holds: profiles can
// reveal code and data, so they are not world-readable.
const (
	FileMode = 0o640
	DirMode  = 0o750
)

// Writer writes a bundle as results arrive. Every file is written to a
// temporary name and renamed into place, and the manifest is rewritten
// shortly after every change (changes within ManifestDelay are written
// together, so a capture of hundreds of targets does not spend its time
// rewriting the manifest), so a capture cut short at any moment leaves a
// valid bundle.
type Writer struct {
	dir     string
	mu      sync.Mutex // guards m, dirty, timer, err
	m       *Manifest
	dirty   bool
	timer   *time.Timer
	err     error
	flushMu sync.Mutex // orders manifest writes
}

// ManifestDelay is the longest a manifest change waits to be written.
const ManifestDelay = 100 * time.Millisecond

// Create makes dir (which must not exist, or be empty) and writes m into it.
func Create(dir string, m *Manifest) (*Writer, error) {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("output directory %s exists and is not empty", dir)
	}
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return nil, fmt.Errorf("creating bundle directory: %w", err)
	}
	if m.Schema == "" {
		m.Schema = Schema
	}
	w := &Writer{dir: dir, m: m, dirty: true}
	if err := w.Sync(); err != nil {
		return nil, err
	}
	return w, nil
}

// Dir is the bundle directory.
func (w *Writer) Dir() string { return w.dir }

// Update applies fn to the manifest under the writer's lock; the manifest
// file is rewritten within ManifestDelay (or by Sync). It returns the error
// of an earlier background write, if any.
func (w *Writer) Update(fn func(m *Manifest)) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	fn(w.m)
	w.dirty = true
	if w.timer == nil {
		w.timer = time.AfterFunc(ManifestDelay, func() { _ = w.Sync() })
	}
	return w.err
}

// Sync writes the manifest now if it changed.
func (w *Writer) Sync() error {
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	w.mu.Lock()
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	if !w.dirty {
		err := w.err
		w.mu.Unlock()
		return err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // the manifest is read by people and tools, not embedded in HTML
	enc.SetIndent("", "  ")
	err := enc.Encode(w.m)
	w.dirty = false
	w.mu.Unlock()
	if err == nil {
		err = WriteAtomic(filepath.Join(w.dir, ManifestFile), func(f io.Writer) error {
			_, err := f.Write(buf.Bytes())
			return err
		})
	}
	w.mu.Lock()
	if err != nil {
		w.err = err
		w.dirty = true
	}
	w.mu.Unlock()
	return err
}

// Manifest returns a deep copy of the current manifest.
func (w *Writer) Manifest() *Manifest {
	w.mu.Lock()
	defer w.mu.Unlock()
	data, _ := json.Marshal(w.m)
	var c Manifest
	_ = json.Unmarshal(data, &c)
	return &c
}

// WriteProfile writes p gzipped at rel (a slash path inside the bundle) and
// returns the bytes written.
func (w *Writer) WriteProfile(rel string, p *profile.Profile) (int64, error) {
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil { // Write gzips
		return 0, fmt.Errorf("encoding %s: %w", rel, err)
	}
	return int64(buf.Len()), w.WriteFile(rel, buf.Bytes())
}

// WriteFile writes data at rel inside the bundle atomically.
func (w *Writer) WriteFile(rel string, data []byte) error {
	return w.WriteFileFunc(rel, func(f io.Writer) error {
		_, err := f.Write(data)
		return err
	})
}

// WriteFileFunc streams fn's output to rel inside the bundle atomically.
func (w *Writer) WriteFileFunc(rel string, fn func(io.Writer) error) error {
	if !Inside(rel) {
		return fmt.Errorf("path %q leaves the bundle", rel)
	}
	path := filepath.Join(w.dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(path), DirMode); err != nil {
		return err
	}
	return WriteAtomic(path, fn)
}

// WriteAtomic writes fn's output to a temporary file beside path, with the
// bundle's file mode, flushes it to stable storage and renames it into
// place: readers (and a later run after a crash) see the old file or the
// new one, never a part. Every file profcap writes into a bundle (and the
// push state beside it) goes through here.
func WriteAtomic(path string, fn func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	err = fn(f)
	if err == nil {
		err = f.Chmod(FileMode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
