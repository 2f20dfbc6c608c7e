/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Types and maps shared by profcap's BPF programs. Every struct here has a
 * twin of the same name in the generated Go bindings (bpf2go -type), so the
 * two sides cannot drift. See docs/design/ebpf-offcpu.md for the sizes.
 */
#ifndef PROFCAP_H
#define PROFCAP_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define MAX_DEPTH 127 /* PERF_MAX_STACK_DEPTH, kernel.perf_event_max_stack's default */
#define TASK_COMM_LEN 16

/* Counters the collector reads at the end (stats, a per-CPU array). */
enum stat {
	STAT_CPU_SAMPLES,
	STAT_CPU_COUNTS_FULL,
	STAT_STACK_ERR,       /* bpf_get_stack failed */
	STAT_STACKS_FULL,     /* the stack store is full: the stack is lost */
	STAT_OFF_EXACT,       /* off-CPU blocks >= threshold, recorded exactly */
	STAT_OFF_SAMPLED,     /* shorter blocks kept by the weighted sample */
	STAT_OFF_SKIPPED,     /* shorter blocks not kept */
	STAT_OFF_STARTS_FULL, /* no room to note a switch-out */
	STAT_OFF_COUNTS_FULL,
	STAT_USTACK_STALE,    /* the thread left the kernel elsewhere: user stack unknown */
	STAT_USTACK_LOST,     /* blocked again, or exited, before its stack was taken */
	STAT_FIXUPS,          /* frames added by the leaf fix-up */
	STAT_WAKERS,          /* waker stacks taken */
	STAT_WAKER_IRQ,       /* wakers in interrupt context (no user stack) */
	STAT_PROCS_FULL,      /* a forked process could not be tracked */
	STAT_TW_FAILED,       /* a task work could not be scheduled: user stack lost */
	STAT_STACKS_BUSY,     /* the store was busy on this CPU, or could not allocate for a moment */
	STAT_CFI_STACKS,      /* user stacks walked by CFI */
	STAT_CFI_CUT,         /* of which the walk stopped before the outermost frame */
	STAT_MAX,
};

/* Process flags (struct proc). */
#define P_INITIAL 1 /* alive when the capture started */
#define P_FORKED  2 /* forked by a tracked process during the capture */
#define P_EXECED  4
#define P_EXITED  8

/* Switch-out flags (struct start) and key flags (struct off_key). */
#define F_WAKE_SEEN 1  /* woken (runnable) when the window ended */
#define F_WAKER     4  /* waker fields are set */
#define F_WAKER_IRQ 8  /* the waker ran in interrupt context */
#define F_USTACK_STALE 16
#define F_USTACK_LOST  32
#define F_INITIAL 64   /* blocked when the window opened (inserted by the collector) */

/* A tracked process: the target and its descendants. */
struct proc {
	u32 ppid;
	u32 flags;
	char comm[TASK_COMM_LEN];
};

/* A stack in the store: ips[0] is the innermost frame. */
struct stack {
	u32 nr;
	u32 flags; /* STACK_CUT; not part of the store's hash */
	u64 ips[MAX_DEPTH];
};

#define STACK_CUT 1 /* a CFI walk stopped before the outermost frame */

/* cpu samples count by time slot of the window: a quarter second, so that
 * the report's outlier test can draw a window's samples in dozens of
 * blocks (the ticks of one request or step together), and its timeline
 * whole seconds of four. */
#define SLOT_NS 250000000ULL

struct cpu_key {
	u32 tgid;
	u32 tid;
	u64 ustack; /* stack store keys; 0: none */
	u64 kstack;
	u32 slot; /* SLOT_NS of the window since it opened: 0 is the first */
	u32 pad;
};

struct cpu_val {
	u64 count;
	u64 ns; /* sample periods summed (cpu-clock: nanoseconds) */
};

struct off_key {
	u32 tgid;
	u32 tid;
	u64 ustack;
	u64 kstack;
	u64 wustack; /* the waker's stacks */
	u64 wkstack;
	u32 wtgid;
	u32 wtid;
	u32 state; /* 'S', 'D', 'R', 'I', '?' */
	u32 flags;
};

struct off_val {
	u64 ns;      /* blocked time, weighted */
	u64 count;   /* blocks recorded */
	u64 wake_ns; /* blocked time up to the wakeup, weighted (wakeup kind) */
};

/* A thread's entry in starts (task-local storage): whether it is the
 * tree's, its open block, and the block's waker. Three groups, each on
 * cache lines of its own, by who writes them: a line written on one CPU
 * and read on another moves between them, and on a switch-heavy target
 * (two threads on two CPUs waking each other) such transfers were most of
 * the programs' cost. The storage's header (its map pointer, read by
 * every lookup) sits just before the first group; the groups are 64
 * bytes apart whatever the allocation's alignment. */
