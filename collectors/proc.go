package collectors

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/symbolize"
	"github.com/profcap/profcap/targets"
)

// launchers are programs that start the process doing the work and wait
// for it (`uv run python app.py`, `npm start`, `sh -c ...`). A PID file
// naming one of them is followed to its child.
var launchers = map[string]bool{
	"uv": true, "uvx": true, "poetry": true, "pipenv": true, "pdm": true, "hatch": true, "rye": true,
	"npm": true, "npx": true, "pnpm": true, "yarn": true, "bunx": true,
	"cargo": true, "go": true,
	"sh": true, "bash": true, "dash": true, "zsh": true,
	"env": true, "sudo": true, "su": true, "runuser": true, "setsid": true, "nohup": true, "timeout": true,
	"nice": true, "ionice": true, "taskset": true, "chrt": true, "stdbuf": true, "time": true,
	"tini": true, "dumb-init": true, "catatonit": true,
}

// procName is the program name of a process: the basename of argv[0],
// else its comm.
func procName(pid int) string {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(b) > 0 {
		arg0, _, _ := bytes.Cut(b, []byte{0})
		if f := strings.Fields(string(arg0)); len(f) > 0 { // "npm run dev" titles
			return filepath.Base(f[0])
		}
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// procStat returns the parent PID and CPU time (ticks) of a process.
func procStat(pid int) (ppid int, ticks uint64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	// comm may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return ppid, ut + st, true
}

// children lists the child processes of pid.
func children(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, ok := procStat(c); ok && ppid == pid {
			kids = append(kids, c)
		}
	}
	return kids
}

// followLauncher returns the process doing the work for pid: if pid runs a
// launcher with children, its busiest child (recursively, a few levels).
// note says what was followed, "" when pid itself is the worker.
func followLauncher(pid int) (int, string) {
	orig, origName := pid, procName(pid)
	for depth := 0; depth < 4; depth++ {
		if !launchers[procName(pid)] {
			break
		}
		kids := children(pid)
		if len(kids) == 0 {
			break
		}
		best, bestTicks := kids[0], uint64(0)
		for _, k := range kids {
			if _, t, ok := procStat(k); ok && t > bestTicks {
				best, bestTicks = k, t
			}
		}
		pid = best
	}
	if pid == orig {
		return pid, ""
	}
	return pid, fmt.Sprintf("pid %d runs the launcher %s; profiling its child %s (pid %d) instead", orig, origName, procName(pid), pid)
}

// resolveProcess finds the live process a PID-based collector profiles:
// the target's PID, followed past a launcher unless noFollow, with notes
// for the manifest.
func resolveProcess(t *targets.Target, noFollow bool) (int, []string, error) {
	pid, err := t.ResolvePID()
	if err != nil {
		return 0, nil, err
	}
	if pid == 0 {
		return 0, nil, errors.New("target has no pid")
	}
	if !processExists(pid) {
		return 0, nil, fmt.Errorf("no process with pid %d (the target is not running, or its pid file is stale)", pid)
	}
	var notes []string
	if !noFollow {
		var note string
		if pid, note = followLauncher(pid); note != "" {
			notes = append(notes, note)
		}
	}
	return pid, notes, nil
}

// pidCollector is the Collector plumbing of the collectors that record a
// target's process with a tool (perf, samply, py-spy, rbspy): Name (the
// tool's), Probe and Preflight from the one check, and Collect labelled for
// profcap's own profile, answering kinds the collector does not offer. Each
// collector embeds it and keeps its Kinds, its check and its collect.
type pidCollector struct {
	tool   Tool
	offers []bundle.Kind
	// check is the collector's one check, behind Probe, Preflight and its
	// collect: whether it can record kind k of the target here, and if so
	// the process it records and notes about it.
	check   func(t *targets.Target, k bundle.Kind) (pid int, notes []string, err error)
	collect func(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit)
}

// The collectors built on it, each a Collector and a Preflighter.
var _ = []interface {
	Collector
	Preflighter
}{(*Perf)(nil), (*Samply)(nil), (*Spy)(nil)}

// Name implements Collector: the tool's name.
func (c *pidCollector) Name() string { return c.tool.Name }

// Probe implements Collector by the check: one Availability a kind
// offered, naming the process and the notes, or saying why not.
func (c *pidCollector) Probe(ctx context.Context, t *targets.Target) []Availability {
	if !t.HasPID() {
		return nil
	}
	out := make([]Availability, 0, len(c.offers))
	for _, k := range c.offers {
		a := Availability{Kind: k, Collector: c.Name()}
		if pid, notes, err := c.check(t, k); err != nil {
			a.Reason = err.Error()
		} else {
			a.Available = true
			a.Reason = strings.Join(append([]string{fmt.Sprintf("pid %d (%s)", pid, procName(pid))}, notes...), "; ")
		}
		out = append(out, a)
	}
	return out
}

// Preflight implements Preflighter by the check Probe makes.
func (c *pidCollector) Preflight(t *targets.Target, k bundle.Kind) error {
	if !slices.Contains(c.offers, k) {
		return fmt.Errorf("%s does not capture %s profiles", c.Name(), k)
	}
	_, _, err := c.check(t, k)
	return err
}

// Collect implements Collector: unsupported results for kinds not offered,
// then the collector's own collect, labelled.
func (c *pidCollector) Collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	kinds = Unsupported(c.Name(), kinds, emit, c.offers...)
	if len(kinds) == 0 {
		return // nothing to run the tool for
	}
	pprof.Do(ctx, pprof.Labels("component", "collector/"+c.Name()), func(ctx context.Context) {
		c.collect(ctx, w, t, kinds, emit)
	})
}

