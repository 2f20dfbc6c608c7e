package symbolize

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Notes says what stayed unnamed and why, with the fix: one sentence per
// file, process or kernel whose frames were asked for and not all named.
func (s *Symbolizer) Notes() []string {
	s.mu.Lock()
	objs := make([]*object, 0, len(s.objects)+1)
	for _, o := range s.objects {
		objs = append(objs, o)
	}
	if s.vdso != nil {
		objs = append(objs, s.vdso)
	}
	procs := make([]*process, 0, len(s.procs))
	for _, p := range s.procs {
		procs = append(procs, p)
	}
	s.mu.Unlock()

	var notes []string
	for _, o := range objs {
		asked, named := o.asked.Load(), o.named.Load()
		if asked == 0 || named == asked {
			continue
		}
		if n := s.objectNote(o, asked, named); n != "" {
			notes = append(notes, n)
		}
	}
	for _, p := range procs {
		asked, named := p.jitAsked.Load(), p.jitNamed.Load()
		if asked > named {
			notes = append(notes, JITNote(p.pid, p.comm, p.exe, asked-named, asked, p.perfMap != nil && p.perfMap.table != nil || p.jitDump != nil && p.jitDump.table != nil))
		}
		if n := p.noMapAsked.Load(); n > 0 {
			notes = append(notes, fmt.Sprintf("pid %d: %d addresses outside every mapping recorded (it loaded or unloaded code after the snapshot, or exited before it)", p.pid, n))
		}
	}
	if s.kernel != nil {
		if un := s.kernelUnnamed.Load(); un > 0 {
			if s.kernel.problem != "" {
				notes = append(notes, fmt.Sprintf("%d kernel frames unnamed: %s", un, s.kernel.problem))
			} else {
				notes = append(notes, fmt.Sprintf("%d kernel frames at addresses %s has no symbol for (code loaded and unloaded since, such as BPF programs)", un, s.opt.Kallsyms))
			}
		}
	}
	slices.Sort(notes)
	return notes
}

func (s *Symbolizer) objectNote(o *object, asked, named int64) string {
	name := filepath.Base(o.path)
	un := asked - named
	frames := fmt.Sprintf("%d of %d frames", un, asked)
	switch {
	case o.stripped:
		return fmt.Sprintf("%s: %s unnamed: %s is stripped (no .symtab; its .dynsym names only what it imports or exports); %s", name, frames, o.path, strippedFix(o))
	case o.problem != "":
		return fmt.Sprintf("%s: %s unnamed: %s", name, frames, o.problem)
	case o.source == ".dynsym" || o.source == ".gnu_debugdata + .dynsym":
		what := "has .dynsym but no .symtab"
		if o.source != ".dynsym" {
			what = "has only MiniDebugInfo (.gnu_debugdata) and .dynsym"
		}
		msg := fmt.Sprintf("%s: %s unnamed: %s %s, so only its exported functions have names (it is not stripped: its local functions' symbols were moved to a separate debug file); %s", name, frames, o.path, what, debugFix(o))
		if o.debugCRCBad != "" {
			msg += fmt.Sprintf(" (%s is there but its CRC does not match the .gnu_debuglink: it belongs to another build)", o.debugCRCBad)
		}
		return msg
	default:
		// Symbols read, yet addresses outside every function: code
		// without symbols (hand-written assembly, padding) or a file
		// replaced without a build-id to tell.
		return fmt.Sprintf("%s: %s fall outside every function of its %s", name, frames, o.source)
	}
}

// debugFix says how to get the separate debug file of o.
func debugFix(o *object) string {
	where := "/usr/lib/debug/.build-id/"
	if len(o.buildID) > 2 {
		where += o.buildID[:2] + "/" + o.buildID[2:] + ".debug"
	} else {
		where += "xx/yyyy.debug"
	}
	pkg := packageHint(o.path)
	debuginfod := "debuginfod (DEBUGINFOD_URLS=https://debuginfod.debian.net debuginfod-find debuginfo " + cmpOr(o.buildID, "BUILD-ID") + ")"
	if pkg != "" {
		return fmt.Sprintf("install its debug symbols (%s) or fetch them with %s; they go to %s", pkg, debuginfod, where)
	}
	return fmt.Sprintf("install its debug symbols (Debian/Ubuntu: the package's -dbgsym package; Fedora: dnf debuginfo-install) or fetch them with %s; they go to %s", debuginfod, where)
}

