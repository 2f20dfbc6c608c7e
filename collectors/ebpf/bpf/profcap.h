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
	STAT_MAX,
};

/* Process flags (struct proc). */
#define P_INITIAL 1 /* alive when the capture started */
#define P_FORKED  2 /* forked by a tracked process during the capture */
#define P_EXECED  4
#define P_EXITED  8

/* Switch-out flags (struct start) and key flags (struct off_key). */
#define F_WAKE_SEEN 1  /* sched_waking seen for this block */
#define F_SAMPLED   2  /* kept by the sample at waking */
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
	u32 pad;
	u64 ips[MAX_DEPTH];
};

struct cpu_key {
	u32 tgid;
	u32 tid;
	u64 ustack; /* stack store keys; 0: none */
	u64 kstack;
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
	u64 ns;    /* blocked time, weighted */
	u64 count; /* blocks recorded */
};

/* A thread off CPU: noted at switch-out. */
struct start {
	u64 ts;
	u64 wake_ts;
	u32 state;
	u32 flags;
	u64 rustack; /* preempted threads: stacks taken at switch-out */
	u64 rkstack;
	u64 wustack;
	u64 wkstack;
	u32 wtgid;
	u32 wtid;
};

/* A kept block waiting for its thread's syscall exit (user stack). */
struct pending {
	struct off_key key;
	u64 ns;
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

/* From file offset off up to the next row: the CFA is SP + cfa (cfa > 0),
 * or not SP-based (cfa <= 0: the function has a frame pointer, or the
 * rule is unknown). */
struct row {
	u32 off;
	s32 cfa;
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
	__uint(max_entries, 32768);
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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct start);
} starts SEC(".maps");

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
	__uint(max_entries, 64);
	__type(key, struct file_key);
	__type(value, struct file_rows);
} unwind_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* sized by the collector before load */
	__type(key, u32);
	__type(value, struct row);
} unwind_rows SEC(".maps");

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
		stat(STAT_STACKS_FULL);
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
