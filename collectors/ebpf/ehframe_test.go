package ebpf

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/profcap/profcap/internal/testreq"
)

// readelfRow is one row of readelf --debug-dump=frames-interp: at code
// address loc, the CFA rule and where RBP is saved ("" if not listed).
type readelfRow struct {
	loc      uint64
	cfa, rbp string
	ra       string
}

func readelfRows(t *testing.T, file string) []readelfRow {
	t.Helper()
	readelf := testreq.Command(t, "readelf")
	out, err := exec.Command(readelf, "--debug-dump=frames-interp", file).Output()
	if err != nil && len(out) == 0 { // it exits 1 on libc (its debuglink) with the tables printed

		t.Fatalf("readelf %s: %v", file, err)
	}
	var rows []readelfRow
	var cols []string
	inFDE := false
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 4 && f[3] == "FDE":
			inFDE = true
			cols = nil
		case len(f) >= 4 && f[3] == "CIE":
			inFDE = false
		case len(f) >= 2 && f[0] == "LOC" && f[1] == "CFA":
			cols = f
		case inFDE && cols != nil && len(f) == len(cols):
			loc, err := strconv.ParseUint(f[0], 16, 64)
			if err != nil {
				continue
			}
			r := readelfRow{loc: loc, cfa: f[1]}
			for i, c := range cols {
				switch c {
				case "rbp":
					r.rbp = f[i]
				case "ra":
					r.ra = f[i]
				}
			}
			rows = append(rows, r)
		}
	}
	return rows
}

// want is what a readelf row says our row must be.
func (r readelfRow) want() (cfa int32, rbp int32, ok bool) {
	switch {
	case r.ra == "u":
		cfa = cfaEnd
	case strings.HasPrefix(r.cfa, "rsp+"):
		n, _ := strconv.Atoi(r.cfa[4:])
		cfa = int32(n)
	case strings.HasPrefix(r.cfa, "rbp+"):
		n, _ := strconv.Atoi(r.cfa[4:])
		cfa = -int32(n)
	case r.cfa == "exp":
		return 0, 0, false // an expression: the PLT's, or not kept
	default:
		return 0, 0, false
	}
	if strings.HasPrefix(r.rbp, "c") {
		n, _ := strconv.Atoi(r.rbp[1:])
		rbp = int32(n)
	}
	if r.ra == "u" {
		rbp = 0
	}
	return cfa, rbp, true
}

// TestCFIRowsMatchReadelf: the rows parsed from real .eh_frame sections
// (a program built as distributions build C, and the system's libc) give,
// at every row readelf interprets, the same CFA rule and the same saved
// RBP; PLT entries get the PLT rule.
func TestCFIRowsMatchReadelf(t *testing.T) {
	gcc := testreq.Command(t, "gcc")
	bin := filepath.Join(t.TempDir(), "noframe")
	if out, err := exec.Command(gcc, "-O2", "-fomit-frame-pointer", "-pthread", "testdata/noframe.c", "-o", bin).CombinedOutput(); err != nil {
		t.Fatalf("building noframe: %v\n%s", err, out)
	}
	files := []string{bin}
	for _, l := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"} {
		if _, err := os.Stat(l); err == nil {
			files = append(files, l)
			break
		}
	}
	for _, file := range files {
		f, err := elf.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := cfiRows(f)
		toOff := textOffset(f)
		var plt *elf.Section
		if s := f.Section(".plt"); s != nil {
			plt = s
		}
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if !sort.SliceIsSorted(rows, func(i, j int) bool { return rows[i].Off < rows[j].Off }) {
			t.Fatalf("%s: rows not sorted", file)
		}
		at := func(off uint64) (cfaRow, bool) {
			i := sort.Search(len(rows), func(i int) bool { return rows[i].Off > off })
			if i == 0 {
				return cfaRow{}, false
			}
			return rows[i-1], true
		}
		ref := readelfRows(t, file)
		var checked, bad, pltRows int
		for _, r := range ref {
			off, ok := toOff(r.loc)
			if !ok {
				continue
			}
			got, ok := at(off)
			if !ok {
				t.Errorf("%s: no row at %#x", file, r.loc)
				continue
			}
			if r.cfa == "exp" && plt != nil && r.loc >= plt.Addr && r.loc < plt.Addr+plt.Size {
				pltRows++
				if got.CFA != cfaPLT {
					t.Errorf("%s: %#x in .plt: CFA %d, want the PLT rule", file, r.loc, got.CFA)
				}
				continue
			}
			cfa, rbp, ok := r.want()
			if !ok {
				continue
			}
			checked++
			if got.CFA != cfa || got.RBP != rbp {
				if bad++; bad <= 10 {
					t.Errorf("%s: at %#x readelf says CFA %s, rbp %q, ra %q; the row says CFA %d, RBP %d", file, r.loc, r.cfa, r.rbp, r.ra, got.CFA, got.RBP)
				}
			}
		}
		t.Logf("%s: %d rows; %d of readelf's checked (%d in .plt), %d differ", filepath.Base(file), len(rows), checked, pltRows, bad)
		if checked < 10 {
			t.Errorf("%s: only %d rows checked", file, checked)
		}
	}
}

// FuzzParseCFI: any .eh_frame bytes give sorted rows or an error, never a
// panic or a hang.
func FuzzParseCFI(f *testing.F) {
	for _, l := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/bin/true"} {
		if ef, err := elf.Open(l); err == nil {
			if s := ef.Section(".eh_frame"); s != nil {
				if b, err := s.Data(); err == nil {
					f.Add(b[:min(len(b), 4096)])
				}
			}
			ef.Close()
		}
	}
	f.Add([]byte{0x14, 0, 0, 0, 0, 0, 0, 0, 1, 'z', 'R', 0, 1, 0x78, 0x10, 1, 0x1b, 0x0c, 7, 8, 0x90, 1, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		rows, err := parseCFI(b, 0x1000, func(v uint64) (uint64, bool) { return v, true })
		if err != nil {
			return
		}
		for i := 1; i < len(rows); i++ {
			if rows[i].Off <= rows[i-1].Off {
				t.Fatalf("rows not strictly sorted at %d: %+v, %+v", i, rows[i-1], rows[i])
			}
		}
	})
}
