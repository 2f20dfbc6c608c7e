/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * sched_switch with the kept block's user stack taken by a BPF task work
 * (bpf_task_work_schedule_resume, Linux 6.18): the callback runs in the
 * thread's own context as it returns to user space, with the registers it
 * blocked with, so no program runs at every system call's exit. A
 * compilation unit of its own, sharing every map with profcap.bpf.c by
 * replacement at load (switchtw_linux.go): a kernel without the kfunc
 * refuses this object only, and the collector attaches profcap.bpf.c's
 * on_switch and on_sys_exit instead.
 */
#include "profcap.h"
#include "unwind.h"
#include "offcpu.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

extern int bpf_task_work_schedule_resume_impl(struct task_struct *task, struct bpf_task_work *tw,
					      void *map__map, int (*callback)(struct bpf_map *, void *, void *),
					      void *aux__prog) __ksym;

/* Its own stack buffer: the callback runs in process context and may be
 * preempted, and sched_switch uses the shared scratch. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct stack);
} tw_scratch SEC(".maps");

static int take_user_stack(struct bpf_map *map, void *key, void *value)
{
	struct pending *p = value;
	if (!p->armed)
		return 0;
	u32 tid = *(u32 *)key;
	struct task_struct *cur = bpf_get_current_task_btf();
	if ((u32)cur->pid != tid)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(cur);
	u64 ip = BPF_CORE_READ(regs, ip), sp = BPF_CORE_READ(regs, sp), bp = BPF_CORE_READ(regs, bp);
	u64 us = 0;
	u32 tgid = cfi_tgid();
	if (ip == p->uip && sp == p->usp && tgid) {
		us = cfi_stack(CFI_SLOT_TASK, tgid, ip, sp, bp);
	} else if (ip == p->uip && sp == p->usp) {
		u32 zero = 0;
		struct stack *s = bpf_map_lookup_elem(&tw_scratch, &zero);
		if (s) {
			long n = bpf_get_task_stack(cur, s->ips, sizeof(s->ips), BPF_F_USER_STACK);
			if (n > 0) {
				s->nr = (u64)n / 8;
				if (s->ips[0] == ip)
					fixup(s, ip, sp);
				us = put_stack(s);
			} else if (n < 0) {
				stat(STAT_STACK_ERR);
			}
		}
	}
	struct pending done = *p;
	p->armed = 0;
	pending_done(&done, tid, ip, sp, us);
	return 0;
}

/* The entry stays in pendings, disarmed, for the thread's next kept
 * block: deleting or replacing an element frees its task work. */
static __always_inline void await_user_stack(struct task_struct *next, u32 tid, struct pending *p)
{
	struct pending *pd = bpf_map_lookup_elem(&pendings, &tid);
	if (!pd) {
		struct pending z = {};
		bpf_map_update_elem(&pendings, &tid, &z, BPF_NOEXIST);
		pd = bpf_map_lookup_elem(&pendings, &tid);
		if (!pd) {
			flush_lost(p);
			return;
		}
	}
	if (join_pending(pd, p))
		return; /* its work is scheduled and will take both */
	if (pd->armed)
		flush_lost(pd); /* blocked again elsewhere before it returned to user space */
	pd->key = p->key;
	pd->ns = p->ns;
	pd->wake_ns = p->wake_ns;
	pd->uip = p->uip;
	pd->usp = p->usp;
	pd->has2 = 0;
	pd->armed = 1;
	/* -EBUSY: its work is scheduled already and will take this block. */
	long err = bpf_task_work_schedule_resume_impl(next, &pd->tw, &pendings, take_user_stack, 0);
	if (err && err != -16) {
		stat(STAT_TW_FAILED);
		pd->armed = 0;
		flush_lost(pd);
	}
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch_tw, bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
{
	return on_switch_body(ctx, preempt, prev, next, prev_state);
}
