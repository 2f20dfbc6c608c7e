/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Allocation sampling: the allocs and heap kinds (docs/design/ebpf-heap.md).
 *
 * One program, on_alloc, runs as a uprobe *session* (Linux 6.13+) on the
 * allocator's entry points of every tracked process: glibc's malloc family,
 * jemalloc's (prefixed or not: tikv-jemallocator's _rjem_*), mimalloc's.
 * The collector attaches it per process and per file with a cookie saying
 * what each address is (enum alloc_role, plus F_OUTER), at the function's
 * first instruction the kernel emulates (see alloc_linux.go: probePoint).
 *
 *   entry   frees: drop the pointer from `live` (a sampled allocation
 *           ended). Allocations: count the size down from a per-thread,
 *           exponentially distributed byte budget (one sample per
 *           sample_bytes on average, as jemalloc and Go do); an allocation
 *           that crosses it is sampled. Only a sampled call asks for the
 *           return half of the session (return 0): the others cost one
 *           probe hit, no return probe.
 *   return  the sampled allocation's pointer: weigh it by the bytes it
 *           stands for, take the user stack (at the return the caller's
 *           frame is whole), add it to alloc_counts and put it in `live`.
 *
 * Shared with profcap.bpf.c through map replacement at load: procs, stacks,
 * comms and the leaf fix-up tables. Counting happens only while `enabled`.
 */
#include "profcap.h"
#include "unwind.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* x86-64 arguments and results in the user registers (the kernel's
 * pt_regs names, which vmlinux.h declares). */
#define ARG1(r) ((r)->di)
#define ARG2(r) ((r)->si)
#define ARG3(r) ((r)->dx)
#define RET(r) ((r)->ax)
#define SP(r) ((r)->sp)
#define IP(r) ((r)->ip)
#define BP(r) ((r)->bp)

extern bool bpf_session_is_return(void) __ksym;
extern __u64 *bpf_session_cookie(void) __ksym;

/* What an attached address is (its attach cookie, low byte). */
enum alloc_role {
	R_ALLOC0 = 1,    /* size in arg 1: malloc, mallocx, valloc, mi_malloc */
	R_ALLOC1 = 2,    /* size in arg 2: aligned_alloc, memalign */
	R_CALLOC = 3,    /* count x size: calloc, mi_calloc */
	R_REALLOC = 4,   /* (old, size): realloc, rallocx, mi_realloc */
	R_MEMPTR = 5,    /* posix_memalign(&ptr, align, size): returns 0, ptr in *arg 1 */
	R_PVALLOC = 6,   /* size rounded up to pages */
	R_FREE = 7,      /* (ptr, ...): free, sdallocx, dallocx, mi_free */
};
#define ROLE_MASK 0xff
/* The function may call another probed entry point (realloc(NULL, n)
 * calls malloc in glibc, mi_realloc calls mi_free): calls made beneath it
 * are its own and are not counted again. */
#define F_OUTER 0x100
/* The kernel single-steps the probed instruction (counted: it costs ten
 * times an emulated one). */
#define F_SLOW 0x200

/* A stack id that means: the sampling cap was reached, no stack taken. */
#define CAPPED_STACK 0xffffffffffffffffULL

enum alloc_stat {
	A_ALLOC_CALLS,  /* allocation calls probed (window only) */
	A_FREE_CALLS,   /* free calls probed */
	A_SLOW_CALLS,   /* calls at a single-stepped probe (F_SLOW) */
	A_NESTED,       /* calls beneath an outer entry point, not counted again */
	A_SAMPLED,      /* allocations sampled */
	A_CAPPED,       /* sampled, but over the cap: counted without a stack */
	A_CAPPED_BYTES, /* the bytes those stand for */
	A_FAILED,       /* sampled calls that returned no memory */
	A_FREED,        /* frees that ended a sampled allocation */
	A_LIVE_FULL,    /* live was full: a sample missing from heap */
	A_COUNTS_FULL,  /* alloc_counts was full */
	A_NO_STORAGE,   /* no per-thread state (task storage busy) */
	A_MAX,
};

