package ebpf

import (
	"debug/elf"
	"os"
	"reflect"
	"testing"
)

//go:noinline
func leafAdd(a, b int) int { return a*3 + b }

// The test binary is a Go executable: a leaf without a frame has the
// return address at SP all through; a function with a frame at its entry
// only.
func TestGoSPRows(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		t.Skip("a position-independent test binary: its run-time addresses are not its file's")
	}
	rows, err := goSPRows(f)
	if err != nil {
		t.Fatal(err)
	}
	var text *elf.Prog
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 {
			text = p
		}
	}
	at := func(v uint64) int32 {
		off := v - text.Vaddr + text.Off
		var c int32
		for _, r := range rows {
			if r.Off > off {
				break
			}
			c = r.CFA
		}
		return c
	}
	t.Logf("%d rows", len(rows))
	_ = leafAdd(1, 2)
	leaf := uint64(reflect.ValueOf(leafAdd).Pointer())
	framed := uint64(reflect.ValueOf(pclnSPRows).Pointer())
	if c := at(leaf + 2); c != 8 {
		t.Errorf("leafAdd (no frame): cfa %d after its entry, want 8", c)
	}
	if c := at(framed); c != 8 {
		t.Errorf("pclnSPRows: cfa %d at its entry, want 8", c)
	}
	if c := at(framed + 200); c != 0 {
		t.Errorf("pclnSPRows: cfa %d in its body, want 0 (a frame pointer)", c)
	}
}

func FuzzPclnSPRows(f *testing.F) {
	exe, _ := os.Executable()
	if ef, err := elf.Open(exe); err == nil {
		if sec := ef.Section(".gopclntab"); sec != nil {
			if b, err := sec.Data(); err == nil && len(b) > 4096 {
				f.Add(b[:4096])
			}
		}
		ef.Close()
	}
	f.Add([]byte{0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8})
	f.Fuzz(func(t *testing.T, b []byte) {
		rows, err := pclnSPRows(b, 0x401000, func(v uint64) (uint64, bool) { return v, true })
		if err == nil {
			for i := 1; i < len(rows); i++ {
				if rows[i].Off <= rows[i-1].Off {
					t.Fatalf("rows out of order at %d", i)
				}
			}
		}
	})
}
