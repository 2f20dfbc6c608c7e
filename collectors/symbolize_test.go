package collectors

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/profcap/profcap/formats/firefox"
	"github.com/profcap/profcap/internal/testreq"
)

// buildSymDemo compiles testdata/samply/perf-demo-program.c (the program the
// perf fixtures were recorded from) with extra gcc flags.
func buildSymDemo(t *testing.T, name string, flags ...string) string {
	t.Helper()
	testreq.Command(t, "gcc")
	src, err := filepath.Abs("testdata/samply/perf-demo-program.c")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), name)
	args := append([]string{"-O1", "-g", "-pthread", "-Wl,--build-id", "-o", bin, src}, flags...)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

// relAddrs returns, for the named functions of bin, an address 4 bytes into
// each, relative to the first PT_LOAD's vaddr, and the file's build-id.
func relAddrs(t *testing.T, bin string, names ...string) (map[string]uint64, string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var base uint64
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			base = p.Vaddr
			break
		}
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, s := range syms {
		for _, n := range names {
			if s.Name == n && s.Value != 0 {
				out[n] = s.Value - base + 4
			}
		}
	}
	if len(out) != len(names) {
		t.Fatalf("found %v of %v in %s", out, names, bin)
	}
	return out, buildID(f)
}

// handMadeProfile writes a processed-format profile (v49 layout, one
// thread) whose frames are bin's addresses, unsymbolicated as samply
// leaves them. stacks are root-first function names.
func handMadeProfile(t *testing.T, lib firefox.Lib, addr map[string]uint64, stacks [][]string) []byte {
	t.Helper()
	type col = []any
	strs := []any{lib.Name}
	funcName, funcRes, frameFunc, frameAddr := col{}, col{}, col{}, col{}
	frameOf := map[string]int{}
	stackFrame, stackPrefix := col{}, col{}
	stackOf := map[string]int{}
	var samples col
	for _, st := range stacks {
		prefix := any(nil)
		key := ""
		for _, fn := range st {
			if _, ok := frameOf[fn]; !ok {
				frameOf[fn] = len(frameFunc)
				strs = append(strs, fmt.Sprintf("0x%x", addr[fn]))
				funcName = append(funcName, len(strs)-1)
				funcRes = append(funcRes, 0)
				frameFunc = append(frameFunc, len(frameFunc))
				frameAddr = append(frameAddr, addr[fn])
			}
			key += ";" + fn
			if _, ok := stackOf[key]; !ok {
				stackOf[key] = len(stackFrame)
				stackFrame = append(stackFrame, frameOf[fn])
				stackPrefix = append(stackPrefix, prefix)
			}
			prefix = stackOf[key]
		}
		samples = append(samples, prefix)
	}
	p := map[string]any{
		"meta": map[string]any{"interval": 1, "startTime": 1.7e12, "preprocessedProfileVersion": 49, "symbolicated": false, "sampleUnits": map[string]any{"time": "ms", "eventDelay": "ms", "threadCPUDelta": "µs"}},
		"libs": []any{lib},
		"threads": []any{map[string]any{
			"name": "demo", "tid": "42", "pid": "42", "processName": "demo",
			"stringArray":   strs,
			"resourceTable": map[string]any{"length": 1, "lib": col{0}, "name": col{0}, "host": col{nil}, "type": col{1}},
			"funcTable":     map[string]any{"length": len(funcName), "name": funcName, "resource": funcRes},
			"frameTable":    map[string]any{"length": len(frameFunc), "func": frameFunc, "address": frameAddr},
			"stackTable":    map[string]any{"length": len(stackFrame), "frame": stackFrame, "prefix": stackPrefix},
			"samples":       map[string]any{"length": len(samples), "stack": samples, "weight": nil, "weightType": "samples"},
		}},
	}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func foldedOf(t *testing.T, data []byte, sym *ELFSymbolizer) string {
	t.Helper()
	p, err := firefox.Parse(strings.NewReader(string(data)), firefox.Options{Symbolize: sym.Symbolize})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, s := range p.Sample {
		var fr []string
		for i := len(s.Location) - 1; i >= 0; i-- {
			fr = append(fr, s.Location[i].Line[0].Function.Name)
		}
		lines = append(lines, fmt.Sprintf("%s %d", strings.Join(fr, ";"), s.Value[0]))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

var demoStacks = [][]string{{"main", "spin"}, {"main", "spin"}, {"worker", "spin"}, {"worker", "nap"}}

func TestSymbolizeDemoBinary(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"pie", []string{"-pie", "-fPIE"}},
		{"nopie", []string{"-no-pie", "-fno-PIE"}}, // first PT_LOAD at 0x400000
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := buildSymDemo(t, "demo-"+tc.name, tc.flags...)
			addr, id := relAddrs(t, bin, "main", "spin", "worker", "nap")
			if id == "" {
				t.Fatal("no build-id in the demo binary")
			}
			lib := firefox.Lib{Name: filepath.Base(bin), Path: bin, DebugName: filepath.Base(bin), DebugPath: bin, CodeID: id}
			sym := NewELFSymbolizer(0)
			got := foldedOf(t, handMadeProfile(t, lib, addr, demoStacks), sym)
			if want := "main;spin 2\nworker;nap 1\nworker;spin 1"; got != want {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
			if n := sym.Notes(); n != "" {
				t.Errorf("notes %q", n)
			}
		})
	}
}

