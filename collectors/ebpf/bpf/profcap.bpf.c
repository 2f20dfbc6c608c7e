/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * profcap's BPF programs: one compilation unit, one concern per section
 * (the collector attaches only the programs of the kinds asked for).
 *
 *   process tree  on_fork, on_exec, on_exit: a tracked process's children
 *                 are tracked (procs), so a target means its whole tree
 *   cpu           on_cpu_sample: perf-event sampling on every CPU, counts
 *                 by (tgid, tid, user stack, kernel stack) in cpu_counts
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
	BPF_CORE_READ_STR_INTO(&pr->comm, p, comm);
	proc_event(EV_EXEC, tgid, pr->ppid, p);
	return 0;
}

/* flush_pending records a kept block whose user stack was never taken. */
static __always_inline void add_off(struct off_key *k, u64 ns);

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	u32 tid = p->pid, tgid = p->tgid;
	struct pending *pd = bpf_map_lookup_elem(&pendings, &tid);
	if (pd) {
		struct off_key k = pd->key;
		k.flags |= F_USTACK_LOST;
		stat(STAT_USTACK_LOST);
		add_off(&k, pd->ns);
		if (!bpf_map_delete_elem(&pendings, &tid))
			__sync_fetch_and_add(&npending, -1);
	}
	bpf_map_delete_elem(&starts, &tid);
	bpf_map_delete_elem(&last_users, &tid);
	if (tid != tgid)
		return 0;
	struct proc *pr = bpf_map_lookup_elem(&procs, &tgid);
	if (!pr)
		return 0;
	pr->flags |= P_EXITED;
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
	k.kstack = kernel_stack(ctx);
	k.ustack = user_stack_here(ctx);
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

/* ---- offcpu and wakeup ---- */