#define M_TRACKED   1
#define M_UNTRACKED 2

struct start {
	/* Read at every wakeup, written rarely (first sight; a sample
	 * point passed). */
	u32 mark; /* M_TRACKED, M_UNTRACKED; 0: being created */
	u32 tgid;
	u64 sp;   /* the thread's next sample point (see the off-CPU design) */
	u64 gap0[8];
	/* The thread's own CPU's, written at every switch. */
	u64 ts;    /* the last switch-out (kept from block to block) */
	u64 in_ts; /* the last switch-in: the block is open while ts > in_ts */
	u32 state;
	u32 flags;
	u64 rustack; /* preempted threads: stacks taken at switch-out */
	u64 rkstack;
	u64 gap1[8];
	/* The waker's, written at a wakeup that has its stacks taken; valid
	 * for the block when wk_ts > ts. */
	u64 wk_ts;
	u64 wustack;
	u64 wkstack;
	u32 wtgid;
	u32 wtid;
	u32 wflags; /* F_WAKER_IRQ */
	u32 pad;
};

/* A kept block waiting for its thread's syscall exit (user stack). */
struct pending {
	struct off_key key;
	u64 ns;
	u64 wake_ns;
	u32 armed; /* 1: waiting; 0: done (switchtw.bpf.c keeps the entry) */
	u32 has2;  /* a second block in the same kernel entry (key2) */
	/* A thread can block twice before it is back in user space (a
	 * futex wait, then a preemption on the way out): both have the user
	 * stack of that one entry. */
	struct off_key key2;
	u64 ns2;
	u64 wake_ns2;
	struct bpf_task_work tw; /* switchtw.bpf.c's task work */
	u64 uip; /* user registers when it blocked */
	u64 usp;
};

/* A thread's last user stack taken at a syscall exit, by the user
 * registers it had: a thread still blocked at the window's end with the
 * same registers blocked at the same place. */
struct last_user {
	u64 uip;
	u64 usp;
	u64 ustack;
};

struct comm {
	u32 tgid;
	u32 pad;
	char comm[TASK_COMM_LEN];
};

/* Leaf fix-up (unwind.h): a file with CFI rows, by its inode. */
struct file_key {
	u64 ino;
	u32 dev; /* kernel dev_t: major << 20 | minor */
	u32 pad;
};

struct file_rows {
	u32 first; /* index of its first row in unwind_rows */
	u32 count;
};

/* From file offset off up to the next row: the CFA is SP + cfa (cfa > 1),
 * RBP + -cfa (cfa < 0, a function with a frame pointer), SP + 8 or 16 by
 * the PC's place in a PLT entry (CFA_PLT), none (CFA_END: the outermost
 * frame), or unknown (0: an expression). rbp != 0: the caller's RBP is
 * saved at CFA + rbp. The return address is at CFA - 8. */
struct row {
	u32 off;
	s32 cfa;
	s32 rbp;
};

#define CFA_PLT ((s32)0x80000000)
#define CFA_END 1 /* the outermost frame: its return address is undefined */

/* CFI unwinding (unwind.h): the executable mappings of a process whose
 * code has no frame pointers, sorted by start, each with its file's rows
 * (count 0: none; frames there are walked by frame pointer). */
#define MAX_CFI_MAPS 128

struct cfi_map {
	u64 start;
	u64 end;
	u64 off; /* the file offset of start */
	u32 first;
	u32 count;
};

struct cfi_maps {
	u32 n;
	u32 pad;
	struct cfi_map m[MAX_CFI_MAPS];
};

#define EV_FORK 1
#define EV_EXEC 2
#define EV_EXIT 3

struct proc_event {
	u32 type;
	u32 tgid;
	u32 ppid;
	u32 pad;
	char comm[TASK_COMM_LEN];
};

/* Set by the collector before load. */
const volatile u64 threshold_ns = 1000000;
/* Set by the collector when the window opens and ends. */
u32 enabled = 0;
/* Set by the collector as the window opens: its CLOCK_MONOTONIC ns. */
u64 window_start = 0;
/* Blocks waiting in pendings for their syscall exit. */
s64 npending = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, struct proc);
} procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, u64);
	__type(value, struct stack);
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct stack);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144); /* (thread, stacks) by slot: grows as used */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cpu_key);
	__type(value, struct cpu_val);
} cpu_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct off_key);
	__type(value, struct off_val);
} off_counts SEC(".maps");

