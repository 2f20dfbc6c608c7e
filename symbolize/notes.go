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
// kind of problem (stripped executables, libraries with only .dynsym, files
// gone, …) naming the files and their unnamed frames, then one per process
// with unnamed JIT code, and the kernel's.
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
	slices.SortFunc(objs, func(a, b *object) int { return strings.Compare(a.path, b.path) })

	var stripped, dynOnly, other []*object
	var notes []string
	for _, o := range objs {
		asked, named := o.asked.Load(), o.named.Load()
		if asked == 0 || named == asked {
			continue
		}
		switch {
		case o.stripped:
			stripped = append(stripped, o)
		case o.problem == "" && (o.source == ".dynsym" || o.source == ".gnu_debugdata + .dynsym"):
			dynOnly = append(dynOnly, o)
		default:
			other = append(other, o)
		}
	}
	counts := func(list []*object) (string, int64) {
		var parts []string
		var total int64
		for _, o := range list {
			un, asked := o.asked.Load()-o.named.Load(), o.asked.Load()
			total += un
			parts = append(parts, fmt.Sprintf("%s (%d of %d frames)", o.path, un, asked))
		}
		return strings.Join(parts, ", "), total
	}
	if len(stripped) > 0 {
		list, n := counts(stripped)
		var ids []string
		for _, o := range stripped {
			ids = append(ids, "/usr/lib/debug/.build-id/"+buildIDPath(o.buildID))
		}
		notes = append(notes, fmt.Sprintf("%d frames unnamed in stripped executables (no .symtab; .dynsym names only what they import or export): %s; profile builds that keep symbols (Rust: strip = false in [profile.release]; C/C++: without -s or strip), or install their separate debug files as %s",
			n, list, strings.Join(ids, ", ")))
	}
	if len(dynOnly) > 0 {
		list, n := counts(dynOnly)
		var paths, ids []string
		for _, o := range dynOnly {
			paths = append(paths, o.path)
			ids = append(ids, cmpOr(o.buildID, "?"))
		}
		msg := fmt.Sprintf("%d frames unnamed in libraries with .dynsym but no .symtab (not stripped: only their exported functions have names, the rest of their symbols are in separate debug files): %s; ", n, list)
		if pkgs := packageHints(paths); pkgs != "" {
			msg += "install their debug symbols (" + pkgs + ") "
		} else {
			msg += "install their debug symbols (Debian/Ubuntu: each package's -dbgsym package, from the debug archive; Fedora: dnf debuginfo-install) "
		}
		msg += fmt.Sprintf("or fetch them by build-id with debuginfod (DEBUGINFOD_URLS=https://debuginfod.debian.net debuginfod-find debuginfo %s); they go to /usr/lib/debug/.build-id/", strings.Join(ids, " "))
		for _, o := range dynOnly {
			if o.debugCRCBad != "" {
				msg += fmt.Sprintf("; %s is there but its CRC does not match %s's .gnu_debuglink: it belongs to another build", o.debugCRCBad, filepath.Base(o.path))
			}
		}
		notes = append(notes, msg)
	}
	for _, o := range other {
		asked, named := o.asked.Load(), o.named.Load()
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
	return notes
}

func (s *Symbolizer) objectNote(o *object, asked, named int64) string {
	name := filepath.Base(o.path)
	frames := fmt.Sprintf("%d of %d frames", asked-named, asked)
	switch {
	case o.stripped:
		return fmt.Sprintf("%s: %s unnamed: %s is stripped (no .symtab; its .dynsym names only what it imports or exports); %s", name, frames, o.path, strippedFix(o))
	case o.problem != "":
		return fmt.Sprintf("%s: %s unnamed: %s", name, frames, o.problem)
	case o.source == ".dynsym" || o.source == ".gnu_debugdata + .dynsym":
		return fmt.Sprintf("%s: %s unnamed: %s has .dynsym but no .symtab, so only its exported functions have names (it is not stripped); %s", name, frames, o.path, debugFix(o))
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

// packageHint names the debug package of one file (see packageHints).
func packageHint(path string) string { return packageHints([]string{path}) }

// packageHints names the debug packages for files owned by Debian or RPM
// packages, with one dpkg-query (or rpm) run for all of them: "Debian/Ubuntu:
// apt-get install libc6-dbg libssl3-dbgsym, …".
func packageHints(paths []string) string {
	if len(paths) == 0 {
		return ""
	}
	run := func(name string, args ...string) string {
		p, err := exec.LookPath(name)
		if err != nil {
			return ""
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, p, args...).Output() // exit 1 when some path is not packaged
		return string(out)
	}
	var args []string
	for _, p := range paths {
		args = append(args, p)
		if strings.HasPrefix(p, "/usr/") {
			args = append(args, strings.TrimPrefix(p, "/usr")) // merged /usr: dpkg knows /lib/…
		}
	}
	var pkgs []string
	for _, line := range strings.Split(run("dpkg-query", append([]string{"-S"}, args...)...), "\n") {
		pkg, _, ok := strings.Cut(line, ": ")
		if !ok || pkg == "" || strings.ContainsAny(pkg, " ,") {
			continue
		}
		pkg, _, _ = strings.Cut(pkg, ":") // libc6:amd64
		dbg := pkg + "-dbgsym"
		if pkg == "libc6" {
			dbg = "libc6-dbg" // glibc ships its own -dbg package in main
		}
		if !slices.Contains(pkgs, dbg) {
			pkgs = append(pkgs, dbg)
		}
	}
	if len(pkgs) > 0 {
		return "Debian/Ubuntu: apt-get install " + strings.Join(pkgs, " ") + ", the -dbgsym ones from the debug archive"
	}
	var rpms []string
	for _, line := range strings.Split(run("rpm", append([]string{"-qf", "--qf", "%{NAME}\\n"}, paths...)...), "\n") {
		if line != "" && !strings.Contains(line, " ") && !slices.Contains(rpms, line) {
			rpms = append(rpms, line)
		}
	}
	if len(rpms) > 0 {
		return "Fedora/RHEL: dnf debuginfo-install " + strings.Join(rpms, " ")
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
