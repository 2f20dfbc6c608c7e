/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * profcap's BPF programs: one compilation unit, one concern per section
 * (the collector attaches only the programs of the kinds asked for).
 *
 *   process tree  on_fork, on_exec, on_exit: a tracked process's children
 *                 are tracked (procs), so a target means its whole tree
 *   cpu           on_cpu_sample: perf-event sampling on every CPU, counts
 *                 by (tgid, tid, user stack, kernel stack, quarter second
 *                 of the window) in cpu_counts
 *   offcpu        on_switch, on_waking, on_sys_exit: blocked time by
 *   + wakeup      (tgid, tid, stacks, state, waker and its stacks) in
 *                 off_counts; see docs/design/ebpf-offcpu.md
 *
 * Nothing is sent to user space per sample: the collector reads the maps
 * once, at the window's end. Counting happens only while `enabled` is set
 * (the window); process tracking runs from attach to detach so that no
 * fork between the /proc walk and the window's opening is missed.
 */
#include "profcap.h"
#include "unwind.h"
#include "offcpu.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* ---- process tree ---- */

static __always_inline void proc_event(u32 type, u32 tgid, u32 ppid, struct task_struct *t)
{
	struct proc_event e = {.type = type, .tgid = tgid, .ppid = ppid};
	BPF_CORE_READ_STR_INTO(&e.comm, t, comm);
	bpf_ringbuf_output(&events, &e, sizeof(e), 0);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	u32 ptgid = parent->tgid, ctgid = child->tgid;
	if (ctgid == ptgid || !tracked(ptgid))
		return 0; /* a new thread, or not ours */
	struct proc p = {.ppid = ptgid, .flags = P_FORKED};
	BPF_CORE_READ_STR_INTO(&p.comm, child, comm);
	if (bpf_map_update_elem(&procs, &ctgid, &p, BPF_NOEXIST) && !bpf_map_lookup_elem(&procs, &ctgid)) {
		stat(STAT_PROCS_FULL);
		return 0;
	}
	struct cfi_maps *cm = bpf_map_lookup_elem(&cfi_procs, &ptgid);
	if (cm)
		bpf_map_update_elem(&cfi_procs, &ctgid, cm, BPF_ANY); /* a fork's mappings are its parent's */
	proc_event(EV_FORK, ctgid, ptgid, child);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	u32 tgid = p->tgid;
	struct proc *pr = bpf_map_lookup_elem(&procs, &tgid);
	if (!pr)
		return 0;
	pr->flags |= P_EXECED;
	bpf_map_delete_elem(&cfi_procs, &tgid); /* a new image: its files have no rows */
	BPF_CORE_READ_STR_INTO(&pr->comm, p, comm);
	proc_event(EV_EXEC, tgid, pr->ppid, p);
	return 0;
}


SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	u32 tid = p->pid, tgid = p->tgid;
	struct pending *pd = bpf_map_lookup_elem(&pendings, &tid);
	if (pd) {
		if (pd->armed)
			flush_lost(pd); /* exited before its user stack was taken */
		if (!bpf_map_delete_elem(&pendings, &tid) && npending > 0)
			__sync_fetch_and_add(&npending, -1);
	}
	bpf_map_delete_elem(&last_users, &tid); /* its starts entry goes with the task */
	if (tid != tgid)
		return 0;
	struct proc *pr = bpf_map_lookup_elem(&procs, &tgid);
	if (!pr)
		return 0;
	pr->flags |= P_EXITED;
	bpf_map_delete_elem(&cfi_procs, &tgid);
	proc_event(EV_EXIT, tgid, pr->ppid, p);
	return 0;
}

/* ---- cpu ---- */

SEC("perf_event")
int on_cpu_sample(struct bpf_perf_event_data *ctx)
{
	if (!enabled)
		return 0;
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	if (!tid || !tracked(tgid))
		return 0;
	stat(STAT_CPU_SAMPLES);
	struct cpu_key k = {.tgid = tgid, .tid = tid};
	u64 now = bpf_ktime_get_ns();
	k.slot = now > window_start ? (now - window_start) / SLOT_NS : 0;
	k.kstack = kernel_stack(ctx);
	k.ustack = user_stack_here(ctx, CFI_SLOT_NMI);
	u64 period = ctx->sample_period;
	struct cpu_val *v = bpf_map_lookup_elem(&cpu_counts, &k);
	if (!v) {
		struct cpu_val nv = {};
		bpf_map_update_elem(&cpu_counts, &k, &nv, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&cpu_counts, &k);
		if (!v) {
			stat(STAT_CPU_COUNTS_FULL);
			return 0;
		}
	}
	__sync_fetch_and_add(&v->count, 1);
	__sync_fetch_and_add(&v->ns, period);
	remember_comm(tid, tgid);
	return 0;
}