/* Every thread seen switching during the window has an entry, the tree's
 * marked M_TRACKED: the hot path (every switch and wakeup on the machine)
 * is one task-local storage lookup, a pointer from the task, where hash
 * lookups by thread and by process cost it most of its time (see
 * docs/design/ebpf-offcpu.md). Freed with the task or the map. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct start);
} starts SEC(".maps");

/* Threads of the tree already blocked when the window opened, written by
 * the collector then (user space cannot reach a thread's task storage
 * without a pidfd of it): taken into the thread's entry when it is first
 * seen. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct start);
} initial SEC(".maps");

/* Blocks still open at the window's end, by thread: the open_blocks
 * iterator copies them here from the task storage for the collector. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct start);
} open_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct pending);
} pendings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct comm);
} comms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct last_user);
} last_users SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, struct file_key);
	__type(value, struct file_rows);
} unwind_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* sized by the collector before load */
	__type(key, u32);
	__type(value, struct row);
} unwind_rows SEC(".maps");

/* Processes walked by CFI, by tgid: seeded by the collector, copied to a
 * child at fork (same mappings), dropped at exec and exit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, u32);
	__type(value, struct cfi_maps);
} cfi_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, u32);
	__type(value, u64);
} stats SEC(".maps");

static __always_inline void stat(u32 i)
{
	u64 *v = bpf_map_lookup_elem(&stats, &i);
	if (v)
		(*v)++;
}

static __always_inline bool tracked(u32 tgid)
{
	return tgid && bpf_map_lookup_elem(&procs, &tgid);
}

/* log2(1 + i/256) in 1/65536ths. */
static const u16 gap_log2[256] = {
	0, 369, 736, 1102, 1466, 1829, 2190, 2551, 2909, 3267, 3623, 3978, 4331, 4683, 5034, 5384,
	5732, 6079, 6425, 6769, 7112, 7454, 7795, 8134, 8473, 8810, 9146, 9480, 9814, 10146, 10477, 10807,
	11136, 11464, 11791, 12116, 12440, 12764, 13086, 13407, 13727, 14046, 14363, 14680, 14996, 15310, 15624, 15937,
	16248, 16559, 16868, 17177, 17484, 17791, 18096, 18401, 18704, 19007, 19308, 19609, 19909, 20207, 20505, 20802,
	21098, 21393, 21687, 21980, 22272, 22564, 22854, 23144, 23433, 23720, 24007, 24293, 24579, 24863, 25146, 25429,
	25711, 25992, 26272, 26551, 26830, 27108, 27384, 27660, 27936, 28210, 28484, 28757, 29029, 29300, 29571, 29840,
	30109, 30378, 30645, 30912, 31178, 31443, 31707, 31971, 32234, 32496, 32758, 33019, 33279, 33538, 33797, 34055,
	34312, 34569, 34825, 35080, 35334, 35588, 35841, 36094, 36346, 36597, 36847, 37097, 37346, 37595, 37842, 38090,
	38336, 38582, 38827, 39072, 39316, 39559, 39802, 40044, 40286, 40527, 40767, 41006, 41246, 41484, 41722, 41959,
	42196, 42432, 42667, 42902, 43137, 43370, 43603, 43836, 44068, 44300, 44530, 44761, 44990, 45220, 45448, 45676,
	45904, 46131, 46357, 46583, 46809, 47034, 47258, 47482, 47705, 47928, 48150, 48372, 48593, 48813, 49034, 49253,
	49472, 49691, 49909, 50127, 50344, 50560, 50776, 50992, 51207, 51422, 51636, 51850, 52063, 52276, 52488, 52700,
	52911, 53122, 53332, 53542, 53751, 53960, 54169, 54377, 54584, 54791, 54998, 55204, 55410, 55615, 55820, 56025,
	56229, 56432, 56635, 56838, 57040, 57242, 57443, 57644, 57845, 58045, 58245, 58444, 58643, 58841, 59039, 59237,
	59434, 59631, 59827, 60023, 60219, 60414, 60609, 60803, 60997, 61190, 61384, 61576, 61769, 61961, 62152, 62343,
	62534, 62725, 62915, 63104, 63294, 63483, 63671, 63859, 64047, 64234, 64421, 64608, 64794, 64980, 65166, 65351,
};

/* exp_gap draws an exponential time of mean threshold_ns: the gaps of a
 * Poisson process, -ln(U) * threshold = ln 2 * (32 - log2(u)) * threshold
 * for a uniform 32-bit u, log2 from the position of u's top bit and a
 * table of its next 8 bits (relative error < 1/256). */
