package collectors

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/formats/folded"
)

func TestReadRbspyRaw(t *testing.T) {
	s, err := readRbspyRaw(filepath.Join("testdata", "spy", "rbspy-0.55.0-nonblocking.raw.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 285 {
		t.Fatalf("%d samples, want 285", len(s))
	}
	var steps int
	for i, x := range s {
		if i > 0 && x.time < s[i-1].time {
			t.Fatalf("sample %d out of time order", i)
		}
		if x.thread == 0 || x.time < 1.7e18 {
			t.Fatalf("sample %d: thread %x time %d", i, x.thread, x.time)
		}
		if x.frames[0].name != "<main>" && x.frames[0].name != "block in <main>" {
			t.Fatalf("sample %d: root %q, want <main> (root first)", i, x.frames[0].name)
		}
		for _, f := range x.frames {
			if f.name == "handle_step" && strings.HasSuffix(f.file, "workers/ruby/worker.rb") && f.line > 0 {
				steps++
			}
		}
	}
	if steps == 0 {
		t.Error("no handle_step frame with its file and line")
	}
}

func TestCleanSpyProfileNative(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "spy", "pyspy-0.4.3-native.folded"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := folded.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	cleanSpyProfile(p, "py-spy")
	p = asSampled(p, bundle.CPU, 100)
	if err := p.CheckValid(); err != nil {
		t.Fatal(err)
	}
	// One stack from the Python step function into the Rust core, the
	// Python frames with their file, the Rust ones without their hash.
	var joined int64
	for _, s := range p.Sample {
		var names []string
		for _, l := range s.Location {
			names = append(names, l.Line[0].Function.Name)
		}
		i, j := slices.Index(names, "worker_core::compute::checksum_block"), slices.Index(names, "handle_step")
		if i >= 0 && j > i {
			joined += s.Value[0]
			l := s.Location[j]
			if l.Line[0].Function.Filename != "worker.py" || l.Line[0].Line != 64 || l.Mapping != nil {
				t.Errorf("handle_step frame %+v %+v", l.Line[0], l.Mapping)
			}
			if m := s.Location[i].Mapping; m == nil || m.File != "native" {
				t.Errorf("checksum_block mapping %+v", m)
			}
		}
		for _, n := range names {
			if strings.Contains(n, "::h") && strings.HasPrefix(n, "worker_core") || strings.HasPrefix(n, "0x") {
				t.Errorf("frame name %q", n)
			}
		}
	}
	if joined < 20 {
		t.Errorf("%d samples run from handle_step into checksum_block, want ≥ 20 of the file's", joined)
	}
}

// stack builds a leaf-first native stack: "module:name" frames.
func nstack(frames ...string) []mframe {
	var out []mframe
	for _, f := range frames {
		mod, name, _ := strings.Cut(f, ":")
		out = append(out, mframe{name: name, module: mod})
	}
	return out
}

func istack(names ...string) []mframe {
	var out []mframe
	for _, n := range names {
		out = append(out, mframe{name: n, file: "worker.rb"})
	}
	return out
}

const ms = int64(time.Millisecond)

func TestJoinNative(t *testing.T) {
	const pthread, tid = 0x7f00, 42
	t0 := int64(1.8e18)
	// Ruby: idle until 30 ms, then handle_step calling into Rust; perf's
	// samples on the same thread; the thread woke at 28 ms.
	interp := []interpSample{
		{thread: pthread, time: t0 + 10*ms, frames: istack("<main>", "idle_until", "sleep [c function]")},
		{thread: pthread, time: t0 + 20*ms, frames: istack("<main>", "idle_until", "sleep [c function]")},
		{thread: pthread, time: t0 + 33*ms, frames: istack("<main>", "handle_step", "process_step", "call [c function]")},
		{thread: pthread, time: t0 + 43*ms, frames: istack("<main>", "handle_step", "process_step", "call [c function]")},
	}
	rust := nstack("/lib/libworker_core.so:worker_core::compute::checksum_block", "/lib/libworker_core.so:worker_core_process_step",
		"/usr/lib/libffi.so.8:libffi.so.8+0x6f7a", "[unknown]:[unknown]")
	inRuby := nstack("/usr/lib/libruby-3.1.so.3.1:vm_exec_core", "/usr/lib/libruby-3.1.so.3.1:rb_vm_exec")
	cpu := []nativeSample{
		// 2 ms after the idle sample at 20 ms, 3 ms before handle_step's:
		// nearest is the idle one, but the thread woke between (28 ms).
		{tid: tid, comm: "ruby", time: t0 + 30*ms, end: t0 + 30*ms, frames: rust},
		{tid: tid, comm: "ruby", time: t0 + 40*ms, end: t0 + 40*ms, frames: inRuby},
		{tid: 99, comm: "other", time: t0 + 41*ms, end: t0 + 41*ms, frames: nstack("/usr/lib/libc.so.6:poll")},
	}
	off := []nativeSample{
		{tid: tid, comm: "ruby", time: t0 + 5*ms, end: t0 + 28*ms, state: "S", frames: nstack("[kernel.kallsyms]:schedule", "/usr/lib/libc.so.6:ppoll", "/usr/lib/libruby-3.1.so.3.1:native_sleep")},
	}
	j := newJoiner(interp, cpu, off)
	if j.tidOf[pthread] != tid || len(j.tidOf) != 1 {
		t.Fatalf("thread map %v", j.tidOf)
	}
	p, st := joinNative(j, bundle.CPU, cpu, 10*ms)
	if err := p.CheckValid(); err != nil {
		t.Fatal(err)
	}
	if st.joined != 2 || st.alone != 1 {
		t.Errorf("stats %+v", st)
	}
	got := map[string]int64{}
	for _, s := range p.Sample {
		got[stackString(s)] += s.Value[0]
	}
	want := map[string]int64{
		// Joined across no switch: handle_step's sample, 3 ms later.
		"<main>;handle_step;process_step;call [c function];libffi.so.8+0x6f7a;worker_core_process_step;worker_core::compute::checksum_block": 1,
		// Inside the interpreter: the Ruby stack alone.
		"<main>;handle_step;process_step;call [c function]": 1,
		// A thread rbspy never saw: native alone.
		"poll": 1,
	}
	if !mapsEqual(got, want) {
		t.Errorf("cpu stacks\n got %v\nwant %v", got, want)
	}
	if c := st.comment("perf samples", "rbspy"); !strings.HasPrefix(c, bundle.WarningPrefix+"2 of 3 perf samples joined") {
		t.Errorf("comment %q", c)
	}

	// Off-CPU: the interval gets the Ruby stack of the samples inside it,
	// and is the runtime's idle.
	po, _ := joinNative(j, bundle.OffCPU, off, 1)
	if len(po.Sample) != 1 || stackString(po.Sample[0]) != "<main>;idle_until;sleep [c function];ppoll;schedule" || po.Sample[0].Value[0] != 23*ms {
		t.Fatalf("offcpu %v", po)
	}
	if share := markIdle(po); share != 1 || !strings.HasPrefix(stackString(po.Sample[0]), IdleFrame+";") {
		t.Errorf("idle share %v, stack %s", share, stackString(po.Sample[0]))
	}

	// Wall: each Ruby sample with the native frames of the moment.
	pw, ws := joinWall(j, interp, cpu, 100)
	if ws.joined != 4 {
		t.Errorf("wall stats %+v", ws)
	}
	gotW := map[string]int64{}
	for _, s := range pw.Sample {
		gotW[stackString(s)] += s.Value[0]
	}
	wantW := map[string]int64{
		"<main>;idle_until;sleep [c function];ppoll;schedule":                                                                                2,
		"<main>;handle_step;process_step;call [c function];libffi.so.8+0x6f7a;worker_core_process_step;worker_core::compute::checksum_block": 1,
		"<main>;handle_step;process_step;call [c function]":                                                                                  1,
	}
	if !mapsEqual(gotW, wantW) {
		t.Errorf("wall stacks\n got %v\nwant %v", gotW, wantW)
	}
}

// TestJoinByNativeCall: the worker's steps are shorter than rbspy's
// interval, so most runs of the thread between two context switches hold
// no Ruby sample; a native sample there takes the Ruby stack its native
// call had where one was seen, never one across a switch.
func TestJoinByNativeCall(t *testing.T) {
	const pthread, tid = 0x7f00, 42
	t0 := int64(1.8e18)
	us := int64(time.Microsecond)
	at := func(msec float64) int64 { return t0 + int64(msec*1000)*us }
	step := istack("<main>", "handle_step", "process_step", "call [c function]")
	wait := istack("<main>", "handle_step", "blocking_wait", "call [c function]")
	idle := istack("<main>", "idle_until", "sleep [c function]")
	// Two steps: a run 0–5 ms (prepare_payload, then process_step), the
	// Rust wait 5–10, the idle sleep 10.5–50; again from 50.
	interp := []interpSample{
		{thread: pthread, time: at(3), frames: step},
		{thread: pthread, time: at(7), frames: wait},
		{thread: pthread, time: at(20), frames: idle},
		{thread: pthread, time: at(30), frames: idle},
		{thread: pthread, time: at(40), frames: idle},
		{thread: pthread, time: at(50.5), frames: istack("<main>", "handle_step", "prepare_payload")},
		{thread: pthread, time: at(70), frames: idle},
		{thread: pthread, time: at(80), frames: idle},
	}
	rust := nstack("/lib/libworker_core.so:worker_core::compute::checksum_block", "/lib/libworker_core.so:worker_core_process_step",
		"/usr/lib/libffi.so.8:ffi_call", "/usr/lib/fiddle.so:function_call", "/usr/lib/libruby-3.1.so.3.1:rb_nogvl")
	inRuby := nstack("/usr/lib/libruby-3.1.so.3.1:vm_exec_core", "/usr/lib/libruby-3.1.so.3.1:rb_vm_exec")
	rustWait := nstack("[kernel.kallsyms]:schedule", "/usr/lib/libc.so.6:clock_nanosleep", "/lib/libworker_core.so:std::thread::sleep",
		"/lib/libworker_core.so:worker_core_blocking_wait", "/usr/lib/libffi.so.8:ffi_call", "/usr/lib/libruby-3.1.so.3.1:rb_nogvl")
	sleep := nstack("[kernel.kallsyms]:schedule", "/usr/lib/libc.so.6:ppoll", "/usr/lib/libruby-3.1.so.3.1:native_sleep")
	cpu := []nativeSample{
		{tid: tid, comm: "ruby", time: at(2), end: at(2), frames: rust},         // 1 ms from the step's sample
		{tid: tid, comm: "ruby", time: at(10.2), end: at(10.2), frames: inRuby}, // between the wait and the sleep
		{tid: tid, comm: "ruby", time: at(52), end: at(52), frames: rust},       // nearest: prepare_payload, before the call
	}
	off := []nativeSample{
		{tid: tid, comm: "ruby", time: at(5), end: at(10), state: "S", frames: rustWait},
		{tid: tid, comm: "ruby", time: at(10.5), end: at(50), state: "S", frames: sleep},
		{tid: tid, comm: "ruby", time: at(55), end: at(60), state: "S", frames: rustWait}, // no Ruby sample inside
		{tid: tid, comm: "ruby", time: at(60.5), end: at(100), state: "S", frames: sleep},
	}
	j := newJoiner(interp, cpu, off)
	if j.tidOf[pthread] != tid {
		t.Fatalf("thread map %v", j.tidOf)
	}
	stacks := func(p *profile.Profile) map[string]int64 {
		if err := p.CheckValid(); err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, s := range p.Sample {
			got[stackString(s)] += s.Value[0]
		}
		return got
	}
	const stepRust = "<main>;handle_step;process_step;call [c function];function_call;ffi_call;worker_core_process_step;worker_core::compute::checksum_block"
	p, st := joinNative(j, bundle.CPU, cpu, 10*ms)
	want := map[string]int64{
		// At 2 ms directly, at 52 ms by the call: not under
		// prepare_payload (Ruby code calls no native function) nor the
		// idle sample at 70 (across the Rust wait and the sleep).
		stepRust: 2,
		// Inside the interpreter between two switches with no Ruby
		// sample: nothing to join by.
		"rb_vm_exec;vm_exec_core": 1,
	}
	if got := stacks(p); !mapsEqual(got, want) {
		t.Errorf("cpu stacks\n got %v\nwant %v", got, want)
	}
	if st != (joinStats{joined: 2, byCall: 1, alone: 1}) {
		t.Errorf("cpu stats %+v", st)
	}
	if c := st.comment("perf samples", "rbspy"); !strings.Contains(c, "2 of 3 perf samples joined") || !strings.Contains(c, "1 of them through their native call") {
		t.Errorf("comment %q", c)
	}

	po, ost := joinNative(j, bundle.OffCPU, off, 1)
	const waitRust = "<main>;handle_step;blocking_wait;call [c function];ffi_call;worker_core_blocking_wait;std::thread::sleep;clock_nanosleep;schedule"
	wantO := map[string]int64{
		waitRust: 10 * ms, // the second wait by the first's call
		"<main>;idle_until;sleep [c function];ppoll;schedule": 79 * ms,
	}
	if got := stacks(po); !mapsEqual(got, wantO) {
		t.Errorf("offcpu stacks\n got %v\nwant %v", got, wantO)
	}
	if ost != (joinStats{joined: 4, byCall: 1}) {
		t.Errorf("offcpu stats %+v", ost)
	}

	// Wall: prepare_payload's sample is not given the Rust frames of the
	// cpu sample 1.5 ms later (in the call it had not made yet).
	pw, _ := joinWall(j, interp, cpu, 100)
	gotW := stacks(pw)
	if gotW["<main>;handle_step;prepare_payload"] != 1 || gotW[stepRust] != 1 {
		t.Errorf("wall stacks %v", gotW)
	}
}

func stackString(s *profile.Sample) string {
	var names []string
	for i := len(s.Location) - 1; i >= 0; i-- {
		for j := len(s.Location[i].Line) - 1; j >= 0; j-- {
			names = append(names, s.Location[i].Line[j].Function.Name)
		}
	}
	return strings.Join(names, ";")
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestIsIdleStack(t *testing.T) {
	for _, tc := range []struct {
		stack []string // leaf first, "module:name"
		idle  bool
	}{
		// Python's Event.wait between steps (py-spy --native --idle).
		{[]string{"libc.so.6:[libc.so.6]", "libc.so.6:[libc.so.6]", "python3.11:PyThread_acquire_lock_timed", ":Condition.wait", ":idle_until"}, true},
		// A server thread's poll.
		{[]string{"libc.so.6:poll", ":_PollLikeSelector.select", ":BaseServer.serve_forever"}, true},
		// Blocked in the Rust core: the worker's own wait, not idle.
		{[]string{"libc.so.6:clock_nanosleep", "native:worker_core::io::wait_for_io", "native:worker_core_blocking_wait", ":handle_step"}, false},
		// Waiting for the GIL is contention.
		{[]string{"libc.so.6:pthread_cond_timedwait", "python3.11:take_gil", "python3.11:PyEval_RestoreThread"}, false},
		// Bun's event loop: raw syscall(2) over epoll_pwait2, unnamed runtime frames.
		{[]string{"[kernel.kallsyms]:schedule", "[kernel.kallsyms]:__x64_sys_epoll_pwait2", "/usr/lib/libc.so.6:syscall", "/bun/bun.exe:bun.exe+0x1bfcbc5"}, true},
		{[]string{"[kernel.kallsyms]:schedule", "[kernel.kallsyms]:__x64_sys_futex", "/bun/bun.exe:bun.exe+0x1bfcce6", "/usr/lib/libc.so.6:start_thread"}, true},
		// On CPU in the interpreter.
		{[]string{"python3.11:_PyEval_EvalFrameDefault", ":prepare_payload"}, false},
		// Preempted in Rust.
		{[]string{"[kernel.kallsyms]:__schedule", "[kernel.kallsyms]:asm_sysvec_apic_timer_interrupt", "/x/libworker_core.so:worker_core::compute::checksum_block"}, false},
	} {
		b := newStackBuilder(&profile.Profile{})
		var fr []mframe
		for _, f := range tc.stack {
			mod, name, _ := strings.Cut(f, ":")
			fr = append(fr, mframe{name: name, module: mod})
		}
		b.add(fr, []int64{1}, "")
		if got := isIdleStack(b.p.Sample[0].Location); got != tc.idle {
			t.Errorf("%v: idle %v, want %v", tc.stack, got, tc.idle)
		}
	}
}

func TestReadJitdump(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "jit", "bun-1.4.5-jit-29498-29497.dump"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := readJitdump(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 110 {
		t.Errorf("%d regions, want 110 (the file's JIT_CODE_LOAD records, counted by an independent reader)", len(rs))
	}
	tiers := 0
	for _, r := range rs {
		if r.name == "hot (JS)" {
			tiers++ // Baseline, DFG, FTL
		}
	}
	if tiers != 3 || !slices.ContainsFunc(rs, func(r jitRegion) bool { return r.name == "JSC-Thunk: DefaultCall" }) {
		t.Errorf("hot (JS) %d times; names %v", tiers, rs[:5])
	}
	kept := resolveRegions(rs)
	for i := 1; i < len(kept); i++ {
		if kept[i-1].start+kept[i-1].size > kept[i].start {
			t.Fatalf("regions %d and %d overlap", i-1, i)
		}
	}
	// Overlaps: the later record wins.
	got := resolveRegions([]jitRegion{{0x1000, 0x100, "a"}, {0x1080, 0x100, "b"}, {0x2000, 0x10, "c"}})
	if len(got) != 2 || got[0].name != "b" || got[1].name != "c" {
		t.Errorf("resolve %v", got)
	}
	if _, err := readJitdump(b[:20]); err == nil {
		t.Error("a short file reads")
	}
	bad := slices.Clone(b)
	bad[0] = 0
	if _, err := readJitdump(bad); err == nil {
		t.Error("a bad magic reads")
	}
	if n := jsName("JSC-DFG: handle_step#EXKaxe"); n != "handle_step (JS)" {
		t.Errorf("jsName %q", n)
	}
	if n := jsName("JSC-Baseline: #AbCdEf"); n != "(anonymous) (JS)" {
		t.Errorf("jsName %q", n)
	}
}

func FuzzReadJitdump(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "jit", "bun-1.4.5-jit-29498-29497.dump"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:100])
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := readJitdump(b)
		if err == nil {
			resolveRegions(rs)
		}
	})
}

