package collectors

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

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

// exitWatch polls a process every 100 ms while a tool records it.
type exitWatch struct {
	Gone chan struct{} // closed when the process has exited
	At   time.Time     // when that was seen; read after Gone is closed
	stop chan struct{}
}

// watchExit starts watching pid. tick, if not nil, is called on every poll
// with its number (1, 2, …) while the process lives.
func watchExit(pid int, tick func(n int)) *exitWatch {
	e := &exitWatch{Gone: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-e.stop:
				return
			case <-t.C:
				if !processExists(pid) {
					e.At = time.Now()
					close(e.Gone)
					return
				}
				if tick != nil {
					tick(n)
				}
			}
		}
	}()
	return e
}

// Stop ends the watch; call it once.
func (e *exitWatch) Stop() { close(e.stop) }

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
	path, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	f, err := elf.Open(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return path, false, err
	}
	defer f.Close()
	return path, f.Section(".symtab") == nil, nil
}

func strippedNote(path string) string {
	return fmt.Sprintf("%s is stripped (no .symtab): its frames show as [unknown] or module+offset; profile a build that keeps symbols (Rust: [profile.release] strip = false, debug = 1; C/C++: no -s, no strip; Go: no -ldflags=-s)", path)
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
	capSysAdmin = 21
	capPerfmon  = 38
)