static __always_inline u64 exp_gap(void)
{
	u32 u = bpf_get_prandom_u32() | 1, top = 0, v = u;
	if (v >> 16) { top += 16; v >>= 16; }
	if (v >> 8) { top += 8; v >>= 8; }
	if (v >> 4) { top += 4; v >>= 4; }
	if (v >> 2) { top += 2; v >>= 2; }
	if (v >> 1) { top += 1; }
	u32 frac = top >= 8 ? (u >> (top - 8)) & 0xff : (u << (8 - top)) & 0xff;
	u64 nlog2 = ((u64)(32 - top) << 16) - gap_log2[frac]; /* -log2(u/2^32), 1/65536ths */
	u64 nats = (nlog2 * 45426) >> 16; /* * ln 2 */
	return (threshold_ns * nats) >> 16;
}

/* first_sight creates t's entry: marked by whether its process is the
 * tree's (the tree is known before the window opens, and a process forked
 * into it during the window is added before its first thread runs), with
 * the block the collector noted if it was blocked at the opening. */
static __noinline struct start *first_sight(struct task_struct *t)
{
	u32 tgid = t->tgid, tid = t->pid;
	bool tr = tracked(tgid);
	struct start *s = bpf_task_storage_get(&starts, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s) {
		if (tr)
			stat(STAT_OFF_STARTS_FULL);
		return 0;
	}
	if (!tr) {
		s->mark = M_UNTRACKED;
		return 0;
	}
	s->tgid = tgid;
	struct start *in = bpf_map_lookup_elem(&initial, &tid);
	if (in) {
		s->ts = in->ts;
		s->state = in->state;
		s->flags = in->flags;
		bpf_map_delete_elem(&initial, &tid);
	}
	s->sp = (s->ts ? s->ts : bpf_ktime_get_ns()) + exp_gap();
	s->mark = M_TRACKED;
	return s;
}

/* entry is the tree's thread t's entry, or 0 for a thread not the tree's. */
static __always_inline struct start *entry(struct task_struct *t)
{
	struct start *s = bpf_task_storage_get(&starts, t, 0, 0);
	if (s)
		return s->mark == M_TRACKED ? s : 0;
	return first_sight(t);
}

/* remember_comm notes the current thread's name (it may exit before the
 * collector reads /proc). */
static __always_inline void remember_comm(u32 tid, u32 tgid)
{
	struct comm c = {.tgid = tgid};
	bpf_get_current_comm(c.comm, sizeof(c.comm));
	bpf_map_update_elem(&comms, &tid, &c, BPF_ANY);
}

/* put_stack stores s (nr frames) under a 64-bit hash of its frames and
 * returns the hash (0: not stored). A hash map with real keys, not a
 * STACK_TRACE map: that one drops a stack whose bucket is taken (about one
 * in eight with 2,000 stacks in 8,192 buckets), and it cannot hold stacks
 * the programs edited (the leaf fix-up) or took of another task. */
static __always_inline u64 put_stack(struct stack *s)
{
	u64 h = 14695981039346656037ULL;
	u32 nr = s->nr;
	for (int i = 0; i < MAX_DEPTH; i++) {
		if (i >= nr)
			break;
		h ^= s->ips[i];
		h *= 1099511628211ULL;
		h ^= h >> 29;
	}
	h ^= nr;
	if (h == 0)
		h = 1;
	if (bpf_map_lookup_elem(&stacks, &h))
		return h;
	long err = bpf_map_update_elem(&stacks, &h, s, BPF_NOEXIST);
	if (err && err != -17 /* EEXIST */) {
		/* -E2BIG: max_entries reached; else busy (-EBUSY: a program
		 * interrupted another's write to the bucket on this CPU) or out
		 * of memory for a moment (-ENOMEM: the allocator's per-CPU cache
		 * empty in a context that cannot refill it). */
		stat(err == -7 /* E2BIG */ ? STAT_STACKS_FULL : STAT_STACKS_BUSY);
		return 0;
	}
	return h;
}

static __always_inline struct stack *scratch_stack(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

/* kernel_stack stores the current kernel stack. */
static __always_inline u64 kernel_stack(void *ctx)
{
	struct stack *s = scratch_stack();
	if (!s)
		return 0;
	long n = bpf_get_stack(ctx, s->ips, sizeof(s->ips), 0);
	if (n <= 0) {
		if (n < 0)
			stat(STAT_STACK_ERR);
		return 0;
	}
	s->nr = (u64)n / 8;
	return put_stack(s);
}

#endif