func TestPerfMapWriterLeavesForeignMap(t *testing.T) {
	// A pid no process has (above pid_max's default), with a map someone
	// else wrote: left as it is, and said so.
	m := newPerfMapWriter(1 << 30)
	if err := os.WriteFile(m.path, []byte("1000 10 theirs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(m.path)
	m.update()
	m.remove()
	b, err := os.ReadFile(m.path)
	if err != nil || string(b) != "1000 10 theirs\n" {
		t.Errorf("map now %q, %v", b, err)
	}
	if n := m.note(); !strings.Contains(n, "was not made by profcap") {
		t.Errorf("note %q", n)
	}
}

// A preemption does not change the Ruby stack: the thread resumes where
// it was. rbspy's own thread preempts the worker as it reads it, so its
// sample is stamped just inside a short R interval, and a cpu sample in
// the Rust step 2 ms later must still join it rather than the next
// sample, taken after the thread blocked and in its idle loop.
func TestJoinAcrossPreemption(t *testing.T) {
	const pthread, tid = 0x7f00, 42
	t0 := int64(1.8e18)
	rust := nstack("/lib/libworker_core.so:worker_core::compute::checksum_block", "/lib/libworker_core.so:worker_core_process_step",
		"/usr/lib/libffi.so.8:libffi.so.8+0x6f7a", "[unknown]:[unknown]")
	interp := []interpSample{
		{thread: pthread, time: t0 + 10*ms, frames: istack("<main>", "idle_until", "sleep [c function]")},
		{thread: pthread, time: t0 + 23*ms, frames: istack("<main>", "handle_step", "process_step", "call [c function]")},
		{thread: pthread, time: t0 + 33*ms, frames: istack("<main>", "idle_until", "sleep [c function]")},
	}
	cpu := []nativeSample{{tid: tid, comm: "ruby", time: t0 + 25*ms, end: t0 + 25*ms, frames: rust}}
	off := []nativeSample{
		{tid: tid, comm: "ruby", time: t0 + 5*ms, end: t0 + 21*ms, state: "S", frames: nstack("/usr/lib/libc.so.6:ppoll")},
		// rbspy's read: preempted for 60 us, the sample stamped inside it.
		{tid: tid, comm: "ruby", time: t0 + 22*ms + 980*int64(time.Microsecond), end: t0 + 23*ms + 40*int64(time.Microsecond), state: "R", frames: rust},
		{tid: tid, comm: "ruby", time: t0 + 27*ms, end: t0 + 40*ms, state: "S", frames: nstack("/usr/lib/libc.so.6:ppoll")},
	}
	j := newJoiner(interp, cpu, off)
	p, _ := joinNative(j, bundle.CPU, cpu, 10*ms)
	if len(p.Sample) != 1 || !strings.Contains(stackString(p.Sample[0]), "handle_step;process_step") {
		t.Errorf("cpu %v, want the Rust sample under handle_step → process_step", p.Sample)
	}
}
