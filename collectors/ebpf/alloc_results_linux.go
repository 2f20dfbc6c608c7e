//go:build linux && amd64

package ebpf

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
)

// Per-call costs of a probe hit on this 2-core VM (kernel 6.18), from
// bench/ebpf-heap: the trap and the program's fast path. They turn the
// call counts into the estimate of what the target lost, in the note.
const (
	emulatedHit = 190 * time.Nanosecond
	steppedHit  = 2100 * time.Nanosecond

	// The guard (allocTracer.guard) looks every half second, once the
	// tree has run 50 ms of CPU (less says little).
	guardEvery  = 500 * time.Millisecond
	guardMinCPU = 50 * time.Millisecond
)

// allocResults emits the allocs and heap profiles.
func (s *session) allocResults(r *reader, start, end time.Time, note string, emit collectors.Emit) {
	var kinds []bundle.Kind
	for _, k := range []bundle.Kind{bundle.Allocs, bundle.Heap} {
		if s.wants(k) {
			kinds = append(kinds, k)
		}
	}
	if s.allocErr != nil || s.alloc == nil {
		err := s.allocErr
		if err == nil {
			err = fmt.Errorf("the allocation tracer did not start")
		}
		for _, k := range kinds {
			emit(collectors.Result{Kind: k, Collector: Name, Start: start, End: end, Status: bundle.StatusFailed, Err: fmt.Errorf("ebpf: %w", err), Note: note})
		}
		return
	}
	a := s.alloc
	a.finish()
	st := a.stats()
	win := end.Sub(start)
	a.mu.Lock()
	nprocs, failures := a.nprocs, append([]string(nil), a.failures...)
	stopped, why := a.stopped, a.stopReason
	a.mu.Unlock()
	status := bundle.StatusOK
	var stopErr error
	if !stopped.IsZero() && stopped.Before(end) {
		// The guard detached the probes: what was counted ends there.
		end, win = stopped, stopped.Sub(start)
		status, stopErr = bundle.StatusPartial, errors.New(why)
	}
	if note != "" {
		note += "; "
	}
	note += a.costNote(st, win)
	for _, k := range kinds {
		res := collectors.Result{Kind: k, Collector: Name, Start: start, End: end, Status: status, Err: stopErr, Note: note}
		if nprocs == 0 {
			res.Status = bundle.StatusFailed
			res.Err = fmt.Errorf("ebpf: no allocator probed in the process tree (%s)", strings.Join(append(failures, "no malloc, jemalloc or mimalloc symbols in its files"), "; "))
			emit(res)
			continue
		}
		var p *profile.Profile
		if k == bundle.Allocs {
			p = r.allocsProfile(a)
		} else {
			p = r.heapProfile(a)
		}
		p.TimeNanos = start.UnixNano()
		p.DurationNanos = win.Nanoseconds()
		p.Comments = append(p.Comments, a.comments(k, st)...)
		p.Comments = append(p.Comments, stackWarnings(a.mainStats())...)
		p.Comments = append(p.Comments, symNotes(s.sym)...)
		if s.opt.BPFStats {
			p.Comments = append(p.Comments, fmt.Sprintf("ebpf: bpf programs ran %d ns over the window (bpf_stats): %s", s.bpfTime.Nanoseconds(), strings.Join(s.bpfEach, ", ")))
		}
		if err := p.CheckValid(); err != nil {
			res.Status, res.Err = bundle.StatusFailed, fmt.Errorf("ebpf %s profile: %w", k, err)
		} else {
			res.Profile = p
		}
		if stopErr != nil {
			p.Comments = append(p.Comments, bundle.WarningPrefix+why)
		}
		if res.Profile != nil && len(p.Sample) == 0 {
			if k == bundle.Allocs {
				res.Note += "; no samples: the process tree allocated less than the sampling period during the window"
			} else {
				res.Note += "; no samples: nothing allocated during the window was still held at its end"
			}
		}
		emit(res)
	}
}

