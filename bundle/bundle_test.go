package bundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

func TestWriterManifestAndFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	w, err := Create(dir, &Manifest{ID: "x", Status: "capturing"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := Read(dir); err != nil || m.ID != "x" || m.Schema != Schema {
		t.Fatalf("manifest right after Create: %+v, %v", m, err)
	}
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}}}
	n, err := w.WriteProfile("targets/a/cpu.pb.gz", p)
	if err != nil || n == 0 {
		t.Fatalf("WriteProfile: %d, %v", n, err)
	}
	if _, err := LoadProfile(dir, "targets/a/cpu.pb.gz"); err != nil {
		t.Error(err)
	}
	for _, rel := range []string{"../x", "/etc/passwd", "a/../../x", `a\b`, ""} {
		if err := w.WriteFile(rel, []byte("x")); err == nil {
			t.Errorf("WriteFile(%q) accepted a path leaving the bundle", rel)
		}
	}
	// Updates reach the file within ManifestDelay, or at once with Sync.
	_ = w.Update(func(m *Manifest) { m.Status = "ok" })
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := Read(dir)
		if err == nil && m.Status == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("manifest update not written: %+v %v", m, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = w.Update(func(m *Manifest) { m.Reason = "interrupted" })
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if m, _ := Read(dir); m.Reason != "interrupted" {
		t.Errorf("Sync did not write the manifest")
	}
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(info.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", path)
		}
		want := os.FileMode(FileMode)
		if info.IsDir() {
			want = DirMode
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, info.Mode().Perm(), want)
		}
		return nil
	})
	if _, err := Create(dir, &Manifest{}); err == nil {
		t.Errorf("Create over a non-empty directory succeeded")
	}
}

func TestReadRejectsBadManifests(t *testing.T) {
	cases := map[string]string{
		`{"schema":"other/v9"}`: "unknown bundle schema",
		`{"schema":"profcap.bundle/v1","targets":[{"name":"a","profiles":[{"kind":"cpu","path":"../../etc/passwd"}]}]}`: "leaves the bundle",
		`{"schema":"profcap.bundle/v1","merged":[{"kind":"cpu","path":"/abs"}]}`:                                        "leaves the bundle",
		`{not json`: "invalid manifest",
	}
	for body, want := range cases {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, ManifestFile), []byte(body), 0o644)
		if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Read(%s) = %v, want %q", body, err, want)
		}
	}
	if _, err := Read(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a profcap bundle") {
		t.Errorf("empty dir: %v", err)
	}
}

func FuzzRead(f *testing.F) {
	f.Add([]byte(`{"schema":"profcap.bundle/v1","id":"x","targets":[{"name":"a","profiles":[{"kind":"cpu","path":"targets/a/cpu.pb.gz"}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, ManifestFile), data, 0o644)
		m, err := Read(dir)
		if err != nil {
			return
		}
		for _, tg := range m.Targets {
			for _, p := range tg.Profiles {
				if p.Path != "" && !Inside(p.Path) {
					t.Fatalf("accepted path %q", p.Path)
				}
			}
		}
	})
}
