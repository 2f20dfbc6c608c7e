package symbolize

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/profcap/profcap/internal/testreq"
)

// gcc compiles testdata/target.c (or src) into dir with extra flags.
func gcc(t *testing.T, dir, name, src string, flags ...string) string {
	t.Helper()
	testreq.Command(t, "gcc")
	if src == "" {
		var err error
		if src, err = filepath.Abs("testdata/target.c"); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, name)
	args := append([]string{"-O1", "-g", "-fno-omit-frame-pointer", "-Wl,--build-id", "-o", bin, src}, flags...)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	testreq.Command(t, name)
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// target runs bin and returns its pid, the addresses it printed, and a
// function that ends it.
func target(t *testing.T, bin string, args ...string) (int, map[string]uint64, func()) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := map[string]uint64{}
	sc := bufio.NewScanner(out)
	for len(addrs) < 5 && sc.Scan() {
		name, a, _ := strings.Cut(sc.Text(), " ")
		v, err := strconv.ParseUint(strings.TrimPrefix(a, "0x"), 16, 64)
		if err != nil {
			t.Fatalf("target printed %q", sc.Text())
		}
		addrs[name] = v
	}
	if len(addrs) < 5 {
		in.Close()
		cmd.Wait()
		t.Fatalf("target printed %v", addrs)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			in.Close()
			io.Copy(io.Discard, out)
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	return cmd.Process.Pid, addrs, stop
}

func TestUserNamesAndLines(t *testing.T) {
	bin := gcc(t, t.TempDir(), "target", "")
	pid, addrs, stop := target(t, bin)
	s := New(Options{})
	if err := s.Snapshot(pid); err != nil {
		t.Fatal(err)
	}
	stop() // the snapshot names the addresses after the process is gone
	pcs := []uint64{addrs["local_spin"] + 4, addrs["exported_work"] + 1, addrs["main"], addrs["malloc"] + 8}
	got := s.User(pid, pcs)
	for i, want := range []string{"local_spin", "exported_work", "main"} {
		if got[i].Function != want || !got[i].Known || got[i].Module != bin {
			t.Errorf("frame %d: %+v, want %s in %s", i, got[i], want, bin)
		}
		if !strings.HasSuffix(got[i].File, "target.c") || got[i].Line == 0 {
			t.Errorf("frame %d: no line from DWARF: %+v", i, got[i])
		}
		if got[i].BuildID == "" {
			t.Errorf("frame %d: no build-id", i)
		}
	}
	// glibc names its malloc "malloc" in .dynsym (with __libc_malloc an
	// alias of it; perf's rules pick the global, shortest-underscored one).
	if got[3].Function != "malloc" || !strings.Contains(got[3].Module, "libc.so") {
		t.Errorf("malloc: %+v", got[3])
	}
	// Offsets are file offsets, as perf script prints them.
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, _ := f.Symbols()
	for _, sym := range syms {
		if sym.Name == "local_spin" {
			for _, p := range f.Progs {
				if p.Type == elf.PT_LOAD && sym.Value >= p.Vaddr && sym.Value < p.Vaddr+p.Memsz {
					if want := sym.Value - p.Vaddr + p.Off + 4; got[0].Offset != want {
						t.Errorf("offset %#x, want %#x", got[0].Offset, want)
					}
				}
			}
		}
	}
	if n := s.Notes(); len(n) != 0 {
		t.Errorf("notes: %q", n)
	}
}

func TestUserNoLines(t *testing.T) {
	bin := gcc(t, t.TempDir(), "target", "")
	pid, addrs, _ := target(t, bin)
	s := New(Options{NoLines: true})
	got := s.User(pid, []uint64{addrs["local_spin"] + 4}) // no Snapshot: User takes one
	if got[0].Function != "local_spin" || got[0].Line != 0 {
		t.Errorf("%+v", got[0])
	}
}

// TestSeparateDebugFiles: a stripped binary named from its debug file,
// found by build-id under DebugDirs, or by .gnu_debuglink (with its CRC
// checked).
func TestSeparateDebugFiles(t *testing.T) {
	testreq.Command(t, "objcopy")
	dir := t.TempDir()
	bin := gcc(t, dir, "target", "")
	id, err := ReadBuildID(bin)
	if err != nil || id == "" {
		t.Fatalf("build-id %q, %v", id, err)
	}
	debug := filepath.Join(dir, "target.debug")
	run(t, "objcopy", "--only-keep-debug", bin, debug)
	run(t, "objcopy", "--strip-all", bin)

	t.Run("build-id", func(t *testing.T) {
		dd := t.TempDir()
		p := filepath.Join(dd, ".build-id", id[:2], id[2:]+".debug")
		os.MkdirAll(filepath.Dir(p), 0o755)
		data, _ := os.ReadFile(debug)
		os.WriteFile(p, data, 0o644)
		pid, addrs, _ := target(t, bin)
		s := New(Options{DebugDirs: []string{dd}})
		got := s.User(pid, []uint64{addrs["local_spin"] + 4})
		if got[0].Function != "local_spin" || got[0].Line == 0 {
			t.Errorf("%+v (notes %q)", got[0], s.Notes())
		}
	})
	t.Run("stripped without it", func(t *testing.T) {
		pid, addrs, _ := target(t, bin)
		s := New(Options{DebugDirs: []string{t.TempDir()}})
		got := s.User(pid, []uint64{addrs["local_spin"] + 4})
		if got[0].Known {
			t.Errorf("%+v", got[0])
		}
		if n := strings.Join(s.Notes(), "\n"); !strings.Contains(n, "stripped") || !strings.Contains(n, id[2:]+".debug") {
			t.Errorf("notes %q", n)
		}
	})
	t.Run("debuglink", func(t *testing.T) {
		d2 := t.TempDir()
		b2 := filepath.Join(d2, "target")
		data, _ := os.ReadFile(bin)
		os.WriteFile(b2, data, 0o755)
		dbg, _ := os.ReadFile(debug)
		os.MkdirAll(filepath.Join(d2, ".debug"), 0o755)
		os.WriteFile(filepath.Join(d2, ".debug", "target.debug"), dbg, 0o644)
		run(t, "objcopy", "--add-gnu-debuglink="+debug, b2)
		pid, addrs, _ := target(t, b2)
		s := New(Options{DebugDirs: []string{t.TempDir()}})
		got := s.User(pid, []uint64{addrs["local_spin"] + 4})
		if got[0].Function != "local_spin" {
			t.Errorf("%+v (notes %q)", got[0], s.Notes())
		}
		// A debug file of another content under that name fails the
		// CRC check and is not used.
		bad := append([]byte(nil), dbg...)
		bad[len(bad)-1] ^= 0xff
		os.WriteFile(filepath.Join(d2, ".debug", "target.debug"), bad, 0o644)
		s = New(Options{DebugDirs: []string{t.TempDir()}})
		got = s.User(pid, []uint64{addrs["local_spin"] + 4})
		if got[0].Known {
			t.Errorf("CRC mismatch, still named: %+v", got[0])
		}
	})
}

// TestMiniDebugInfo builds a binary the way Fedora does (gdb manual,
// "MiniDebugInfo"): .symtab stripped, its function symbols xz-compressed
// into .gnu_debugdata.
func TestMiniDebugInfo(t *testing.T) {
	for _, c := range []string{"objcopy", "strip", "nm", "xz"} {
		testreq.Command(t, c)
	}
	dir := t.TempDir()
	bin := gcc(t, dir, "target", "", "-rdynamic")
	sh := `set -e
nm -D "$1" --format=posix --defined-only | awk '{ print $1 }' | sort > dynsyms
nm "$1" --format=posix --defined-only | awk '{ if ($2 == "T" || $2 == "t" || $2 == "D") print $1 }' | sort > funcsyms
comm -13 dynsyms funcsyms > keep_symbols
objcopy --only-keep-debug "$1" debug
objcopy -S --remove-section .gdb_index --remove-section .comment --keep-symbols=keep_symbols debug mini_debuginfo
strip --strip-all -R .comment "$1"
xz mini_debuginfo
objcopy --add-section .gnu_debugdata=mini_debuginfo.xz "$1"
`
	cmd := exec.Command("sh", "-c", sh, "sh", bin)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	if f.Section(".symtab") != nil || f.Section(".gnu_debugdata") == nil {
		t.Fatal("the binary should have .gnu_debugdata and no .symtab")
	}
	f.Close()
	pid, addrs, _ := target(t, bin)
	s := New(Options{DebugDirs: []string{t.TempDir()}})
	got := s.User(pid, []uint64{addrs["local_spin"] + 4, addrs["exported_work"] + 4})
	if got[0].Function != "local_spin" || got[1].Function != "exported_work" {
		t.Errorf("%+v\nnotes %q", got, s.Notes())
	}
}

// TestLibcDynsymOnly: Debian's libc.so.6 has .dynsym and no .symtab. Its
// exported functions are named; an address in one of its local functions
// is not, and the note says it is not stripped and how to get its symbols.
func TestLibcDynsymOnly(t *testing.T) {
	libc := findLibc(t)
	f, err := elf.Open(libc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Section(".symtab") != nil {
		t.Skipf("%s has a .symtab here (not Debian's)", libc)
	}
	dyn, _ := f.DynamicSymbols()
	var malloc uint64
	for _, s := range dyn {
		if s.Name == "malloc" {
			malloc = s.Value
		}
	}
	gap := textGap(t, f, dyn)
	// perf's build-id cache may hold libc's debug file (perf record copies
	// what it finds): leave it out here.
	s := New(Options{DebugDirs: []string{t.TempDir()}, BuildIDCache: "-"})
	lf := s.File(libc, "", "")
	if fr := lf.LookupVaddr(malloc + 4); fr.Function != "malloc" {
		t.Errorf("malloc: %+v", fr)
	}
	if fr := lf.LookupVaddr(gap); fr.Known {
		t.Errorf("gap %#x named %q", gap, fr.Function)
	}
	n := strings.Join(s.Notes(), "\n")
	for _, want := range []string{".dynsym but no .symtab", "not stripped", "libc6-dbg", "debuginfod"} {
		if !strings.Contains(n, want) {
			t.Errorf("notes %q lack %q", n, want)
		}
	}
	if strings.Contains(n, "in stripped executables") {
		t.Errorf("libc called stripped: %q", n)
	}
}

func findLibc(t *testing.T) string {
	for _, p := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6", "/usr/lib64/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	testreq.Missing(t, "libc.so.6")
	return ""
}

// textGap finds an address in .text that no .dynsym function covers.
func textGap(t *testing.T, f *elf.File, dyn []elf.Symbol) uint64 {
	text := f.Section(".text")
	cover := func(a uint64) bool {
		for _, s := range dyn {
			if elf.ST_TYPE(s.Info) == elf.STT_FUNC && a >= s.Value && a < s.Value+max(s.Size, 1) {
				return true
			}
		}
		return false
	}
	for a := text.Addr + 0x1000; a < text.Addr+text.Size; a += 0x40 {
		if !cover(a) && !cover(a+0x40) {
			return a
		}
	}
	t.Fatal("no gap in libc's .text")
	return 0
}

func TestRustBinaries(t *testing.T) {
	dir := filepath.Join(os.Getenv("HOME"), ".cache", "profcap", "rust", "bin")
	if c := os.Getenv("PROFCAP_CACHE"); c != "" {
		dir = filepath.Join(c, "rust", "bin")
	}
	release := filepath.Join(dir, "refsvc-release")
	stripped := filepath.Join(dir, "refsvc-stripped")
	for _, p := range []string{release, stripped} {
		if _, err := os.Stat(p); err != nil {
			testreq.Missing(t, "%s (scripts/rust-build.sh builds it)", p)
		}
	}
	f, err := elf.Open(release)
	if err != nil {
		t.Fatal(err)
	}
	syms, _ := f.Symbols()
	f.Close()
	var legacy, v0 *elf.Symbol
	for i, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Size < 16 {
			continue
		}
		if legacy == nil && strings.HasPrefix(s.Name, "_ZN6refsvc") && strings.Contains(s.Name, "17h") {
			legacy = &syms[i]
		}
		if v0 == nil && strings.HasPrefix(s.Name, "_R") {
			v0 = &syms[i]
		}
	}
	if legacy == nil {
		t.Fatal("no refsvc:: function in refsvc-release")
	}
	s := New(Options{NoLines: true})
	fr := s.File(release, "", "").LookupVaddr(legacy.Value + 4)
	if !strings.HasPrefix(fr.Function, "refsvc::") || strings.Contains(fr.Function, "::h") || strings.Contains(fr.Function, "17h") {
		t.Errorf("%s demangled to %q", legacy.Name, fr.Function)
	}
	if v0 != nil {
		if got := Demangle(v0.Name); got == v0.Name || strings.HasPrefix(got, "_R") {
			t.Errorf("v0 %s demangled to %q", v0.Name, got)
		}
	}
	// The stripped build names nothing of its own, and says why.
	sf := s.File(stripped, "", "")
	if fr := sf.LookupVaddr(sf.Base() + 0x10000); fr.Known && !strings.Contains(fr.Function, "@plt") {
		// .dynsym of a Rust binary holds the few symbols it exports.
		t.Logf("stripped binary names %q at +0x10000", fr.Function)
	}
	n := strings.Join(s.Notes(), "\n")
	if !strings.Contains(n, "refsvc-stripped") || !(strings.Contains(n, "is stripped") || strings.Contains(n, "no .symtab")) {
		t.Errorf("notes %q", n)
	}
	if strings.Contains(n, "strip = false") == false && strings.Contains(n, "stripped executables") {
		t.Errorf("the stripped note gives no fix: %q", n)
	}
}

func TestDemangle(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"main", "main"},
		{"_ZN2ns1WIdE3runERSt6vectorIdSaIdEE", "ns::W<double>::run"},
		{"_Z3fooi.constprop.0", "foo"},
		{"_ZN6refsvc7handler4spin17h0123456789abcdefE", "refsvc::handler::spin"},
		{"_RNvCs1234_7mycrate3foo", "mycrate::foo"},
		{"_ZN3std2rt10lang_start28_$u7b$$u7b$closure$u7d$$u7d$17h8e8b4f1f2c3d4a5bE", "std::rt::lang_start::{{closure}}"},
		// Legacy identifiers have no "_" separator after their length
		// (ianlancetaylor/demangle drops the first "_" of this one).
		{"_ZN3std3sys9backtrace28__rust_begin_short_backtrace17h0123456789abcdefE", "std::sys::backtrace::__rust_begin_short_backtrace"},
		{"_ZN4core3ptr85drop_in_place$LT$std..rt..lang_start$LT$$LP$$RP$$GT$..$u7b$$u7b$closure$u7d$$u7d$$GT$17h0123456789abcdefE.llvm.12345", "core::ptr::drop_in_place<std::rt::lang_start<()>::{{closure}}>"},
		// Fewer than 5 distinct hex digits: not a Rust hash, so C++.
		{"_ZN3foo3bar17h0000000000000000E", "foo::bar::h0000000000000000"},
	} {
		if got := Demangle(tc.in); got != tc.want {
			t.Errorf("Demangle(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestDemangleMatchesCxxfilt checks C++ names against binutils' c++filt
// with --no-params (the libiberty demangler perf uses), over every symbol
// of a small C++ program using the standard library.
func TestDemangleMatchesCxxfilt(t *testing.T) {
	testreq.Command(t, "g++")
	cxxfilt := testreq.Command(t, "c++filt")
	dir := t.TempDir()
	src := filepath.Join(dir, "c.cpp")
	os.WriteFile(src, []byte(`#include <vector>
#include <map>
#include <string>
#include <cstdio>
namespace ns { template<class T> struct W { __attribute__((noinline)) T run(std::vector<T>& v) const { T s=0; for (auto x: v) s+=x; return s; } }; }
namespace { __attribute__((noinline)) int anon(int x) { return x*3; } }
int main(int argc, char**) { std::vector<double> v(100, 1.5); ns::W<double> w; std::map<std::string,int> m; m["a"]=anon(argc); printf("%f %d\n", w.run(v), m["a"]); }
`), 0o644)
	bin := filepath.Join(dir, "c")
	if out, err := exec.Command("g++", "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	syms, _ := f.Symbols()
	f.Close()
	var names []string
	for _, s := range syms {
		if strings.HasPrefix(s.Name, "_Z") {
			names = append(names, s.Name)
		}
	}
	if len(names) < 10 {
		t.Fatalf("only %d C++ symbols", len(names))
	}
	cmd := exec.Command(cxxfilt, "-p")
	cmd.Stdin = strings.NewReader(strings.Join(names, "\n") + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	bad := 0
	for i, n := range names {
		if got := Demangle(n); got != want[i] {
			bad++
			t.Errorf("Demangle(%q) = %q, c++filt -p says %q", n, got, want[i])
		}
	}
	t.Logf("%d names compared, %d differ", len(names), bad)
}

func TestKernel(t *testing.T) {
	data, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		testreq.Missing(t, "/proc/kallsyms")
	}
	var addr uint64
	for _, line := range strings.Split(string(data), "\n") {
		k, err := ParseKallsymsLine([]byte(line))
		if err == nil && k.Name == "schedule" && (k.Type == 'T' || k.Type == 't') {
			addr = k.Addr
		}
	}
	if addr == 0 {
		testreq.Root(t, "kallsyms hides addresses from this user (kptr_restrict)")
		t.Fatal("no schedule in /proc/kallsyms")
	}
	s := New(Options{})
	fr := s.Kernel([]uint64{addr + 4})
	if fr[0].Function != "schedule" || fr[0].Module != KernelModule || !fr[0].Known {
		t.Errorf("%+v", fr[0])
	}
	// A file whose addresses are all 0 (kptr_restrict) says so.
	hidden := filepath.Join(t.TempDir(), "kallsyms")
	os.WriteFile(hidden, []byte("0000000000000000 T schedule\n0000000000000000 t foo\n"), 0o644)
	s = New(Options{Kallsyms: hidden})
	if fr := s.Kernel([]uint64{addr}); fr[0].Known {
		t.Errorf("%+v", fr[0])
	}
	if n := strings.Join(s.Notes(), "\n"); !strings.Contains(n, "kptr_restrict") {
		t.Errorf("notes %q", n)
	}
}

// TestKallsymsRules checks perf's rules on a made-up kallsyms: the best of
// several symbols at one address, unsized symbols running to the next, a
// module's symbols named with their module.
func TestKallsymsRules(t *testing.T) {
	k := filepath.Join(t.TempDir(), "kallsyms")
	os.WriteFile(k, []byte(`ffffffff81000000 T _stext
ffffffff81000000 t __alias
ffffffff81000000 T text_start
ffffffff81000100 W weak_fn
ffffffff81000100 t strong_local
ffffffff81000200 T last_core
ffffffffc0000000 t mod_fn	[mymod]
ffffffffc0000040 T mod_fn2	[mymod]
`), 0o644)
	s := New(Options{Kallsyms: k})
	got := s.Kernel([]uint64{0xffffffff81000010, 0xffffffff81000110, 0xffffffff81000300, 0xffffffffc0000010, 0xffffffffc0000050, 0xffffffff80000000})
	want := []struct{ name, mod string }{
		{"text_start", KernelModule}, // global beats local; fewer leading underscores; longer name
		{"weak_fn", KernelModule},    // kallsyms 'W' is weak, but 't' is local: weak loses to non-weak... see below
		{"last_core", KernelModule},
		{"mod_fn", "[mymod]"},
		{"mod_fn2", "[mymod]"},
		{"", KernelModule},
	}
	// perf: a weak symbol loses to a non-weak one, whatever its binding.
	want[1].name = "strong_local"
	for i, w := range want {
		if got[i].Function != w.name || got[i].Module != w.mod {
			t.Errorf("%#x: got %q in %q, want %q in %q", got[i].Offset, got[i].Function, got[i].Module, w.name, w.mod)
		}
	}
}

func TestVDSO(t *testing.T) {
	s := New(Options{})
	v := s.VDSO()
	if p := v.Problem(); p != "" {
		t.Skipf("no vDSO here: %s", p)
	}
	fr := v.LookupVaddr(v.o.syms[0].start)
	if !fr.Known || !strings.Contains(fr.Function, "vdso") && !strings.Contains(fr.Function, "clock") && !strings.Contains(fr.Function, "time") {
		t.Errorf("vdso: %+v", fr)
	}
}

// TestJIT: anonymous executable memory is named from a perf map or a
// jitdump; without either, the note names the flag for the runtime.
func TestJIT(t *testing.T) {
	bin := gcc(t, t.TempDir(), "target", "")
	t.Run("no map, poses as node", func(t *testing.T) {
		pid, addrs, _ := target(t, bin, "node")
		s := New(Options{PerfMapDir: t.TempDir()})
		fr := s.User(pid, []uint64{addrs["jit"] + 16})
		if fr[0].Known || fr[0].Module != fmt.Sprintf("/tmp/perf-%d.map", pid) {
			t.Errorf("%+v", fr[0])
		}
		if n := strings.Join(s.Notes(), "\n"); !strings.Contains(n, "--perf-basic-prof") || !strings.Contains(n, "node") {
			t.Errorf("notes %q", n)
		}
	})
	t.Run("perf map", func(t *testing.T) {
		pid, addrs, _ := target(t, bin, "python3")
		path := fmt.Sprintf("/tmp/perf-%d.map", pid)
		os.WriteFile(path, []byte(fmt.Sprintf("%x 20 py::first:/app/a.py\n%x 40 py::handle request:/app/b.py\n", addrs["jit"], addrs["jit"]+0x20)), 0o644)
		defer os.Remove(path)
		s := New(Options{})
		if err := s.Snapshot(pid); err != nil {
			t.Fatal(err)
		}
		fr := s.User(pid, []uint64{addrs["jit"] + 4, addrs["jit"] + 0x30, addrs["jit"] + 0x100})
		if fr[0].Function != "py::first:/app/a.py" || fr[1].Function != "py::handle request:/app/b.py" || fr[2].Known {
			t.Errorf("%+v", fr)
		}
		if fr[0].Module != path {
			t.Errorf("module %q", fr[0].Module)
		}
		if pm := s.PerfMap(pid, []uint64{addrs["jit"] + 0x21}); pm[0].Function != "py::handle request:/app/b.py" {
			t.Errorf("PerfMap: %+v", pm[0])
		}
		if n := strings.Join(s.Notes(), "\n"); !strings.Contains(n, "lacks them") {
			t.Errorf("notes %q", n)
		}
	})
	t.Run("jitdump", func(t *testing.T) {
		pid, addrs, _ := target(t, bin, "bun")
		dir := t.TempDir()
		dump := jitDump(addrs["jit"], []jitRec{{0, 0x40, "JS: handler", "/app/x.js", 12}, {0x40, 0x40, "JS: other", "", 0}})
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("jit-%d.dump", pid)), dump, 0o644)
		s := New(Options{PerfMapDir: dir})
		fr := s.User(pid, []uint64{addrs["jit"] + 8, addrs["jit"] + 0x48})
		if fr[0].Function != "JS: handler" || fr[0].File != "/app/x.js" || fr[0].Line != 12 || fr[1].Function != "JS: other" {
			t.Errorf("%+v", fr)
		}
	})
}

type jitRec struct {
	off, size  uint64
	name, file string
	line       int
}

// jitDump writes a jitdump: header, then for each record an optional debug
// info record and a code load with size bytes of code.
func jitDump(base uint64, recs []jitRec) []byte {
	le := func(b []byte, v uint64, n int) []byte {
		for i := 0; i < n; i++ {
			b = append(b, byte(v>>(8*i)))
		}
		return b
	}
	var out []byte
	out = le(out, jitMagic, 4)
	out = le(out, 1, 4)
	out = le(out, jitHeaderSize, 4)
	out = le(out, 62, 4)
	out = le(out, 0, 4)
	out = le(out, 1, 4)
	out = le(out, 0, 8)
	out = le(out, 0, 8)
	for i, r := range recs {
		addr := base + r.off
		if r.file != "" {
			body := le(nil, addr, 8)
			body = le(body, 1, 8)
			body = le(body, addr, 8)
			body = le(body, uint64(r.line), 4)
			body = le(body, 0, 4)
			body = append(append(body, r.file...), 0)
			out = le(out, jitCodeDebugInfo, 4)
			out = le(out, uint64(jitPrefixSize+len(body)), 4)
			out = le(out, 0, 8)
			out = append(out, body...)
		}
		body := le(nil, 1, 4)
		body = le(body, 1, 4)
		body = le(body, addr, 8)
		body = le(body, addr, 8)
		body = le(body, r.size, 8)
		body = le(body, uint64(i), 8)
		body = append(append(body, r.name...), 0)
		body = append(body, make([]byte, r.size)...)
		out = le(out, jitCodeLoad, 4)
		out = le(out, uint64(jitPrefixSize+len(body)), 4)
		out = le(out, 0, 8)
		out = append(out, body...)
	}
	return out
}

func TestParseMaps(t *testing.T) {
	m := ParseMaps([]byte(`55d0c0a00000-55d0c0a01000 r--p 00000000 fe:00 123 /usr/bin/app
55d0c0a01000-55d0c0a05000 r-xp 00001000 fe:00 123 /usr/bin/app
7f0000000000-7f0000001000 rwxp 00000000 00:00 0 
7f0000100000-7f0000200000 r-xp 00010000 fe:00 99 /opt/lib/libx.so (deleted)
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
bad line
`))
	if len(m) != 5 {
		t.Fatalf("%+v", m)
	}
	if !m[1].Exec || m[1].Offset != 0x1000 || m[1].Path != "/usr/bin/app" || m[0].Exec {
		t.Errorf("%+v", m[:2])
	}
	if m[2].Path != "" || !m[2].Exec {
		t.Errorf("anon: %+v", m[2])
	}
	if !m[3].Deleted || m[3].Path != "/opt/lib/libx.so" {
		t.Errorf("deleted: %+v", m[3])
	}
	if m[4].Path != "[vdso]" {
		t.Errorf("vdso: %+v", m[4])
	}
}

func TestConcurrent(t *testing.T) {
	bin := gcc(t, t.TempDir(), "target", "")
	pid, addrs, _ := target(t, bin)
	s := New(Options{})
	done := make(chan []Frame)
	for i := 0; i < 8; i++ {
		go func() {
			s.Snapshot(pid)
			done <- s.User(pid, []uint64{addrs["local_spin"] + 4, addrs["malloc"] + 4})
		}()
	}
	for i := 0; i < 8; i++ {
		if fr := <-done; fr[0].Function != "local_spin" || fr[1].Function != "malloc" {
			t.Errorf("%+v", fr)
		}
	}
}

// TestPLT: calls through the PLT are named name@plt, by the relocation each
// entry jumps through (what objdump -d shows too).
func TestPLT(t *testing.T) {
	testreq.Command(t, "objdump")
	for _, flags := range [][]string{nil, {"-fcf-protection=full"}} { // lazy .plt; .plt.sec with IBT
		bin := gcc(t, t.TempDir(), "target", "", flags...)
		out, err := exec.Command("objdump", "-d", "-j", ".plt", "-j", ".plt.sec", bin).Output()
		if err != nil {
			t.Fatal(err)
		}
		// "0000000000001030 <malloc@plt>:"
		found := 0
		s := New(Options{NoLines: true, BuildIDCache: "-"})
		f := s.File(bin, "", "")
		for _, line := range strings.Split(string(out), "\n") {
			addr, name, ok := strings.Cut(strings.TrimSuffix(line, ">:"), " <")
			if !ok || !strings.HasSuffix(name, "@plt") {
				continue
			}
			v, err := strconv.ParseUint(addr, 16, 64)
			if err != nil {
				continue
			}
			found++
			if fr := f.LookupVaddr(v + 4); fr.Function != name {
				t.Errorf("%v: %#x: %q, objdump says %q", flags, v+4, fr.Function, name)
			}
		}
		if found == 0 {
			t.Errorf("%v: objdump shows no PLT entries:\n%s", flags, out)
		}
	}
}
