package symbolize

import (
	"debug/elf"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/profcap/profcap/internal/testreq"
)

// TestStrippedFunctionStarts: in a stripped build, every address of a
// nameless function gets one frame name, MODULE+0xSTART, the start being
// where the unstripped build's symbol says the function begins (as a file
// offset); the next function gets its own.
func TestStrippedFunctionStarts(t *testing.T) {
	gcc := testreq.Command(t, "gcc")
	strip := testreq.Command(t, "strip")
	dir := t.TempDir()
	bin := filepath.Join(dir, "noframe")
	if out, err := exec.Command(gcc, "-O2", "-pthread", "../collectors/ebpf/testdata/noframe.c", "-o", bin).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	stripped := bin + "-stripped"
	if out, err := exec.Command(strip, "-o", stripped, bin).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	syms, _ := f.Symbols()
	f.Close()
	want := map[string]elf.Symbol{}
	for _, s := range syms {
		if s.Name == "hash_block" || s.Name == "parse_body" {
			want[s.Name] = s
		}
	}
	if len(want) != 2 {
		t.Fatalf("symbols %v, want hash_block and parse_body", want)
	}
	sf := New(Options{NoLines: true}).File(stripped, "", "")
	names := map[string]string{}
	for fn, sym := range want {
		var got []Frame
		for _, d := range []uint64{0, 4, sym.Size - 1} {
			got = append(got, sf.LookupVaddr(sym.Value+d))
		}
		for i, fr := range got {
			if fr.Known || !fr.InFunc || fr.Name() != got[0].Name() {
				t.Errorf("%s+%d: %+v (name %q), want a nameless frame named as at its start, %q", fn, i, fr, fr.Name(), got[0].Name())
			}
		}
		if !strings.HasPrefix(got[0].Name(), "noframe-stripped+0x") || got[0].FuncOffset != 0 || got[2].FuncOffset != sym.Size-1 {
			t.Errorf("%s: %q, offsets %d and %d", fn, got[0].Name(), got[0].FuncOffset, got[2].FuncOffset)
		}
		names[fn] = got[0].Name()
		t.Logf("%s (at %#x, %d bytes) in the stripped build: %s", fn, sym.Value, sym.Size, got[0].Name())
	}
	if names["hash_block"] == names["parse_body"] {
		t.Errorf("two functions share the name %q", names["hash_block"])
	}
}