/* Samples by (process, thread, user stack), weighted. */
struct alloc_key {
	u32 tgid;
	u32 tid;
	u64 ustack;
};

struct alloc_val {
	u64 samples;
	u64 bytes;   /* the bytes the samples stand for */
	u64 objects; /* the allocations they stand for, 16.16 fixed point */
};

/* A sampled allocation not yet freed. */
struct live_key {
	u32 tgid;
	u32 pad;
	u64 ptr;
};

struct live_val {
	u64 size;  /* requested */
	u64 bytes; /* stands for */
	u64 ustack;
	u32 tid;
	u32 pad;
};

/* Per thread (task storage: created on first use, freed with the thread). */
struct tstate {
	s64 left;      /* bytes until the next sample; 0: not drawn yet */
	u64 mark_sp;   /* an outer entry point's SP at entry, */
	u64 mark_ret;  /* the return address it found there */
	u64 mark_ip;   /* and its probe's address; */
	u64 mark_hijacked; /* its return is probed: the slot holds the trampoline */
	u64 memptr;    /* posix_memalign's out-pointer, for the return */
};

/* Set by the collector before load. */
const volatile u64 sample_bytes = 524288;
const volatile u64 cap_interval_ns = 100000; /* 0: no cap */
const volatile u64 cap_burst_ns = 100000000;
const volatile u32 track_live = 1;
/* log2(1 + (j + 0.5) / 256), 16.16 fixed point. */
const volatile u32 log2_frac[256] = {};
/* x / (1 - exp(-x)) at x = i / 64, 16.16: a sample of size s = x *
 * sample_bytes stands for sample_bytes * f(x) bytes = s / P(sampled). */
const volatile u32 weight_q16[1025] = {};

s64 nlive = 0;
u64 cap_tat = 0; /* the cap's theoretical arrival time (GCRA) */

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tstate);
} tstates SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct alloc_key);
	__type(value, struct alloc_val);
} alloc_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct live_key);
	__type(value, struct live_val);
} live SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, A_MAX);
	__type(key, u32);
	__type(value, u64);
} alloc_stats SEC(".maps");

static __always_inline void astat_add(u32 i, u64 n)
{
	u64 *v = bpf_map_lookup_elem(&alloc_stats, &i);
	if (v)
		*v += n;
}

static __always_inline void astat(u32 i)
{
	astat_add(i, 1);
}

static __always_inline u32 msb(u32 v)
{
	u32 r = 0;
	if (v >> 16) {
		v >>= 16;
		r += 16;
	}
	if (v >> 8) {
		v >>= 8;
		r += 8;
	}
	if (v >> 4) {
		v >>= 4;
		r += 4;
	}
	if (v >> 2) {
		v >>= 2;
		r += 2;
	}
	if (v >> 1)
		r += 1;
	return r;
}

/* draw returns an exponentially distributed byte count of mean
 * sample_bytes: -ln(u) * mean for u uniform in (0, 1), in fixed point.
 * u = r / 2^32 = 2^(b-32) * (1 + f), so -log2(u) = 32 - b - log2(1 + f),
 * with log2(1 + f) from a table on f's top 8 bits. */
static __always_inline s64 draw(void)
{
	u32 r = bpf_get_prandom_u32();
	if (!r)
		r = 1;
	u32 b = msb(r);
	u32 norm = r << (31 - b);
	u32 j = (norm >> 23) & 0xff;
	u64 t = ((u64)(32 - b) << 16) - log2_frac[j]; /* -log2(u), 16.16 */
	u64 e = (t * 45426) >> 16;                       /* x ln 2 = -ln(u) */
	s64 v = (s64)((sample_bytes * e) >> 16);
	return v > 0 ? v : 1;
}

/* weigh returns the bytes a sampled allocation of size bytes stands for:
 * size / (1 - exp(-size / sample_bytes)), so that the sum over samples
 * estimates the bytes allocated without bias. */