/* ---- offcpu and wakeup (the hot path: offcpu.h) ---- */

/* The kept block waits in pendings for its thread's system call exit. */
static __always_inline void await_user_stack(struct task_struct *next, u32 tid, struct pending *p)
{
	struct pending *old = bpf_map_lookup_elem(&pendings, &tid);
	if (old) {
		if (join_pending(old, p))
			return;
		flush_lost(old);
		if (!bpf_map_delete_elem(&pendings, &tid))
			__sync_fetch_and_add(&npending, -1);
	}
	if (!bpf_map_update_elem(&pendings, &tid, p, BPF_NOEXIST))
		__sync_fetch_and_add(&npending, 1);
	else
		bpf_map_update_elem(&pendings, &tid, p, BPF_ANY);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
{
	return on_switch_body(ctx, preempt, prev, next, prev_state);
}

SEC("tp_btf/sched_waking")
int BPF_PROG(on_waking, struct task_struct *p)
{
	if (!enabled)
		return 0;
	/* A thread still on its CPU has not switched out (woken before it
	 * called schedule, or still switching): no block, or one too short
	 * to matter. Else its last switch-out opened the block, and the
	 * sample point, past that switch-out, says whether it is kept: only
	 * the first group of the entry is read (see struct start). */
	if (p->on_cpu || !p->pid)
		return 0;
	struct start *s = entry(p);
	if (!s)
		return 0;
	u64 now = bpf_ktime_get_ns();
	if (s->sp >= now)
		return 0;
	if (s->ts <= s->in_ts)
		return 0; /* never switched out in the window: no block */
	u64 id = bpf_get_current_pid_tgid();
	u32 wflags = 0;
	s->wtgid = id >> 32;
	s->wtid = (u32)id;
	s->wkstack = kernel_stack(ctx);
	s->wustack = 0;
	if (in_interrupt()) {
		/* The interrupted task's user stack says nothing of the wakeup. */
		wflags = F_WAKER_IRQ;
		stat(STAT_WAKER_IRQ);
	} else if (s->wtid) {
		s->wustack = user_stack_here(ctx, CFI_SLOT_SCHED);
	}
	s->wflags = wflags;
	s->wk_ts = now;
	if (s->wtid)
		remember_comm(s->wtid, s->wtgid);
	stat(STAT_WAKERS);
	return 0;
}

SEC("raw_tp/sys_exit")
int on_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	/* This runs at every system call's exit on the machine: most of the
	 * time nothing waits for one, and a global read says so. */
	if (!npending)
		return 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&pendings, &tid);
	if (!p)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	u64 ip = BPF_CORE_READ(regs, ip), sp = BPF_CORE_READ(regs, sp), bp = BPF_CORE_READ(regs, bp);
	u64 us = ip == p->uip && sp == p->usp ? user_stack(ctx, ip, sp, bp, CFI_SLOT_TASK) : 0;
	struct pending done = *p;
	if (!bpf_map_delete_elem(&pendings, &tid))
		__sync_fetch_and_add(&npending, -1);
	pending_done(&done, tid, ip, sp, us);
	return 0;
}

/* open_blocks runs once at the window's end (the collector reads its
 * iterator right after switching counting off): it copies every open
 * block of the tree's threads (a switch-out not followed by a switch-in,
 * or blocked at the opening and not seen since) from the task storage,
 * which user space cannot walk, into open_out. */
SEC("iter/task")
int open_blocks(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	if (!task || !task->pid)
		return 0;
	struct start *s = entry(task);
	if (!s || s->ts <= s->in_ts)
		return 0;
	u32 tid = task->pid;
	struct start o = *s;
	if (o.wk_ts <= o.ts)
		o.wk_ts = 0; /* a waker of an earlier block */
	if (task->__state == 0 /* TASK_RUNNING: woken, waiting for a CPU */)
		o.flags |= F_WAKE_SEEN;
	bpf_map_update_elem(&open_out, &tid, &o, BPF_ANY);
	return 0;
}

/* Referenced so that their BTF reaches the Go bindings (bpf2go -type). */
const struct proc_event *unused_proc_event __attribute__((unused));
const enum stat unused_stat __attribute__((unused));