static __always_inline void add_off(struct off_key *k, u64 ns)
{
	struct off_val *v = bpf_map_lookup_elem(&off_counts, k);
	if (!v) {
		struct off_val nv = {};
		bpf_map_update_elem(&off_counts, k, &nv, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&off_counts, k);
		if (!v) {
			stat(STAT_OFF_COUNTS_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&v->ns, ns);
	__sync_fetch_and_add(&v->count, 1);
}

static __always_inline u32 state_char(bool preempt, unsigned int st)
{
	if (preempt || (st & 0xff) == 0)
		return 'R';
	if (st & 0x400) /* TASK_NOLOAD: TASK_IDLE */
		return 'I';
	if (st & 1)
		return 'S';
	if (st & 2)
		return 'D';
	if (st & 4)
		return 'T';
	if (st & 8)
		return 't';
	return '?';
}

/* chance returns true with probability t / threshold_ns (t < threshold_ns). */
static __always_inline bool chance(u64 t)
{
	return (((u64)bpf_get_prandom_u32() * threshold_ns) >> 32) < t;
}

static __always_inline void switch_out(void *ctx, struct task_struct *prev, u32 tid, bool preempt, unsigned int prev_state, u64 now)
{
	/* Cheap: a timestamp and the state, written in place into the
	 * thread's entry (kept from block to block: no allocation, no delete
	 * on a hot thread). Only a thread preempted in user mode (by an
	 * interrupt: its saved registers are not a system call's, orig_ax is
	 * -1) has its stacks taken here, in its own context, as it leaves no
	 * syscall exit to take them at; such preemptions come at the rate of
	 * ticks and IPIs. One preempted inside a system call (a wakeup
	 * preemption in write(), say: at the target's switch rate) is
	 * treated as a block and takes its user stack at its syscall exit. */
	u32 state = state_char(preempt, prev_state);
	u64 rk = 0, ru = 0;
	if (state == 'R') {
		struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
		if ((long)BPF_CORE_READ(regs, orig_ax) == -1) {
			rk = kernel_stack(ctx);
			ru = user_stack_here(ctx);
			if (!rk && !ru)
				rk = 1; /* mark: taken (no stack) */
		}
	}
	struct start *s = bpf_map_lookup_elem(&starts, &tid);
	if (s) {
		s->wake_ts = 0;
		s->state = state;
		s->flags = 0;
		s->rustack = ru;
		s->rkstack = rk;
		s->ts = now;
		return;
	}
	struct start ns = {.ts = now, .state = state, .rustack = ru, .rkstack = rk};
	if (bpf_map_update_elem(&starts, &tid, &ns, BPF_ANY))
		stat(STAT_OFF_STARTS_FULL);
}

static __always_inline void switch_in(struct task_struct *next, u32 tid, u32 tgid, u64 now)
{
	struct start *s = bpf_map_lookup_elem(&starts, &tid);
	if (!s || !s->ts)
		return; /* ts 0: not off CPU (the entry is kept for the next block) */
	u64 t = now > s->ts ? now - s->ts : 0;
	u64 w = 0;
	if (t >= threshold_ns) {
		w = t;
		stat(STAT_OFF_EXACT);
	} else if (s->flags & F_SAMPLED) {
		/* Kept at waking with probability t_wake / threshold: weighting
		 * it threshold * t / t_wake keeps the expected total at t. */
		u64 tw = s->wake_ts > s->ts ? s->wake_ts - s->ts : 0;
		w = tw ? threshold_ns * t / tw : threshold_ns;
		stat(STAT_OFF_SAMPLED);
	} else if (!(s->flags & F_WAKE_SEEN) && chance(t)) {
		w = threshold_ns; /* no waking (preempted): decide now */
		stat(STAT_OFF_SAMPLED);
	} else {
		stat(STAT_OFF_SKIPPED);
		s->ts = 0;
		return;
	}
	struct off_key k = {.tgid = tgid, .tid = tid, .state = s->state, .flags = s->flags & (F_WAKER | F_WAKER_IRQ | F_INITIAL)};
	if (s->flags & F_WAKER) {
		k.wustack = s->wustack;
		k.wkstack = s->wkstack;
		k.wtgid = s->wtgid;
		k.wtid = s->wtid;
	}
	if (s->state == 'R' && (s->rustack || s->rkstack)) {
		k.ustack = s->rustack;
		k.kstack = s->rkstack == 1 ? 0 : s->rkstack;
		add_off(&k, w);
		s->ts = 0;
		return;
	}
	/* The kernel stack it blocked in, now (it is still there); the user
	 * stack when it is back in its own context, at its syscall exit. */
	struct stack *st = scratch_stack();
	if (st) {
		long n = bpf_get_task_stack(next, st->ips, sizeof(st->ips), 0);
		if (n > 0) {
			st->nr = (u64)n / 8;
			k.kstack = put_stack(st);
		} else if (n < 0) {
			stat(STAT_STACK_ERR);
		}
	}
	s->ts = 0;
	struct pending *old = bpf_map_lookup_elem(&pendings, &tid);
	if (old) {
		/* Blocked again before a syscall exit: the earlier block keeps
		 * its kernel stack only. */
		struct off_key ok = old->key;
		ok.flags |= F_USTACK_LOST;
		stat(STAT_USTACK_LOST);
		add_off(&ok, old->ns);
		if (!bpf_map_delete_elem(&pendings, &tid))
			__sync_fetch_and_add(&npending, -1);
	}
	struct pending p = {.key = k, .ns = w};
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(next);
	p.uip = BPF_CORE_READ(regs, ip);
	p.usp = BPF_CORE_READ(regs, sp);
	if (!bpf_map_update_elem(&pendings, &tid, &p, BPF_NOEXIST))
		__sync_fetch_and_add(&npending, 1);
	else
		bpf_map_update_elem(&pendings, &tid, &p, BPF_ANY);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
{
	if (!enabled)
		return 0;
	u64 now = bpf_ktime_get_ns();
	u32 ptid = prev->pid, ptgid = prev->tgid;
	if (ptid && tracked(ptgid))
		switch_out(ctx, prev, ptid, preempt, prev_state, now);
	u32 ntid = next->pid, ntgid = next->tgid;
	if (ntid && tracked(ntgid))
		switch_in(next, ntid, ntgid, now);
	return 0;
}

SEC("tp_btf/sched_waking")
int BPF_PROG(on_waking, struct task_struct *p)
{
	if (!enabled)
		return 0;
	u32 tid = p->pid;
	struct start *s = bpf_map_lookup_elem(&starts, &tid);
	if (!s || !s->ts || (s->flags & F_WAKE_SEEN))
		return 0;
	u64 now = bpf_ktime_get_ns();
	s->flags |= F_WAKE_SEEN;
	s->wake_ts = now;
	u64 t = now > s->ts ? now - s->ts : 0;
	/* Decide here whether the block is kept, so that the waker's stacks
	 * are taken only for kept blocks: all of at least threshold_ns, the
	 * shorter with probability t / threshold_ns. */
	if (t < threshold_ns) {
		if (!chance(t))
			return 0;
		s->flags |= F_SAMPLED;
	}
	u64 id = bpf_get_current_pid_tgid();
	s->wtgid = id >> 32;
	s->wtid = (u32)id;
	s->flags |= F_WAKER;
	s->wkstack = kernel_stack(ctx);
	if (in_interrupt()) {
		/* The interrupted task's user stack says nothing of the wakeup. */
		s->flags |= F_WAKER_IRQ;
		stat(STAT_WAKER_IRQ);
	} else if (s->wtid) {
		s->wustack = user_stack_here(ctx);
	}
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
	u64 ip = BPF_CORE_READ(regs, ip), sp = BPF_CORE_READ(regs, sp);
	struct off_key k = p->key;
	u64 ns = p->ns;
	if (ip == p->uip && sp == p->usp) {
		k.ustack = user_stack(ctx, ip, sp);
		struct last_user lu = {.uip = ip, .usp = sp, .ustack = k.ustack};
		bpf_map_update_elem(&last_users, &tid, &lu, BPF_ANY);
	} else {
		/* It blocked outside this syscall (a page fault, say). */
		k.flags |= F_USTACK_STALE;
		stat(STAT_USTACK_STALE);
	}
	if (!bpf_map_delete_elem(&pendings, &tid))
		__sync_fetch_and_add(&npending, -1);
	add_off(&k, ns);
	remember_comm(tid, k.tgid);
	return 0;
}

/* Referenced so that their BTF reaches the Go bindings (bpf2go -type). */
const struct proc_event *unused_proc_event __attribute__((unused));
const enum stat unused_stat __attribute__((unused));