// FollowLauncher returns the process that does the work for pid: pid
// itself, or the child a known launcher (uv run, sh -c, …) started, with a
// note saying so.
func FollowLauncher(pid int) (int, string) { return followLauncher(pid) }

// processExists reports whether pid is a live process (not a zombie).
func processExists(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && err != syscall.EPERM {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		// No /proc (macOS): the signal check above is all there is.
		return !procAvailable()
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func procAvailable() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// threads lists the thread IDs of pid.
func threads(pid int) []int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil
	}
	var tids []int
	for _, e := range ents {
		if t, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, t)
		}
	}
	return tids
}

// strippedBinary reports whether the executable of pid has no symbol table
// (.symtab), as release builds with strip = true have. Such frames can only
// be named from .dynsym or shown as module+offset.
func strippedBinary(pid int) (path string, stripped bool, err error) {
	path = exePath(pid)
	f, err := elf.Open(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return path, false, err
	}
	defer f.Close()
	return path, f.Section(".symtab") == nil, nil
}

// exePath is the path of pid's executable, for messages.
func exePath(pid int) string {
	path, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return path
}

func strippedNote(path string) string {
	return fmt.Sprintf("%s is stripped (no .symtab): its frames show as [unknown] or module+offset; profile a build that keeps symbols "+
		"(Rust: a [profile.profiling] with inherits = \"release\", debug = true, strip = false, built with cargo build --profile profiling "+
		"and RUSTFLAGS=\"-C force-frame-pointers=yes\"; at least strip = false in [profile.release]; C/C++: no -s, no strip; Go: no -ldflags=-s)", path)
}

// FramePointers is what the machine code of an executable says about frame
// pointers: whether its functions set one up, from a sample of them.
type FramePointers struct {
	Known   bool // enough functions were read to tell
	Present bool // most of them set up a frame pointer
	Checked int  // functions read
	WithFP  int  // of which set one up
	Source  string
}

func (fp FramePointers) String() string {
	if !fp.Known {
		return "frame pointers unknown"
	}
	verdict := "frame pointers"
	if !fp.Present {
		verdict = "no frame pointers"
	}
	return fmt.Sprintf("%s (%d of %d functions from %s set one up)", verdict, fp.WithFP, fp.Checked, fp.Source)
}

// fpMinFunctions is how many functions a verdict needs: a handful of C
// runtime start-up functions (a tiny program) says nothing either way.
const fpMinFunctions = 50

// fpMaxFunctions bounds the functions read: about 100 KB of a binary, a few
// milliseconds.
const fpMaxFunctions = 4000

