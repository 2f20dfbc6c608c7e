package collectors

// JIT-compiled JavaScript named for perf from the runtime's jitdump.
//
// perf names JIT code only from /tmp/perf-PID.map, which it reads itself
// when `perf script` runs. Node writes that map with --perf-basic-prof; Bun
// (JavaScriptCore) cannot: its only option is a jitdump
// (BUN_JSC_useJITDump=1, in BUN_JSC_jitDumpDirectory), the binary format
// `perf inject --jit` reads, named jit-TID-PID.dump, which perf inject does
// not recognise. So the JIT collector translates the dumps the process
// maps into /tmp/perf-PID.map (code loads and moves; a region reused by
// later code is named by the latest), keeps it current during the window
// and removes it afterwards if it made it. Bun's JS frames then read
// `handle_step (JS)` and its FFI trampolines `JSC-Thunk: FFI invoke`.
//
// jitdump format: linux tools/perf/Documentation/jitdump-specification.txt
// (file header of 40 bytes: magic 0x4A695444 "JiTD", version, header size,
// elf machine, pad, pid, timestamp, flags; then records of id, total size,
// timestamp: JIT_CODE_LOAD = 0 with pid, tid, vma, code address, code size,
// code index and a NUL-terminated name; JIT_CODE_MOVE = 1).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/targets"
)

const (
	jitdumpMagic     = 0x4A695444
	jitdumpMagicSwap = 0x4454694A
	jitCodeLoad      = 0
	jitCodeMove      = 1
)

// jitRegion is one named range of JIT code.
type jitRegion struct {
	start, size uint64
	name        string
}

// readJitdump reads the code regions of a jitdump file, in record order.
func readJitdump(b []byte) ([]jitRegion, error) {
	if len(b) < 40 {
		return nil, fmt.Errorf("jitdump: %d bytes, shorter than its header", len(b))
	}
	var bo binary.ByteOrder = binary.LittleEndian
	switch binary.LittleEndian.Uint32(b) {
	case jitdumpMagic:
	case jitdumpMagicSwap:
		bo = binary.BigEndian
	default:
		return nil, fmt.Errorf("jitdump: bad magic %#x", binary.LittleEndian.Uint32(b))
	}
	hsize := int(bo.Uint32(b[8:]))
	if hsize < 40 || hsize > len(b) {
		return nil, fmt.Errorf("jitdump: header size %d", hsize)
	}
	var out []jitRegion
	byAddr := map[uint64]int{} // code address → index in out, for moves
	for off := hsize; off+16 <= len(b); {
		id, total := bo.Uint32(b[off:]), int(bo.Uint32(b[off+4:]))
		if total < 16 || off+total > len(b) {
			break // the runtime is still writing this record
		}
		rec := b[off : off+total]
		switch id {
		case jitCodeLoad:
			if len(rec) < 56 {
				break
			}
			addr, size := bo.Uint64(rec[32:]), bo.Uint64(rec[40:])
			name := rec[56:]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			byAddr[addr] = len(out)
			out = append(out, jitRegion{start: addr, size: size, name: jsName(string(name))})
		case jitCodeMove:
			if len(rec) < 56 {
				break
			}
			oldAddr, newAddr, size := bo.Uint64(rec[32:]), bo.Uint64(rec[40:]), bo.Uint64(rec[48:])
			if i, ok := byAddr[oldAddr]; ok {
				r := out[i]
				r.start, r.size = newAddr, size
				byAddr[newAddr] = len(out)
				out = append(out, r)
			}
		}
		off += total
	}
	return out, nil
}

// jsName turns JavaScriptCore's code names into frame names: a JS
// function at any tier ("JSC-Baseline: handle_step#EXKaxe", "JSC-DFG: …",
// "JSC-FTL: …") is "handle_step (JS)", an anonymous one "(anonymous) (JS)";
// thunks and inline caches keep their names ("JSC-Thunk: FFI invoke").
func jsName(n string) string {
	for _, tier := range []string{"JSC-Baseline: ", "JSC-DFG: ", "JSC-FTL: ", "JSC-OMG: ", "JSC-BBQ: "} {
		if f, ok := strings.CutPrefix(n, tier); ok {
			if i := strings.LastIndexByte(f, '#'); i >= 0 {
				f = f[:i]
			}
			if f == "" {
				f = "(anonymous)"
			}
			return f + " (JS)"
		}
	}
	return n
}

// resolveRegions keeps, where regions overlap, the one recorded last (code
// freed and its memory reused), sorted by address.
func resolveRegions(rs []jitRegion) []jitRegion {
	var kept []jitRegion // by start, non-overlapping
	for _, r := range rs {
		if r.size == 0 {
			continue
		}
		end := r.start + r.size
		i := sort.Search(len(kept), func(i int) bool { return kept[i].start+kept[i].size > r.start })
		j := i
		for j < len(kept) && kept[j].start < end {
			j++
		}
		kept = slices.Replace(kept, i, j, r)
	}
	return kept
}

