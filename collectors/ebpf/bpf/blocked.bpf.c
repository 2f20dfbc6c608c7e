/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The stacks of threads still blocked when the window ends.
 *
 * A block's user stack is taken when its thread is back in its own context
 * (raw_tp/sys_exit, profcap.bpf.c): a thread that has not run again by the
 * window's end has none. This task iterator runs once, when the window
 * ends, and walks every task: for each thread of the tree whose block is
 * still open (a switch-out not followed by a switch-in: open_out, filled
 * by profcap.bpf.c's open_blocks iterator just before this one), or
 * whose kept block waits for its system call's exit (`pendings`), it takes
 *
 *   the user stack  from the user registers the thread saved when it
 *                   entered the kernel (bpf_task_pt_regs: at its system
 *                   call or its fault), walking the frame-pointer chain in
 *                   the thread's own memory with bpf_copy_from_user_task
 *                   (this is why the iterator is sleepable: the copy may
 *                   fault a page in), as the kernel's perf_callchain_user
 *                   walks the current task's, then the leaf fix-up of
 *                   unwind.h;
 *   the kernel stack  bpf_get_task_stack (the thread is off CPU: its saved
 *                   kernel stack is stable).
 *
 * and writes them to blocked_out by thread. Nothing here runs during the
 * window: the switch-out stays a timestamp.
 *
 * A process walked by CFI (its code has no frame pointers) has its user
 * stack walked by its .eh_frame rows instead, as unwind.h walks the
 * current task's.
 *
 * Shared with profcap.bpf.c through map replacement at load: procs,
 * open_out, pendings, stacks, stats, the leaf fix-up and CFI tables. A kernel
 * that refuses this program (no sleepable task iterators: before 5.18, or
 * no bpf_copy_from_user_task) runs the others without it; the collector
 * then falls back on the thread's previous block's user stack.
 */
#include "profcap.h"
#include "unwind.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* blocked_stack flags */
#define B_PENDING 1 /* its kept block waits for its syscall exit */
#define B_RUNNING 2 /* on a CPU when walked: the stacks may not be the block's */

struct blocked_stack {
	u32 tgid;
	u32 flags;
	u64 ustack; /* stack store keys; 0: none */
	u64 kstack;
	u64 uip; /* the user registers walked from */
	u64 usp;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); /* as open_out */
	__type(key, u32);
	__type(value, struct blocked_stack);
} blocked_out SEC(".maps");

/* Its own stack buffer: this program may sleep (a page fault in the
 * copy), and a program that runs meanwhile on this CPU (on_sys_exit) uses
 * the shared scratch. One walk at a time per CPU (migration is disabled
 * while it runs). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct stack);
} iter_scratch SEC(".maps");

/* walk_user stores task's user stack from ip, sp and bp (its saved user
 * registers): ips[0] = ip, then the return address of each frame-pointer
 * link (a link is {next bp, return address}), at most MAX_DEPTH frames. */
static __always_inline u64 walk_user(struct task_struct *task, struct stack *s, u64 ip, u64 sp, u64 bp)
{
	if (!ip)
		return 0;
	s->ips[0] = ip;
	s->nr = 1;
	u64 fp = bp;
	for (int i = 1; i < MAX_DEPTH; i++) {
		u64 link[2];
		if (!fp || bpf_copy_from_user_task(link, sizeof(link), (const void *)fp, task, 0))
			break;
		if (!link[1])
			break;
		s->ips[i] = link[1];
		s->nr = i + 1;
		if (link[0] == fp)
			break; /* a loop: a frame pointer that is not one */
		fp = link[0];
	}
	fixup_task(s, ip, sp, task, true);
	return put_stack(s);
}

extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

/* cfi_step_remote is cfi_step on the walked task's memory. */
static long cfi_step_remote(u64 i, void *ctx)
{
	u32 slot = CFI_SLOT_ITER;
	struct cfi_buf *b = bpf_map_lookup_elem(&cfi_scratch, &slot);
	if (!b)
		return 1;
	struct task_struct *t = bpf_task_from_pid(b->w.tid);
	if (!t)
		return 1;
	long r = cfi_step_in(i, slot, t, true);
	bpf_task_release(t);
	return r;
}

/* walk_cfi stores task's user stack walked by CFI (a process whose code
 * has no frame pointers: unwind.h). */
static __always_inline u64 walk_cfi(u32 tgid, u32 tid, u64 ip, u64 sp, u64 bp)
{
	u32 slot = CFI_SLOT_ITER;
	struct cfi_buf *b = cfi_walk_init(slot, tgid, tid, ip, sp, bp);
	if (!b || !ip)
		return 0;
	bpf_loop(MAX_DEPTH - 1, cfi_step_remote, &slot, 0);
	return cfi_walk_done(b);
}

SEC("iter.s/task")
int blocked_stacks(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	if (!task)
		return 0;
	u32 tid = task->pid, tgid = task->tgid;
	if (!tid || !tracked(tgid))
		return 0;
	struct blocked_stack out = {.tgid = tgid};
	struct start *st = bpf_map_lookup_elem(&open_out, &tid);
	/* Open: switched out and not back. A thread preempted in user mode
	 * had its stacks taken at the switch-out already. */
	bool open = st && st->ts && !(st->state == 'R' && (st->rustack || st->rkstack));
	if (!open) {
		struct pending *pd = bpf_map_lookup_elem(&pendings, &tid);
		if (!pd || !pd->armed)
			return 0;
		out.flags |= B_PENDING;
	}
	if (task->on_cpu)
		out.flags |= B_RUNNING;
	if (task->flags & 0x00200000 /* PF_KTHREAD */)
		return 0;
	u32 zero = 0;
	struct stack *s = bpf_map_lookup_elem(&iter_scratch, &zero);
	if (!s)
		return 0;
	long n = bpf_get_task_stack(task, s->ips, sizeof(s->ips), 0);
	if (n > 0) {
		s->nr = (u64)n / 8;
		out.kstack = put_stack(s);
	} else if (n < 0) {
		stat(STAT_STACK_ERR);
	}
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	out.uip = BPF_CORE_READ(regs, ip);
	out.usp = BPF_CORE_READ(regs, sp);
	u64 bp = BPF_CORE_READ(regs, bp);
	if (bpf_map_lookup_elem(&cfi_procs, &tgid))
		out.ustack = walk_cfi(tgid, tid, out.uip, out.usp, bp);
	else
		out.ustack = walk_user(task, s, out.uip, out.usp, bp);
	bpf_map_update_elem(&blocked_out, &tid, &out, BPF_ANY);
	return 0;
}

/* Referenced so that its BTF reaches the Go bindings (bpf2go -type). */
const struct blocked_stack *unused_blocked_stack __attribute__((unused));
