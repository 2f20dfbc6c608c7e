/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * User stacks, with the leaf fix-up for frameless code.
 *
 * The kernel walks user stacks by frame pointers: frame 0 is the IP, then
 * each saved RBP chain link. A leaf that sets up no frame (glibc's syscall
 * wrappers: read, write, clock_nanosleep; nanosleep, which calls
 * clock_nanosleep with only `sub $8,%rsp`) leaves RBP pointing at its
 * caller's frame, so the chain's first return address is the caller's
 * caller: the function that called the wrapper is missing. The collector
 * parses .eh_frame of such libraries (libc) in Go and hands us, per file,
 * sorted rows "from file offset OFF the CFA is SP + CFA"; when the PC's row
 * is SP-based, the return address is at CFA - 8, so we read it and insert
 * it as the next frame, and repeat (up to FIXUP_LEVELS) from the caller's
 * PC with SP = CFA.
 */
#ifndef PROFCAP_UNWIND_H
#define PROFCAP_UNWIND_H

#include "profcap.h"

#define FIXUP_LEVELS 3
#define ROW_SEARCH_STEPS 20 /* binary search: up to 2^20 rows */

struct vma_info {
	u64 start;
	u64 pgoff;
	u64 ino;
	u32 dev;
	u32 found;
};

static long vma_cb(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct vma_info *vi = data;
	struct file *f = BPF_CORE_READ(vma, vm_file);
	if (!f)
		return 0;
	vi->start = BPF_CORE_READ(vma, vm_start);
	vi->pgoff = BPF_CORE_READ(vma, vm_pgoff);
	vi->ino = BPF_CORE_READ(f, f_inode, i_ino);
	vi->dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
	vi->found = 1;
	return 0;
}

/* cfa_at returns the SP-based CFA offset at pc in task, or 0. */
static __always_inline s32 cfa_at(struct task_struct *task, u64 pc, bool ret_addr)
{
	struct vma_info vi = {};
	if (bpf_find_vma(task, pc, vma_cb, &vi, 0) || !vi.found)
		return 0;
	struct file_key fk = {.ino = vi.ino, .dev = vi.dev};
	struct file_rows *fr = bpf_map_lookup_elem(&unwind_files, &fk);
	if (!fr || fr->count == 0)
		return 0;
	u64 off = pc - vi.start + (vi.pgoff << 12);
	if (ret_addr)
		off -= 1; /* a return address belongs to the call before it */
	u32 lo = fr->first, hi = fr->first + fr->count;
	for (int i = 0; i < ROW_SEARCH_STEPS; i++) {
		if (lo + 1 >= hi)
			break;
		u32 mid = lo + (hi - lo) / 2;
		struct row *r = bpf_map_lookup_elem(&unwind_rows, &mid);
		if (!r)
			return 0;
		if ((u64)r->off <= off)
			lo = mid;
		else
			hi = mid;
	}
	struct row *r = bpf_map_lookup_elem(&unwind_rows, &lo);
	if (!r || (u64)r->off > off)
		return 0;
	return r->cfa;
}

/* read_user reads user memory at addr: of the current task, or (remote,
 * sleepable programs only: the task iterator) of task. remote is a
 * constant at every call, so each program keeps only the helper it may
 * call. */
static __always_inline long read_user(void *dst, u32 size, u64 addr, struct task_struct *task, bool remote)
{
	if (remote)
		return bpf_copy_from_user_task(dst, size, (const void *)addr, task, 0);
	return bpf_probe_read_user(dst, size, (const void *)addr);
}

/* fixup_task inserts the return addresses that frame-pointer unwinding
 * skipped above frameless frames of known files, in task's user stack. */
static __always_inline void fixup_task(struct stack *s, u64 ip, u64 sp, struct task_struct *task, bool remote)
{
	u64 pc = ip;
	u32 pos = 1;
	for (int lvl = 0; lvl < FIXUP_LEVELS; lvl++) {
		s32 cfa = cfa_at(task, pc, lvl > 0);
		if (cfa <= 0 || cfa > 4096)
			return;
		u64 ret = 0;
		if (read_user(&ret, sizeof(ret), sp + cfa - 8, task, remote) || ret == 0)
			return;
		u32 nr = s->nr;
		if (pos >= MAX_DEPTH || pos > nr)
			return;
		if (pos < nr && s->ips[pos & (MAX_DEPTH - 1)] == ret)
			return; /* the frame-pointer chain has it: not frameless after all */
		for (int i = MAX_DEPTH - 1; i > 0; i--) {
			if (i <= (int)pos)
				break;
			s->ips[i] = s->ips[i - 1];
		}
		if (pos < MAX_DEPTH)
			s->ips[pos] = ret;
		if (nr < MAX_DEPTH)
			s->nr = nr + 1;
		stat(STAT_FIXUPS);
		pos++;
		sp += cfa;
		pc = ret;
	}
}

/* fixup is fixup_task on the current task. */
static __always_inline void fixup(struct stack *s, u64 ip, u64 sp)
{
	fixup_task(s, ip, sp, bpf_get_current_task_btf(), false);
}

/* user_stack stores the current task's user stack, fixed up, given its
 * user-mode IP and SP. */
static __always_inline u64 user_stack(void *ctx, u64 ip, u64 sp)
{
	struct stack *s = scratch_stack();
	if (!s)
		return 0;
	long n = bpf_get_stack(ctx, s->ips, sizeof(s->ips), BPF_F_USER_STACK);
	if (n <= 0) {
		if (n < 0)
			stat(STAT_STACK_ERR);
		return 0;
	}
	s->nr = (u64)n / 8;
	if (s->ips[0] == ip)
		fixup(s, ip, sp);
	return put_stack(s);
}

/* user_stack_here is user_stack with the current task's saved user registers. */
static __always_inline u64 user_stack_here(void *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	u64 ip = BPF_CORE_READ(regs, ip), sp = BPF_CORE_READ(regs, sp);
	return user_stack(ctx, ip, sp);
}

/* in_interrupt reads this CPU's preempt count (the per-CPU variable
 * __preempt_count at __per_cpu_offset[cpu]); where the kernel does not
 * export them it answers false. */
extern void __preempt_count __ksym __weak;
extern void __per_cpu_offset __ksym __weak;

static __always_inline bool in_interrupt(void)
{
	if (!&__preempt_count || !&__per_cpu_offset) /* weak: 0 where missing */
		return false;
	u64 base = 0;
	u32 cpu = bpf_get_smp_processor_id();
	if (bpf_probe_read_kernel(&base, sizeof(base), (const u64 *)&__per_cpu_offset + cpu))
		return false;
	int pc = 0;
	if (bpf_probe_read_kernel(&pc, sizeof(pc), (const void *)(base + (u64)&__preempt_count)))
		return false;
	/* NMI_MASK | HARDIRQ_MASK | SOFTIRQ_OFFSET (serving a softirq) */
	return (pc & (0x00f00000 | 0x000f0000 | 0x00000100)) != 0;
}

#endif
