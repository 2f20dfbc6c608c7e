/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The off-CPU hot path, shared by the two sched_switch programs: the one
 * in profcap.bpf.c takes a kept block's user stack at its thread's next
 * system call exit (raw_tp/sys_exit, which puts every system call on the
 * machine on the tracing slow path), the one in switchtw.bpf.c by a BPF
 * task work that runs in the thread's context as it returns to user space
 * (bpf_task_work_schedule_resume, Linux 6.18), with no sys_exit program.
 * The collector uses the second where the kernel loads it.
 */
#ifndef PROFCAP_OFFCPU_H
#define PROFCAP_OFFCPU_H

#include "profcap.h"
#include "unwind.h"

static __always_inline void add_off(struct off_key *k, u64 ns, u64 wake_ns)
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
	if (wake_ns)
		__sync_fetch_and_add(&v->wake_ns, wake_ns);
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

/*
 * Which blocks are kept (docs/design/ebpf-offcpu.md): every block of at
 * least threshold_ns exactly, and the shorter by sample points, a Poisson
 * process of rate 1/threshold_ns per thread (sp, the next point, drawn by
 * exp_gap). A block that contains a point is kept and weighs
 *
 *     threshold + (end - sp)
 *
 * which is threshold times the expected number of points in it given the
 * first at sp: its expected weight is its length, so totals are unbiased,
 * and a thread's points come at most 1/threshold a second (1,000 at 1 ms)
 * whatever its switch rate. The point is what makes the wakeup cheap: the
 * waker decides by sp alone, on a line its CPU keeps (the thread's CPU
 * writes sp only when a point has passed), where a decision by the block's
 * start would read a line written at every switch on the other CPU.
 */

static __always_inline void switch_out(void *ctx, struct start *s, bool preempt, unsigned int prev_state, u64 now)
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
		if ((long)regs->orig_ax == -1) { /* a BTF pointer: a plain load */
			rk = kernel_stack(ctx);
			ru = user_stack_here(ctx, CFI_SLOT_SCHED);
			if (!rk && !ru)
				rk = 1; /* mark: taken (no stack) */
		}
	}
	/* A point that passed while it ran falls in no block: the next is
	 * drawn from now (the process is memoryless). */
	if (s->sp < now)
		s->sp = now + exp_gap();
	s->state = state;
	s->flags = 0;
	s->rustack = ru;
	s->rkstack = rk;
	s->ts = now;
}

/* await_user_stack (the includer's) keeps p until its thread is back in
 * its own context, where its user stack is taken. */
static __always_inline void await_user_stack(struct task_struct *next, u32 tid, struct pending *p);

