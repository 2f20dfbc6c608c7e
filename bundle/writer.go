package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
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
	full    string     // the first file a full disk refused
	flushMu sync.Mutex // orders manifest writes; guards reserved
	// reserved says ReserveFile is on disk.
	reserved bool
}

// ManifestDelay is the longest a manifest change waits to be written.
const ManifestDelay = 100 * time.Millisecond

// Create makes a bundle in dir, which must not exist or be empty, and
// writes m into it. The directory is claimed by creating its manifest with
// O_EXCL, so two captures given the same directory never share it: the
// second fails.
func Create(dir string, m *Manifest) (*Writer, error) {
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return nil, fmt.Errorf("creating bundle directory: %w", err)
	}
	if err := claim(dir); err != nil {
		return nil, err
	}
	return start(dir, m)
}

// CreateUnique is Create for a default name: when base is taken (it
// exists and is not empty, or another capture claimed it first) it tries
// base-2, base-3, … and uses the first it can claim.
func CreateUnique(base string, m *Manifest) (*Writer, error) {
	if err := os.MkdirAll(filepath.Dir(base), DirMode); err != nil {
		return nil, fmt.Errorf("creating bundle directory: %w", err)
	}
	for i := 1; i <= 1000; i++ {
		dir := base
		if i > 1 {
			dir = fmt.Sprintf("%s-%d", base, i)
		}
		if err := os.Mkdir(dir, DirMode); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("creating bundle directory: %w", err)
		}
		err := claim(dir)
		if errors.Is(err, errTaken) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return start(dir, m)
	}
	return nil, fmt.Errorf("creating bundle directory: %s and 999 numbered names after it are taken", base)
}

// errTaken marks a directory another capture holds; its text is not shown.
var errTaken = takenError{}

type takenError struct{}

func (takenError) Error() string { return "" }

// claim creates dir's manifest exclusively; errTaken (wrapped) when the
// directory already holds one or anything else.
func claim(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, ManifestFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, FileMode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("output directory %s exists and is not empty%w", dir, errTaken)
	}
	if err != nil {
		return fmt.Errorf("creating bundle manifest: %w", err)
	}
	f.Close()
	if ents, err := os.ReadDir(dir); err != nil || len(ents) > 1 {
		os.Remove(filepath.Join(dir, ManifestFile))
		if err != nil {
			return err
		}
		return fmt.Errorf("output directory %s exists and is not empty%w", dir, errTaken)
	}
	return nil
}

// TempDir is the directory inside a bundle where collectors keep their
// temporary files during a capture (perf.data, a tool's output); the
// capture removes it at its end. One left behind means profcap was killed.
const TempDir = ".tmp"

// ReserveFile holds disk space for the last manifest writes: when the
// disk fills during a capture, it is removed so the manifest can still be
// rewritten with the final statuses of what is on disk.
const ReserveFile = ".reserve"

func start(dir string, m *Manifest) (*Writer, error) {
	if m.Schema == "" {
		m.Schema = Schema
	}
	w := &Writer{dir: dir, m: m, dirty: true}
	if err := w.Sync(); err != nil {
		return nil, err
	}
	if err := w.reserve(); err != nil {
		return nil, err
	}
	return w, nil
}

// reserve writes ReserveFile: room for one more copy of the final
// manifest (about 500 bytes a profile; the rewrite's temporary file is
// the copy that needs it while the old manifest stays until the rename).
func (w *Writer) reserve() error {
	w.mu.Lock()
	n := 4096
	for _, t := range w.m.Targets {
		n += 512 + 512*len(t.Profiles)
	}
	w.mu.Unlock()
	n = (n + 4095) &^ 4095 // whole pages
	err := WriteAtomic(filepath.Join(w.dir, ReserveFile), func(f io.Writer) error {
		_, err := f.Write(make([]byte, n))
		return err
	})
	if err != nil {
		os.Remove(filepath.Join(w.dir, ManifestFile))
		return fmt.Errorf("reserving %d KiB for the manifest in %s: %w", n>>10, w.dir, err)
	}
	w.reserved = true
	return nil
}

// release frees the reserve (once).
func (w *Writer) release() {
	if w.reserved {
		w.reserved = false
		os.Remove(filepath.Join(w.dir, ReserveFile))
	}
}

// DiskFull reports the first write that failed because the disk (or the
// quota) was full: the file's path inside the bundle, or "".
func (w *Writer) DiskFull() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.full
}

func (w *Writer) noteFull(rel string, err error) {
	if !isNoSpace(err) {
		return
	}
	w.mu.Lock()
	if w.full == "" {
		w.full = rel
	}
	w.mu.Unlock()
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// Close writes the manifest a last time and frees the reserve.
func (w *Writer) Close() error {
	err := w.Sync()
	w.flushMu.Lock()
	w.release()
	w.flushMu.Unlock()
	return err
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
		write := func() error {
			return WriteAtomic(filepath.Join(w.dir, ManifestFile), func(f io.Writer) error {
				_, err := f.Write(buf.Bytes())
				return err
			})
		}
		err = write()
		if isNoSpace(err) && w.reserved {
			// The disk is full: free the reserve kept for this moment.
			w.noteFull(ManifestFile, err)
			w.release()
			err = write()
		}
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
	if full := w.DiskFull(); full != "" {
		// Once the disk is full, nothing more is written but the
		// manifest: the room the reserve frees is kept for it.
		return fmt.Errorf("%s not written: no space left on device (writing %s failed first)", rel, full)
	}
	path := filepath.Join(w.dir, filepath.FromSlash(rel))
	err := os.MkdirAll(filepath.Dir(path), DirMode)
	if err == nil {
		err = WriteAtomic(path, fn)
	}
	w.noteFull(rel, err)
	return err
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