static __always_inline u64 weigh(u64 size)
{
	u64 p = sample_bytes;
	if (size >= 16 * p)
		return size;
	u64 xq = (size << 16) / p;
	if (xq >= (1024 << 10))
		return size;
	u32 i = (xq >> 10) & 1023, fr = xq & 1023;
	u64 a = weight_q16[i], b = weight_q16[(i + 1) & 2047];
	u64 f = a + (((b - a) * fr) >> 10);
	u64 w = (p * f) >> 16;
	return w > size ? w : size;
}

/* take_token is the cap: at most one sample per cap_interval_ns on
 * average, with bursts of cap_burst_ns worth (a GCRA bucket; the plain
 * stores can race between CPUs, which lets a few more through). */
static __always_inline bool take_token(void)
{
	if (!cap_interval_ns)
		return true;
	u64 now = bpf_ktime_get_ns();
	u64 tat = cap_tat;
	if (tat < now)
		tat = now;
	if (tat > now + cap_burst_ns)
		return false;
	cap_tat = tat + cap_interval_ns;
	return true;
}

static __always_inline void add_alloc(u32 tgid, u32 tid, u64 ustack, u64 bytes, u64 objects)
{
	struct alloc_key k = {.tgid = tgid, .tid = tid, .ustack = ustack};
	struct alloc_val *v = bpf_map_lookup_elem(&alloc_counts, &k);
	if (!v) {
		struct alloc_val nv = {};
		bpf_map_update_elem(&alloc_counts, &k, &nv, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&alloc_counts, &k);
		if (!v) {
			astat(A_COUNTS_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&v->samples, 1);
	__sync_fetch_and_add(&v->bytes, bytes);
	__sync_fetch_and_add(&v->objects, objects);
}

static __always_inline void drop_live(u32 tgid, u64 ptr)
{
	if (!ptr || nlive <= 0)
		return;
	struct live_key k = {.tgid = tgid, .ptr = ptr};
	if (!bpf_map_delete_elem(&live, &k)) {
		__sync_fetch_and_add(&nlive, -1);
		astat(A_FREED);
	}
}

static __always_inline int alloc_entry(struct pt_regs *ctx)
{
	if (!enabled)
		return 1;
	u64 cookie = bpf_get_attach_cookie(ctx);
	u32 role = cookie & ROLE_MASK;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (cookie & F_SLOW)
		astat(A_SLOW_CALLS);
	if (role == R_FREE) {
		/* A free beneath an outer call (realloc(p, 0) calls free(p))
		 * drops a pointer the outer call already dropped: harmless. */
		astat(A_FREE_CALLS);
		if (track_live)
			drop_live(tgid, ARG1(ctx));
		return 1;
	}
	astat(A_ALLOC_CALLS);
	struct tstate *ts = bpf_task_storage_get(&tstates, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!ts) {
		astat(A_NO_STORAGE);
		return 1;
	}
	u64 sp = SP(ctx), ip = IP(ctx);
	if (ts->mark_sp) {
		/* Beneath an outer call still running: called from it (deeper
		 * on the stack) or tail-called by it (the same SP, another
		 * function), and its return address still in its slot (or the
		 * slot hijacked for its own return probe, which clears the
		 * mark). Otherwise the mark is stale (the outer call
		 * returned): forget it. */
		if (sp < ts->mark_sp || (sp == ts->mark_sp && ip != ts->mark_ip)) {
			u64 ret = 0;
			if (!ts->mark_hijacked)
				bpf_probe_read_user(&ret, sizeof(ret), (void *)ts->mark_sp);
			if (ts->mark_hijacked || ret == ts->mark_ret) {
				astat(A_NESTED);
				return 1;
			}
		}
		ts->mark_sp = 0;
	}
	bool outer = cookie & F_OUTER;
	if (outer) {
		u64 ret = 0;
		bpf_probe_read_user(&ret, sizeof(ret), (void *)sp);
		ts->mark_sp = sp;
		ts->mark_ret = ret;
		ts->mark_ip = ip;
		ts->mark_hijacked = 0;
	}
	u64 size = 0, old = 0, memptr = 0;
	switch (role) {
	case R_ALLOC0:
		size = ARG1(ctx);
		break;
	case R_ALLOC1:
		size = ARG2(ctx);
		break;
	case R_CALLOC: {
		u64 n = ARG1(ctx), s = ARG2(ctx);
		if (n && s > (1ULL << 48) / n)
			return 1; /* overflows: calloc fails */
		size = n * s;
		break;
	}
	case R_REALLOC:
		old = ARG1(ctx);
		size = ARG2(ctx);
		break;
	case R_MEMPTR:
		memptr = ARG1(ctx);
		size = ARG3(ctx);
		break;
	case R_PVALLOC:
		size = (ARG1(ctx) + 4095) & ~4095ULL;
		if (!size)
			size = 4096;
		break;
	default:
		return 1;
	}
	/* realloc frees the old block whatever it returns (a failure, rare,
	 * keeps it: the sample is then lost). */
	if (old && track_live)
		drop_live(tgid, old);
	if (!size || size >= (1ULL << 48))
		return 1;
	s64 left = ts->left;
	if (left <= 0)
		left = draw();
	if ((s64)size < left) {
		ts->left = left - (s64)size;
		return 1; /* the common case: no sample, no return probe */
	}
	ts->left = draw();
	astat(A_SAMPLED);
	if (!take_token()) {
		/* Over the cap: counted (allocs stays unbiased) without the
		 * stack walk, the return probe or a place in live. */
		u64 w = weigh(size);
		add_alloc(tgid, (u32)bpf_get_current_pid_tgid(), CAPPED_STACK, w, (w << 16) / size);
		astat(A_CAPPED);
		astat_add(A_CAPPED_BYTES, w);
		return 1;
	}
	u64 *c = bpf_session_cookie();
	if (!c)
		return 1;
	*c = size | ((u64)role << 56);
	if (role == R_MEMPTR)
		ts->memptr = memptr;
	if (outer)
		ts->mark_hijacked = 1;
	return 0;
}

static __always_inline int alloc_return(struct pt_regs *ctx)
{
	u64 *c = bpf_session_cookie();
	if (!c || !*c)
		return 0;
	u64 size = *c & ((1ULL << 56) - 1);
	u32 role = *c >> 56;
	u64 ptr = RET(ctx);
	struct tstate *ts = bpf_task_storage_get(&tstates, bpf_get_current_task_btf(), 0, 0);
	/* A sampled call is never beneath another: any mark is its own, or
	 * stale. */
	if (ts)
		ts->mark_sp = 0;
	if (role == R_MEMPTR) {
		if ((int)ptr != 0 || !ts || !ts->memptr) {
			astat(A_FAILED);
			return 0;
		}
		ptr = 0;
		bpf_probe_read_user(&ptr, sizeof(ptr), (void *)ts->memptr);
	}
	if (!ptr) {
		astat(A_FAILED);
		return 0;
	}
	if (!enabled || !size)
		return 0;
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	u64 w = weigh(size);
	/* At the return the IP is the caller's return address and the frame
	 * pointer the caller's: the stack is whole from the caller up. */
	u64 ustack = user_stack(ctx, IP(ctx), SP(ctx), BP(ctx), CFI_SLOT_TASK);
	add_alloc(tgid, tid, ustack, w, (w << 16) / size);
	if (track_live) {
		struct live_key k = {.tgid = tgid, .ptr = ptr};
		struct live_val v = {.size = size, .bytes = w, .ustack = ustack, .tid = tid};
		if (!bpf_map_update_elem(&live, &k, &v, BPF_NOEXIST))
			__sync_fetch_and_add(&nlive, 1);
		else if (bpf_map_update_elem(&live, &k, &v, BPF_EXIST))
			astat(A_LIVE_FULL); /* BPF_EXIST: a block freed by a path not probed */
	}
	remember_comm(tid, tgid);
	return 0;
}

SEC("uprobe.session")
int on_alloc(struct pt_regs *ctx)
{
	if (bpf_session_is_return())
		return alloc_return(ctx);
	return alloc_entry(ctx);
}

/* Referenced so that their BTF reaches the Go bindings (bpf2go -type). */
const enum alloc_stat unused_alloc_stat __attribute__((unused));
const enum alloc_role unused_alloc_role __attribute__((unused));
