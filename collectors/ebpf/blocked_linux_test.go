//go:build linux && amd64

package ebpf

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
)

// blockedTarget is the target in mode "blocked": its reader thread blocks
// in wait_input() on its stdin, its napper in long_nap(); reads says how
// long each of the reader's reads blocked, as the target measured it.
type blockedTarget struct {
	pid   int
	stdin io.WriteCloser
	reads chan float64
}

func startBlocked(t *testing.T) *blockedTarget {
	t.Helper()
	cmd := execTarget(t, "blocked")
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
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	bt := &blockedTarget{pid: cmd.Process.Pid, stdin: in, reads: make(chan float64, 16)}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("the target did not start: %q", sc.Text())
	}
	go func() {
		defer close(bt.reads)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "read_blocked "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				bt.reads <- f
			}
		}
	}()
	return bt
}

// line sends the reader a line and returns how long the read it ends
// blocked, by the target's clock.
func (bt *blockedTarget) line(t *testing.T, s string) time.Duration {
	t.Helper()
	if _, err := fmt.Fprintln(bt.stdin, s); err != nil {
		t.Fatal(err)
	}
	f, ok := <-bt.reads
	if !ok {
		t.Fatal("the target exited without reporting its read")
	}
	return time.Duration(f * float64(time.Second))
}

// threadIn is the time of a thread's samples that name fn.
func threadIn(p *profile.Profile, thread, fn string) time.Duration {
	return time.Duration(sum(p, 0, func(s *profile.Sample) bool { return s.Label["thread"][0] == thread && hasFunc(s, fn) }))
}

// notTaken lists a thread's samples with a "[user stack not taken" frame.
func notTaken(p *profile.Profile, thread string) []string {
	var out []string
	for _, s := range p.Sample {
		if s.Label["thread"][0] != thread {
			continue
		}
		for _, l := range s.Location {
			if n := l.Line[0].Function.Name; strings.HasPrefix(n, "[user stack not taken") {
				out = append(out, stackString(s))
			}
		}
	}
	return out
}

// TestStillBlockedStacks: threads blocked through the whole window, in
// read(2) on a pipe (wait_input) and in a nanosleep of an hour
// (long_nap), show the whole window under the function that blocked,
// their user stacks walked by the task iterator at the window's end.
func TestStillBlockedStacks(t *testing.T) {
	needEBPF(t)
	bt := startBlocked(t)
	res, w := record(t, New(Options{}), bt.pid, 3*time.Second, bundle.OffCPU, bundle.Wakeup)
	blocked := bt.line(t, "q")
	win := w.Ended().Sub(w.Start)
	// The target's own measure: its read began before the window and
	// ended after it.
	t.Logf("the target's read blocked %s; window %s", blocked, win)
	if blocked < win {
		t.Fatalf("the target's read blocked %s, less than the %s window: it did not block through it", blocked, win)
	}
	p := res[bundle.OffCPU].Profile
	top(t, p, 0, 4)
	for _, c := range p.Comments {
		if strings.Contains(c, "window's end") {
			t.Log(c)
		}
	}
	for _, tc := range []struct{ thread, fn, caller string }{{"reader", "wait_input", "reader"}, {"napper", "long_nap", "napper"}} {
		got := threadIn(p, tc.thread, tc.fn)
		t.Logf("%s in %s: %s of %s (%.1f%%)", tc.thread, tc.fn, got, win, 100*got.Seconds()/win.Seconds())
		if r := got.Seconds() / win.Seconds(); r < 0.9 || r > 1.1 {
			t.Errorf("%s: %s has %.1f%% of the window, want 90-110%%", tc.thread, tc.fn, r*100)
		}
		if got := threadIn(p, tc.thread, tc.caller); got.Seconds() < 0.9*win.Seconds() {
			t.Errorf("%s: its caller %s has %s: the walk stopped at the leaf", tc.thread, tc.caller, got)
		}
		if nt := notTaken(p, tc.thread); len(nt) > 0 {
			t.Errorf("%s: user stack not taken: %q", tc.thread, nt)
		}
	}
	// The kernel stack is the iterator's too: the read's, in the pipe.
	if got := time.Duration(sum(p, 0, func(s *profile.Sample) bool {
		return s.Label["thread"][0] == "reader" && slices.ContainsFunc(s.Location, func(l *profile.Location) bool {
			return strings.Contains(l.Line[0].Function.Name, "pipe_read")
		})
	})); got.Seconds() < 0.9*win.Seconds() {
		t.Errorf("reader: %s under a pipe_read kernel frame", got)
	}
	if !slices.ContainsFunc(p.Comments, func(c string) bool { return strings.Contains(c, "task iterator") }) {
		t.Errorf("no comment on the task iterator: %q", p.Comments)
	}
	// The wakeup profile has the same blocked stacks, under a frame that
	// says they were not woken.
	wp := res[bundle.Wakeup].Profile
	if got := time.Duration(sum(wp, 0, func(s *profile.Sample) bool {
		return s.Label["thread"][0] == "reader" && hasFunc(s, "wait_input") && hasFunc(s, "[not woken: still blocked at the window's end]")
	})); got.Seconds() < 0.9*win.Seconds() {
		t.Errorf("wakeup: reader in wait_input, not woken: %s of %s", got, win)
		top(t, wp, 0, 4)
	}
}