// TestSymbolizeFindsMappedFile: a library the profile names only by its
// base name is found through /proc/PID/maps.
func TestSymbolizeFindsMappedFile(t *testing.T) {
	bin := buildSymDemo(t, "demo-mapped")
	addr, id := relAddrs(t, bin, "main", "spin", "worker", "nap")
	cmd := exec.Command(bin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// The binary is mapped once the child has exec'd it.
	maps := fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid)
	for i := 0; i < 200; i++ {
		if b, _ := os.ReadFile(maps); strings.Contains(string(b), bin) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	sym := NewELFSymbolizer(cmd.Process.Pid)
	lib := firefox.Lib{Name: filepath.Base(bin), CodeID: strings.ToUpper(id)}
	// Path left out on purpose; DebugPath too.
	got := foldedOf(t, handMadeProfile(t, lib, addr, demoStacks), sym)
	if !strings.Contains(got, "main;spin 2") {
		t.Errorf("got\n%s (notes %q)", got, sym.Notes())
	}
}

func TestSymbolizeProblems(t *testing.T) {
	bin := buildSymDemo(t, "demo")
	addr, id := relAddrs(t, bin, "main", "spin", "worker", "nap")
	stripped := buildSymDemo(t, "demo-stripped", "-s")
	for _, tc := range []struct {
		name string
		lib  firefox.Lib
		note string
	}{
		{"stripped", firefox.Lib{Name: "demo-stripped", Path: stripped}, "stripped executables"},
		{"gone", firefox.Lib{Name: "demo", Path: filepath.Join(t.TempDir(), "gone", "demo")}, "file gone"},
		{"replaced", firefox.Lib{Name: "demo", Path: bin, CodeID: "00112233445566778899aabbccddeeff00112233"}, "another build-id"},
		{"kernel", firefox.Lib{Name: "[kernel.kallsyms]", Path: "[kernel.kallsyms]"}, "kernel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_ = id
			sym := NewELFSymbolizer(0)
			got := foldedOf(t, handMadeProfile(t, tc.lib, addr, demoStacks), sym)
			if !strings.Contains(got, tc.lib.Name+"+0x") {
				t.Errorf("frames should stay LIB+0xADDR:\n%s", got)
			}
			if n := sym.Notes(); !strings.Contains(n, tc.note) || !strings.Contains(n, tc.lib.Name) {
				t.Errorf("notes %q, want %q", n, tc.note)
			}
		})
	}
	if got := normBuildID("F61DA4D57CBB38CA8BDF059C64583452"); got != "f61da4d57cbb38ca8bdf059c64583452" {
		t.Errorf("normBuildID %q", got)
	}
}