// FramePointersOf reads the start of the executable's functions (from
// .eh_frame_hdr, which even a stripped binary keeps, else .symtab) and
// counts those whose first 32 bytes set up a frame pointer: x86-64 "mov
// %rsp,%rbp" (48 89 e5; after a push %rbp, an endbr64 or Go's stack check),
// arm64 "mov x29, sp" (0x910003fd). Measured here: built with frame
// pointers 80-93% of functions (Rust -C force-frame-pointers=yes, gcc
// -fno-omit-frame-pointer, Go), without them 0-13% (Rust release, Debian's
// python3.11, bash, libc); the verdict is at 50%.
func FramePointersOf(path string) FramePointers {
	f, err := elf.Open(path)
	if err != nil {
		return FramePointers{}
	}
	defer f.Close()
	var pattern []byte
	switch f.Machine {
	case elf.EM_X86_64:
		pattern = []byte{0x48, 0x89, 0xe5}
	case elf.EM_AARCH64:
		pattern = []byte{0xfd, 0x03, 0x00, 0x91}
	default:
		return FramePointers{}
	}
	starts, source := symbolize.FunctionStarts(f), ".eh_frame_hdr"
	if len(starts) < fpMinFunctions {
		starts, source = symtabStarts(f)
	}
	fp := FramePointers{Source: source}
	step := max(1, len(starts)/fpMaxFunctions)
	buf := make([]byte, 32)
	var sec *elf.Section
	for i := 0; i < len(starts); i += step {
		a := starts[i]
		if sec == nil || a < sec.Addr || a >= sec.Addr+sec.Size {
			sec = nil
			for _, s := range f.Sections {
				if s.Flags&elf.SHF_EXECINSTR != 0 && s.Type == elf.SHT_PROGBITS && a >= s.Addr && a < s.Addr+s.Size {
					sec = s
					break
				}
			}
			if sec == nil {
				continue
			}
		}
		n, _ := sec.ReadAt(buf, int64(a-sec.Addr))
		if n == 0 {
			continue
		}
		fp.Checked++
		if bytes.Contains(buf[:n], pattern) {
			fp.WithFP++
		}
	}
	fp.Known = fp.Checked >= fpMinFunctions
	fp.Present = fp.Known && 2*fp.WithFP >= fp.Checked
	return fp
}

// symtabStarts returns the addresses of the function symbols of .symtab
// (Go binaries have no .eh_frame), sorted.
func symtabStarts(f *elf.File) ([]uint64, string) {
	syms, err := f.Symbols()
	if err != nil {
		return nil, ""
	}
	var starts []uint64
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 && s.Size > 0 {
			starts = append(starts, s.Value)
		}
	}
	slices.Sort(starts)
	return slices.Compact(starts), ".symtab"
}

// perfParanoid reads kernel.perf_event_paranoid (2 when unreadable: the
// usual default).
func perfParanoid() int {
	b, err := os.ReadFile("/proc/sys/kernel/perf_event_paranoid")
	if err != nil {
		return 2
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 2
	}
	return n
}

// hasCap reports whether this process has capability bit c effective.
func hasCap(c uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<c) != 0
		}
	}
	return false
}

const (
	capSysPtrace = 19
	capSysAdmin  = 21
	capPerfmon   = 38
)

// perfEventProblem says why this process may not record kind k of pid
// through perf_event_open (perf, samply), or "".
func perfEventProblem(k bundle.Kind, pid int) string {
	if os.Geteuid() == 0 || hasCap(capSysAdmin) {
		return ""
	}
	paranoid := perfParanoid()
	perfmon := hasCap(capPerfmon)
	switch k {
	case bundle.OffCPU:
		if paranoid > -1 && !perfmon {
			return fmt.Sprintf("off-CPU profiling records the sched:sched_switch tracepoint, which kernel.perf_event_paranoid=%d forbids for non-root users: run profcap as root (or with CAP_PERFMON and read access to /sys/kernel/tracing), or lower the sysctl (sysctl -w kernel.perf_event_paranoid=-1)", paranoid)
		}
	default:
		if !perfmon && paranoid >= 3 {
			return fmt.Sprintf("kernel.perf_event_paranoid is %d, which forbids perf for non-root users: run profcap as root, give it CAP_PERFMON, or lower the sysctl (sysctl -w kernel.perf_event_paranoid=1)", paranoid)
		}
	}
	return otherUser(pid)
}

// ptraceProblem says why this process may not read pid's memory (py-spy,
// rbspy), or "".
func ptraceProblem(pid int) string {
	if os.Geteuid() == 0 || hasCap(capSysPtrace) {
		return ""
	}
	if why := otherUser(pid); why != "" {
		return why
	}
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	if err == nil {
		if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n >= 1 {
			return fmt.Sprintf("kernel.yama.ptrace_scope is %d, which lets only a parent read a process's memory: run profcap as root, give it CAP_SYS_PTRACE, or sysctl -w kernel.yama.ptrace_scope=0", n)
		}
	}
	return ""
}

// otherUser says that pid belongs to another user, whom this process may
// not profile without CAP_SYS_PTRACE, or "".
func otherUser(pid int) string {
	st, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	if err != nil {
		return ""
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() && !hasCap(capSysPtrace) {
		return fmt.Sprintf("pid %d belongs to uid %d, not to you (uid %d): run profcap as root or as that user", pid, sys.Uid, os.Geteuid())
	}
	return ""
}