func strippedFix(o *object) string {
	return fmt.Sprintf("profile a build that keeps symbols (Rust: strip = false in [profile.release]; C/C++: without -s or strip), or put its separate debug file at /usr/lib/debug/.build-id/%s", buildIDPath(o.buildID))
}

func buildIDPath(id string) string {
	if len(id) > 2 {
		return id[:2] + "/" + id[2:] + ".debug"
	}
	return "xx/yyyy.debug"
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// packageHint names the debug package for a file owned by a Debian or RPM
// package: "Debian: apt-get install libc6-dbg".
func packageHint(path string) string {
	if p, err := exec.LookPath("dpkg-query"); err == nil {
		for _, cand := range []string{path, strings.TrimPrefix(path, "/usr")} {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			out, err := exec.CommandContext(ctx, p, "-S", cand).Output()
			cancel()
			if err != nil {
				continue
			}
			pkg, _, ok := strings.Cut(strings.TrimSpace(string(out)), ":")
			if !ok || pkg == "" || strings.ContainsAny(pkg, " ,") {
				continue
			}
			dbg := pkg + "-dbgsym"
			if pkg == "libc6" {
				dbg = "libc6-dbg" // glibc ships its own -dbg package in main
			}
			return fmt.Sprintf("Debian/Ubuntu: apt-get install %s, from the debug archive for -dbgsym packages", dbg)
		}
	}
	if p, err := exec.LookPath("rpm"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		out, err := exec.CommandContext(ctx, p, "-qf", "--qf", "%{NAME}", path).Output()
		cancel()
		if err == nil && len(out) > 0 && !strings.Contains(string(out), " ") {
			return fmt.Sprintf("Fedora/RHEL: dnf debuginfo-install %s", out)
		}
	}
	return ""
}

// JITNote explains JIT frames left unnamed in process pid (comm, exe as
// known): the flag that makes the runtime write a perf map or jitdump.
// haveMap says a perf map or jitdump was read (and lacked the addresses).
func JITNote(pid int, comm, exe string, unnamed, asked int64, haveMap bool) string {
	rt := runtimeOf(comm, exe)
	what := fmt.Sprintf("pid %d (%s): %d of %d frames in JIT-compiled code unnamed", pid, cmpOr(comm, filepath.Base(exe)), unnamed, asked)
	if haveMap {
		return what + fmt.Sprintf(": /tmp/perf-%d.map lacks them (code compiled after it was read, or the runtime writes only some functions)", pid)
	}
	return what + fmt.Sprintf(": no /tmp/perf-%d.map or jit-%d.dump; %s", pid, pid, jitFlag(rt))
}

func runtimeOf(comm, exe string) string {
	for _, n := range []string{filepath.Base(exe), comm} {
		n = strings.ToLower(n)
		switch {
		case strings.HasPrefix(n, "node") || n == "nodejs":
			return "node"
		case strings.HasPrefix(n, "deno"):
			return "deno"
		case strings.HasPrefix(n, "bun"):
			return "bun"
		case strings.HasPrefix(n, "python") || strings.HasPrefix(n, "pypy"):
			return "python"
		case n == "java" || strings.HasPrefix(n, "java"):
			return "java"
		case strings.HasPrefix(n, "dotnet"):
			return "dotnet"
		}
	}
	return ""
}

func jitFlag(rt string) string {
	switch rt {
	case "node":
		return "start node with --perf-basic-prof (or --perf-basic-prof-only-functions) so it writes one"
	case "deno":
		return "start deno with --v8-flags=--perf-basic-prof so it writes one"
	case "bun":
		return "start bun with BUN_JSC_logJITCodeForPerf=1 in its environment so it writes a jitdump"
	case "python":
		return "start Python 3.12+ with -X perf (or PYTHONPERFSUPPORT=1) so it writes one"
	case "java":
		return "start java with -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit, or attach perf-map-agent"
	case "dotnet":
		return "start it with DOTNET_PerfMapEnabled=1"
	}
	return "make the runtime write a perf map (Node: --perf-basic-prof; Python 3.12+: -X perf; Bun: BUN_JSC_logJITCodeForPerf=1; .NET: DOTNET_PerfMapEnabled=1)"
}