static __always_inline void switch_in(struct task_struct *next, struct start *s, u64 now)
{
	u32 tid = next->pid, tgid = s->tgid;
	s->in_ts = now;
	u64 t = now > s->ts ? now - s->ts : 0;
	u64 sp = s->sp, w = 0, ww = 0;
	if (t >= threshold_ns) {
		w = t;
		stat(STAT_OFF_EXACT);
	} else if (sp < now) {
		w = threshold_ns + (now - sp);
		stat(STAT_OFF_SAMPLED);
	} else {
		stat(STAT_OFF_SKIPPED);
		return;
	}
	if (sp < now)
		s->sp = now + exp_gap();
	struct off_key k = {.tgid = tgid, .tid = tid, .state = s->state, .flags = s->flags & F_INITIAL};
	u64 wk = s->wk_ts;
	if (wk > s->ts && sp < wk) {
		/* Its waker was taken (a point before the wakeup): the wakeup
		 * kind weighs the time up to the wakeup the same way. */
		k.flags |= F_WAKER | (s->wflags & F_WAKER_IRQ);
		k.wustack = s->wustack;
		k.wkstack = s->wkstack;
		k.wtgid = s->wtgid;
		k.wtid = s->wtid;
		ww = threshold_ns + (wk - sp);
	}
	if (s->state == 'R' && (s->rustack || s->rkstack)) {
		k.ustack = s->rustack;
		k.kstack = s->rkstack == 1 ? 0 : s->rkstack;
		add_off(&k, w, ww);
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
	struct pending p = {.key = k, .ns = w, .wake_ns = ww, .armed = 1};
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(next);
	p.uip = BPF_CORE_READ(regs, ip);
	p.usp = BPF_CORE_READ(regs, sp);
	await_user_stack(next, tid, &p);
}

/* flush_lost records kept blocks that were still waiting for their user
 * stack when their thread blocked again elsewhere, or exited: they keep
 * their kernel stack only. */
static __always_inline void flush_lost(struct pending *old)
{
	struct off_key ok = old->key;
	ok.flags |= F_USTACK_LOST;
	stat(STAT_USTACK_LOST);
	add_off(&ok, old->ns, old->wake_ns);
	if (old->has2) {
		ok = old->key2;
		ok.flags |= F_USTACK_LOST;
		stat(STAT_USTACK_LOST);
		add_off(&ok, old->ns2, old->wake_ns2);
	}
}

static __always_inline bool same_key(struct off_key *a, struct off_key *b)
{
	u64 *x = (u64 *)a, *y = (u64 *)b;
	for (int i = 0; i < (int)(sizeof(struct off_key) / 8); i++)
		if (x[i] != y[i])
			return false;
	return true;
}

/* join_pending adds p to pd when pd still waits and p's thread blocked
 * in the same kernel entry (the same user registers): both get the user
 * stack of that entry. False: pd is another entry's, or no longer waits. */
static __always_inline bool join_pending(struct pending *pd, struct pending *p)
{
	if (!pd->armed || pd->uip != p->uip || pd->usp != p->usp)
		return false;
	if (same_key(&pd->key, &p->key)) {
		pd->ns += p->ns;
		pd->wake_ns += p->wake_ns;
		return true;
	}
	if (pd->has2 && same_key(&pd->key2, &p->key)) {
		pd->ns2 += p->ns;
		pd->wake_ns2 += p->wake_ns;
		return true;
	}
	if (pd->has2) {
		/* A third kind of block in one entry: the second is recorded
		 * now without its user stack. */
		struct off_key ok = pd->key2;
		ok.flags |= F_USTACK_LOST;
		stat(STAT_USTACK_LOST);
		add_off(&ok, pd->ns2, pd->wake_ns2);
	}
	pd->key2 = p->key;
	pd->ns2 = p->ns;
	pd->wake_ns2 = p->wake_ns;
	pd->has2 = 1;
	return true;
}

/* pending_done records a kept block with the user stack its thread has
 * now, in its own context back from the block: ip and sp are its user
 * registers, ustack the stack taken from them. */
static __always_inline void pending_done(struct pending *p, u32 tid, u64 ip, u64 sp, u64 ustack)
{
	struct off_key k = p->key;
	if (ip == p->uip && sp == p->usp) {
		k.ustack = ustack;
		struct last_user lu = {.uip = ip, .usp = sp, .ustack = ustack};
		bpf_map_update_elem(&last_users, &tid, &lu, BPF_ANY);
	} else {
		/* It blocked outside this syscall (a page fault, say). */
		k.flags |= F_USTACK_STALE;
		stat(STAT_USTACK_STALE);
	}
	add_off(&k, p->ns, p->wake_ns);
	if (p->has2) {
		struct off_key k2 = p->key2;
		k2.ustack = k.ustack;
		k2.flags |= k.flags & F_USTACK_STALE;
		add_off(&k2, p->ns2, p->wake_ns2);
	}
	remember_comm(tid, k.tgid);
}

/* Per CPU: the offset from the run queue's clock to bpf_ktime_get_ns
 * (CLOCK_MONOTONIC, the domain of every timestamp here and of the
 * collector's), and the switches since it was measured. */
struct clock_sync {
	s64 off;
	u32 n;
	u32 valid;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct clock_sync);
} clock_syncs SEC(".maps");

/* switch_now is the time of a switch on this CPU (t is prev or next, both
 * on it). bpf_ktime_get_ns costs 20 ns here, a third of the program: the
 * run queue's clock, updated as this __schedule began, is three loads
 * from the task, and is brought to CLOCK_MONOTONIC by an offset measured
 * every 256 switches of the CPU (the two clocks run from the same counter;
 * what they drift apart in between, parts per million of a few
 * milliseconds, is nothing to a block's length). */
static __always_inline u64 switch_now(struct task_struct *t)
{
	if (!bpf_core_field_exists(t->se.cfs_rq))
		return bpf_ktime_get_ns();
	struct cfs_rq *cq = t->se.cfs_rq;
	struct rq *rq = cq ? cq->rq : 0;
	u32 zero = 0;
	struct clock_sync *cs = bpf_map_lookup_elem(&clock_syncs, &zero);
	if (!rq || !cs)
		return bpf_ktime_get_ns();
	u64 clk = rq->clock;
	if (!cs->valid || ++cs->n >= 256) {
		u64 k = bpf_ktime_get_ns();
		cs->off = (s64)(k - clk);
		cs->n = 0;
		cs->valid = 1;
		return k;
	}
	return clk + cs->off;
}

/* on_switch_body is a sched_switch program. */
static __always_inline int on_switch_body(void *ctx, bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
{
	if (!enabled)
		return 0;
	/* Most switches on a host are not the tree's: two task-storage
	 * lookups (the idle task, pid 0, not even those), no clock read. */
	struct start *ps = prev->pid ? entry(prev) : 0;
	struct start *ns = next->pid ? entry(next) : 0;
	bool in = ns && ns->ts > ns->in_ts; /* else it was not off CPU */
	if (!ps && !in)
		return 0;
	u64 now = switch_now(ps ? prev : next);
	if (ps)
		switch_out(ctx, ps, preempt, prev_state, now);
	if (in)
		switch_in(next, ns, now);
	return 0;
}

#endif