// mainStats are the stack counters of the tracer's own stats map (the
// helpers of profcap.h count stack failures there).
func (a *allocTracer) mainStats() stats {
	var out stats
	for i := range out {
		var per []uint64
		if err := a.objs.Stats.Lookup(uint32(i), &per); err == nil {
			for _, v := range per {
				out[i] += v
			}
		}
	}
	return out
}

func (r *reader) allocLocs(b *builder, tgid uint32, ustack uint64) []*profile.Location {
	if ustack == cappedStack {
		return []*profile.Location{b.named("[sampling cap reached: stack not taken]")}
	}
	locs := b.userLocs(tgid, r.stack(ustack))
	if len(locs) == 0 {
		locs = []*profile.Location{b.named("[no stack]")}
	}
	return locs
}

func (a *allocTracer) newProfile(types ...string) *profile.Profile {
	p := &profile.Profile{
		PeriodType:        &profile.ValueType{Type: "space", Unit: "bytes"},
		Period:            int64(a.sampleBytes),
		DefaultSampleType: types[1],
	}
	p.SampleType = []*profile.ValueType{{Type: types[0], Unit: "count"}, {Type: types[1], Unit: "bytes"}}
	return p
}

// allocsProfile: bytes and objects allocated during the window, by stack.
func (r *reader) allocsProfile(a *allocTracer) *profile.Profile {
	p := a.newProfile("alloc_objects", "alloc_space")
	b := r.newBuilder(p)
	var k allocAllocKey
	var v allocAllocVal
	it := a.objs.AllocCounts.Iterate()
	for it.Next(&k, &v) {
		l, n := r.labels(k.Tgid, k.Tid)
		b.add(r.allocLocs(b, k.Tgid, k.Ustack), []int64{int64(math.Round(float64(v.Objects) / 65536)), int64(v.Bytes)}, l, n)
	}
	return p
}

// heapProfile: what the samples of the window still held at its end.
func (r *reader) heapProfile(a *allocTracer) *profile.Profile {
	p := a.newProfile("inuse_objects", "inuse_space")
	b := r.newBuilder(p)
	type agg struct{ objects, bytes float64 }
	sums := map[allocAllocKey]*agg{}
	var k allocLiveKey
	var v allocLiveVal
	it := a.objs.Live.Iterate()
	for it.Next(&k, &v) {
		key := allocAllocKey{Tgid: k.Tgid, Tid: v.Tid, Ustack: v.Ustack}
		s := sums[key]
		if s == nil {
			s = &agg{}
			sums[key] = s
		}
		s.bytes += float64(v.Bytes)
		if v.Size > 0 {
			s.objects += float64(v.Bytes) / float64(v.Size)
		}
	}
	keys := make([]allocAllocKey, 0, len(sums))
	for k := range sums {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Tgid != keys[j].Tgid {
			return keys[i].Tgid < keys[j].Tgid
		}
		if keys[i].Tid != keys[j].Tid {
			return keys[i].Tid < keys[j].Tid
		}
		return keys[i].Ustack < keys[j].Ustack
	})
	for _, key := range keys {
		s := sums[key]
		l, n := r.labels(key.Tgid, key.Tid)
		b.add(r.allocLocs(b, key.Tgid, key.Ustack), []int64{int64(math.Round(s.objects)), int64(math.Round(s.bytes))}, l, n)
	}
	return p
}