// jitdumpFiles lists the jitdump files pid maps (a runtime maps its dump
// so that perf records where it is), else /tmp/jit-PID.dump.
func jitdumpFiles(pid int) []string {
	var out []string
	if f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid)); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 6 {
				continue
			}
			p := strings.Join(fields[5:], " ")
			if b := filepath.Base(p); strings.HasPrefix(b, "jit-") && strings.HasSuffix(b, ".dump") && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
		f.Close()
	}
	if len(out) == 0 {
		if p := fmt.Sprintf("/tmp/jit-%d.dump", pid); fileExists(p) {
			out = append(out, p)
		}
	}
	return out
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// perfMapWriter keeps /tmp/perf-PID.map current from pid's jitdumps.
type perfMapWriter struct {
	pid     int
	path    string
	mu      sync.Mutex
	created bool // this writer made the file (and removes it)
	regions int
	files   []string
	err     error
}

func newPerfMapWriter(pid int) *perfMapWriter {
	return &perfMapWriter{pid: pid, path: fmt.Sprintf("/tmp/perf-%d.map", pid)}
}

// update rewrites the map from the dumps; a map this writer did not make
// (the runtime's own, Node --perf-basic-prof) is left alone.
func (m *perfMapWriter) update() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.created && fileExists(m.path) {
		m.err = fmt.Errorf("%s exists and was not made by profcap: left as it is", m.path)
		return
	}
	files := jitdumpFiles(m.pid)
	if len(files) == 0 {
		return
	}
	var all []jitRegion
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			m.err = err
			continue
		}
		rs, err := readJitdump(b)
		if err != nil {
			m.err = fmt.Errorf("%s: %w", f, err)
			continue
		}
		all = append(all, rs...)
	}
	rs := resolveRegions(all)
	var buf bytes.Buffer
	for _, r := range rs {
		fmt.Fprintf(&buf, "%x %x %s\n", r.start, r.size, r.name)
	}
	tmp := m.path + ".profcap.tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		m.err = err
		return
	}
	if err := os.Rename(tmp, m.path); err != nil {
		os.Remove(tmp)
		m.err = err
		return
	}
	m.created, m.regions, m.files, m.err = true, len(rs), files, nil
}

// remove deletes the map if this writer made it.
func (m *perfMapWriter) remove() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.created {
		os.Remove(m.path)
		m.created = false
	}
}

func (m *perfMapWriter) note() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.err != nil && m.regions == 0:
		return bundle.WarningPrefix + "JIT frames not named from the jitdump: " + m.err.Error()
	case m.regions == 0:
		return bundle.WarningPrefix + "the process maps no jitdump with code in it: JIT frames stay unnamed"
	}
	return fmt.Sprintf("JIT frames named from %s (%d code regions, written to %s while perf ran)", strings.Join(m.files, ", "), m.regions, m.path)
}

// JITPerf is the perf collector for processes that write a jitdump (Bun,
// and other runtimes with jitdump output): perf's cpu and offcpu profiles,
// with JIT frames named from the dump; offcpu time in the runtime's event
// loop is put under IdleFrame.
type JITPerf struct {
	*Perf
	noFollow bool
}

// NewJITPerf returns the perf collector for jitdump-writing processes.
func NewJITPerf(opt PerfOptions) *JITPerf {
	return &JITPerf{Perf: NewPerf(opt), noFollow: opt.NoFollow}
}

// Kinds is perf's for targets whose process maps a jitdump, else none.
func (j *JITPerf) Kinds(t *targets.Target) []bundle.Kind {
	if !t.HasPID() {
		return nil
	}
	pid, err := t.ResolvePID()
	if err != nil || pid == 0 {
		return nil
	}
	if !j.noFollow {
		pid, _ = followLauncher(pid)
	}
	if len(jitdumpFiles(pid)) == 0 {
		return nil
	}
	return j.Perf.Kinds(t)
}

// Collect runs perf's Collect while keeping /tmp/perf-PID.map current
// from the jitdump, so that perf script names the JIT frames.
func (j *JITPerf) Collect(ctx context.Context, w *Window, t *targets.Target, kinds []bundle.Kind, emit Emit) {
	pid, _, err := resolveProcess(t, j.noFollow)
	if err != nil {
		j.Perf.Collect(ctx, w, t, kinds, emit)
		return
	}
	m := newPerfMapWriter(pid)
	m.update()
	defer m.remove()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Every half second during the window, and once more when it
		// ends: perf script runs after perf has stopped and written its
		// file, so it reads a map with every region compiled until then
		// but the last moments'.
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				m.update()
			case <-w.Done():
				m.update()
				return
			case <-stop:
				return
			}
		}
	}()
	j.Perf.Collect(ctx, w, t, kinds, func(r Result) {
		if r.Profile != nil {
			<-done // profiles come after the window: the last update is written
			note := m.note()
			if r.Kind == bundle.OffCPU {
				if share := markIdle(r.Profile); share > 0 {
					note += fmt.Sprintf("; %.0f%% of the off-CPU time is the runtime's idle (under %s)", 100*share, IdleFrame)
				}
			}
			r.Profile.Comments = append(r.Profile.Comments, m.note())
			if err := r.Profile.CheckValid(); err != nil {
				r = Result{Kind: r.Kind, Collector: r.Collector, Status: bundle.StatusFailed, Err: fmt.Errorf("marking idle stacks: %w", err)}
			}
			if r.Note != "" {
				note = r.Note + "; " + note
			}
			r.Note = note
		}
		emit(r)
	})
	close(stop)
	<-done
}