// TestStillBlockedFallback: without the task iterator (as on a kernel
// that refuses it), a thread still blocked at the window's end shows the
// user stack of its previous block, labelled so; one without a previous
// block says its stack was not taken; the note says why.
func TestStillBlockedFallback(t *testing.T) {
	needEBPF(t)
	bt := startBlocked(t)
	var first time.Duration
	var firstEnd time.Time
	done := make(chan struct{})
	res, w := recordThen(t, New(Options{noBlockedIter: true}), bt.pid, 3*time.Second, func() {
		// Inside the window (not in this callback, which the collector
		// waits for): the reader's read returns, its user stack taken at
		// its syscall exit, and it blocks again in the same read until
		// after the window.
		go func() {
			defer close(done)
			time.Sleep(500 * time.Millisecond)
			fmt.Fprintln(bt.stdin, "x")
			first = time.Duration(<-bt.reads * float64(time.Second))
			firstEnd = time.Now() // a little after it returned
		}()
	}, bundle.OffCPU)
	<-done
	second := bt.line(t, "q")
	win := w.Ended().Sub(w.Start)
	t.Logf("the target's reads blocked %s, then %s; window %s", first, second, win)
	if first+second < win {
		t.Fatalf("the target's reads blocked %s in all, less than the %s window", first+second, win)
	}
	r := res[bundle.OffCPU]
	p := r.Profile
	top(t, p, 0, 8)
	got := threadIn(p, "reader", "wait_input")
	t.Logf("reader in wait_input: %s of %s (%.1f%%); note %q", got, win, 100*got.Seconds()/win.Seconds(), r.Note)
	if ratio := got.Seconds() / win.Seconds(); ratio < 0.9 || ratio > 1.1 {
		t.Errorf("reader: wait_input has %.1f%% of the window, want 90-110%%", ratio*100)
	}
	prev := time.Duration(sum(p, 0, func(s *profile.Sample) bool {
		return s.Label["thread"][0] == "reader" && hasFunc(s, "wait_input") && slices.Equal(s.Label["ustack"], []string{prevUserLabel})
	}))
	// The second read, open at the end, has the previous block's stack:
	// from the first read's return to the window's end.
	want := w.Ended().Sub(firstEnd)
	t.Logf("labelled ustack=%q: %s, the second read's part of the window %s", prevUserLabel, prev, want)
	if ratio := prev.Seconds() / want.Seconds(); ratio < 0.9 || ratio > 1.1 {
		t.Errorf("reader: %s labelled ustack=%q, want the second read's %s", prev, prevUserLabel, want)
	}
	if nt := notTaken(p, "napper"); len(nt) == 0 {
		t.Errorf("napper, blocked all window with no previous block, has a user stack: %v", threadIn(p, "napper", "long_nap"))
	}
	if !strings.Contains(r.Note, "previous block") || !strings.Contains(r.Note, "task iterator") {
		t.Errorf("the note does not say the fallback: %q", r.Note)
	}
}