func kib(n int) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	if n%(1<<10) == 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func mb(b uint64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

// comments explain the profile: how it was sampled, what was probed, what
// was lost.
func (a *allocTracer) comments(k bundle.Kind, st allocStats) []string {
	per := kib(a.sampleBytes)
	c := []string{fmt.Sprintf("ebpf: allocations sampled by bytes at the allocator's entry points (uprobe sessions): one sample per %s allocated on average, Poisson-distributed (an exponential byte countdown per thread, as jemalloc and Go sample), each weighted by the bytes it stands for, size/(1-exp(-size/%s)), so totals are unbiased estimates; sizes are those requested; %d allocation calls and %d frees probed, %d allocations sampled",
		per, per, st[allocAllocStatA_ALLOC_CALLS], st[allocAllocStatA_FREE_CALLS], st[allocAllocStatA_SAMPLED])}
	if k == bundle.Heap {
		c = append(c, fmt.Sprintf("ebpf: heap: the bytes still held at the window's end by allocations sampled during the window (%d frees matched a sample); memory allocated before the window opened is not seen, so this is what the window added to the heap, not the whole heap", st[allocAllocStatA_FREED]))
	}
	a.mu.Lock()
	var files []string
	for _, f := range sortedKeys(a.probed) {
		files = append(files, fmt.Sprintf("%s (%s)", f, a.probed[f]))
	}
	nprocs, late, failures := a.nprocs, a.late, a.failures
	a.mu.Unlock()
	procs := "processes"
	if nprocs == 1 {
		procs = "process"
	}
	c = append(c, fmt.Sprintf("ebpf: probed in %d %s: %s; +N: probed after N bytes of flag-only instructions, where the kernel emulates the instruction", nprocs, procs, strings.Join(files, "; ")))
	if late > 0 {
		c = append(c, fmt.Sprintf("ebpf: %d processes forked or exec'd during the window were probed once seen: their first allocations are missing", late))
	}
	for _, f := range failures {
		c = append(c, bundle.WarningPrefix+"allocator probe not attached: "+f)
	}
	if n := st[allocAllocStatA_NESTED]; n > 0 {
		c = append(c, fmt.Sprintf("ebpf: %d calls made inside another allocator call (realloc(NULL, n) calling malloc, say) were counted once, by the outer call", n))
	}
	if n := st[allocAllocStatA_CAPPED]; n > 0 {
		what := "counted without their stack, under [sampling cap reached: stack not taken]"
		if k == bundle.Heap {
			what = "not tracked: they are missing from this heap profile"
		}
		c = append(c, fmt.Sprintf("%sthe sampling cap (%d samples a second) was reached: %d samples, standing for %s, were %s", bundle.WarningPrefix, a.maxPerSec, n, mb(st[allocAllocStatA_CAPPED_BYTES]), what))
	}
	if n := st[allocAllocStatA_COUNTS_FULL]; n > 0 && k == bundle.Allocs {
		c = append(c, fmt.Sprintf("%s%d samples lost: the count map was full", bundle.WarningPrefix, n))
	}
	if n := st[allocAllocStatA_LIVE_FULL]; n > 0 && k == bundle.Heap {
		c = append(c, fmt.Sprintf("%s%d samples missing: the map of live samples (65536) was full", bundle.WarningPrefix, n))
	}
	if n := st[allocAllocStatA_NO_STORAGE]; n > 0 {
		c = append(c, fmt.Sprintf("%s%d allocation calls not counted: no per-thread state (task storage busy)", bundle.WarningPrefix, n))
	}
	return c
}

// costNote says what the probes cost the target: each probed call traps
// into the kernel, whether sampled or not.
func (a *allocTracer) costNote(st allocStats, win time.Duration) string {
	calls := a.calls(st)
	slow := st[allocAllocStatA_SLOW_CALLS]
	est := probeCost(st)
	n := fmt.Sprintf("allocator probes: %d calls (%.0f a second, %d single-stepped), about %s of the target's CPU time at %s a call (%s single-stepped; bench/ebpf-heap)",
		calls, float64(calls)/max(win.Seconds(), 1e-3), slow, est.Round(time.Millisecond), emulatedHit, steppedHit)
	if a.cpuTree > 0 {
		n += fmt.Sprintf(", %.0f%% of the %s it ran in the window", min(100, 100*est.Seconds()/a.cpuTree.Seconds()), a.cpuTree)
	}
	if st[allocAllocStatA_CAPPED] > 0 {
		n += fmt.Sprintf("; the sampling cap (%d a second) was reached", a.maxPerSec)
	}
	return n
}
