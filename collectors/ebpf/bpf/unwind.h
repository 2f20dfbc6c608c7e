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
	u64 end;
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
	vi->end = BPF_CORE_READ(vma, vm_end);
	vi->pgoff = BPF_CORE_READ(vma, vm_pgoff);
	vi->ino = BPF_CORE_READ(f, f_inode, i_ino);
	vi->dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
	vi->found = 1;
	return 0;
}

/* row_in returns the row of the file's rows [first, first+count) that
 * covers file offset off, or NULL. */
static __always_inline struct row *row_in(u32 first, u32 count, u64 off)
{
	u32 lo = first, hi = first + count;
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
	return r;
}

/* cfa_at returns the SP-based CFA offset at pc in task, or 0. vi is the
 * VMA of the last call, found again only when pc is outside it: in a
 * perf-event program (NMI) bpf_find_vma works once, the mmap lock's
 * release waiting for an irq_work until the NMI returns. */
static __always_inline s32 cfa_at(struct task_struct *task, u64 pc, bool ret_addr, struct vma_info *vi)
{
	if (!vi->found || pc < vi->start || pc >= vi->end) {
		vi->found = 0;
		if (bpf_find_vma(task, pc, vma_cb, vi, 0) || !vi->found)
			return 0;
	}
	struct file_key fk = {.ino = vi->ino, .dev = vi->dev};
	struct file_rows *fr = bpf_map_lookup_elem(&unwind_files, &fk);
	if (!fr || fr->count == 0)
		return 0;
	u64 off = pc - vi->start + (vi->pgoff << 12);
	if (ret_addr)
		off -= 1; /* a return address belongs to the call before it */
	struct row *r = row_in(fr->first, fr->count, off);
	return r ? r->cfa : 0;
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
	struct vma_info vi = {};
	for (int lvl = 0; lvl < FIXUP_LEVELS; lvl++) {
		s32 cfa = cfa_at(task, pc, lvl > 0, &vi);
		if (cfa <= CFA_END || cfa > 4096)
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

/*
 * CFI unwinding: a process whose code has no frame pointers (Debian's
 * nginx and postgres, Rust release builds) is walked frame by frame from
 * its registers with the rows of its files' .eh_frame (cfi_procs: its
 * mappings, each with its file's rows), by frame pointer through code
 * without rows, as the OpenTelemetry profiler walks native code. One step
 * per frame under bpf_loop; the walk's state and frames in a per-CPU
 * buffer, one per kind of context that can interrupt or preempt another's
 * walk (CFI_SLOT_*).
 */
#define CFI_MAP_STEPS 8 /* binary search: up to 256 mappings */
#define CFI_SLOT_NMI 0   /* perf-event programs: they interrupt any other */
#define CFI_SLOT_TASK 1  /* task works, syscall exits, allocations: preemptible */
#define CFI_SLOT_ITER 2  /* the sleepable task iterator (blocked.bpf.c) */
#define CFI_SLOT_SCHED 3 /* sched_switch and sched_waking: interrupts off,
			  * but they run while a preempted walk of slot 1 waits */

struct cfi_walk {
	u64 pc, sp, bp;
	u64 start, end, off; /* the mapping of pc: [start, end), file offset */
	u32 first, count;    /* its file's rows */
	u32 tgid;
	u32 tid; /* the task walked, when it is not the current one */
};

struct cfi_buf {
	struct cfi_walk w;
	struct stack s;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, struct cfi_buf);
} cfi_scratch SEC(".maps");

/* cfi_step_in adds the caller of the walk's frame: 0 to go on, 1 to
 * stop. It reads the current task's memory, or task's (remote, a
 * constant: sleepable programs only). */
static __always_inline long cfi_step_in(u64 i, u32 slot, struct task_struct *task, bool remote)
{
	struct cfi_buf *b = bpf_map_lookup_elem(&cfi_scratch, &slot);
	if (!b)
		return 1;
	struct cfi_walk *w = &b->w;
	u32 nr = b->s.nr;
	if (nr >= MAX_DEPTH) {
		b->s.flags = STACK_CUT; /* deeper than MAX_DEPTH */
		return 1;
	}
	b->s.flags = STACK_CUT; /* until this step ends the walk or adds a frame */
	u64 pc = w->pc, sp = w->sp, bp = w->bp;
	if (pc < w->start || pc >= w->end) {
		struct cfi_maps *m = bpf_map_lookup_elem(&cfi_procs, &w->tgid);
		if (!m)
			return 1;
		u32 lo = 0, hi = m->n;
		if (hi > MAX_CFI_MAPS)
			hi = MAX_CFI_MAPS;
		if (hi == 0)
			return 1;
		for (int k = 0; k < CFI_MAP_STEPS; k++) {
			if (lo + 1 >= hi)
				break;
			u32 mid = lo + (hi - lo) / 2;
			if (m->m[mid & (MAX_CFI_MAPS - 1)].start <= pc)
				lo = mid;
			else
				hi = mid;
		}
		struct cfi_map *mp = &m->m[lo & (MAX_CFI_MAPS - 1)];
		if (pc < mp->start || pc >= mp->end)
			return 1; /* not code the process maps: a wrong frame */
		w->start = mp->start;
		w->end = mp->end;
		w->off = mp->off;
		w->first = mp->first;
		w->count = mp->count;
	}
	u64 ra = 0, nsp, nbp = bp;
	struct row *r = 0;
	if (w->count) {
		/* A return address belongs to the call before it. */
		r = row_in(w->first, w->count, pc - w->start + w->off - (i > 0 ? 1 : 0));
	}
	if (r) {
		s32 c = r->cfa;
		u64 cfa;
		if (c == CFA_END) {
			b->s.flags = 0;
			return 1; /* the outermost frame */
		}
		if (c == 0)
			return 1; /* a rule not kept (an expression), or no row here */
		if (c == CFA_PLT)
			cfa = sp + 8 + ((pc & 15) >= 11 ? 8 : 0);
		else if (c > 0)
			cfa = sp + (u64)c;
		else
			cfa = bp + (u64)(-(s64)c);
		if (read_user(&ra, sizeof(ra), cfa - 8, task, remote))
			return 1;
		if (r->rbp && read_user(&nbp, sizeof(nbp), cfa + (s64)r->rbp, task, remote))
			return 1;
		nsp = cfa;
	} else {
		/* No rows here: a frame-pointer step. */
		if (!bp) {
			b->s.flags = 0;
			return 1; /* the chain's end */
		}
		if (bp < sp)
			return 1;
		u64 fr[2];
		if (read_user(fr, sizeof(fr), bp, task, remote))
			return 1;
		nbp = fr[0];
		ra = fr[1];
		nsp = bp + 16;
	}
	if (!ra) {
		b->s.flags = 0;
		return 1; /* a zero return address ends a chain */
	}
	if (ra < 4096 || nsp <= sp)
		return 1;
	b->s.ips[nr] = ra;
	b->s.nr = nr + 1;
	b->s.flags = 0;
	w->pc = ra;
	w->sp = nsp;
	w->bp = nbp;
	return 0;
}

static long cfi_step(u64 i, void *ctx)
{
	return cfi_step_in(i, *(u32 *)ctx, 0, false);
}

/* cfi_walk_init starts a walk in slot from the registers. */
static __always_inline struct cfi_buf *cfi_walk_init(u32 slot, u32 tgid, u32 tid, u64 ip, u64 sp, u64 bp)
{
	struct cfi_buf *b = bpf_map_lookup_elem(&cfi_scratch, &slot);
	if (!b)
		return 0;
	b->w.pc = ip;
	b->w.sp = sp;
	b->w.bp = bp;
	b->w.start = b->w.end = 0;
	b->w.tgid = tgid;
	b->w.tid = tid;
	b->s.ips[0] = ip;
	b->s.nr = 1;
	b->s.flags = 0;
	return b;
}

/* cfi_walk_done marks a walk that ran out of frames as cut, counts it and
 * stores its stack. */
static __always_inline u64 cfi_walk_done(struct cfi_buf *b)
{
	if (b->s.nr >= MAX_DEPTH)
		b->s.flags = STACK_CUT;
	stat(STAT_CFI_STACKS);
	if (b->s.flags & STACK_CUT)
		stat(STAT_CFI_CUT);
	return put_stack(&b->s);
}

/* cfi_stack stores the current task's user stack walked by CFI from its
 * user registers, in buffer slot. A global function: the verifier checks
 * it once, not again on every path of each caller. */
__noinline u64 cfi_stack(u32 slot, u32 tgid, u64 ip, u64 sp, u64 bp)
{
	struct cfi_buf *b = cfi_walk_init(slot, tgid, 0, ip, sp, bp);
	if (!b)
		return 0;
	bpf_loop(MAX_DEPTH - 1, cfi_step, &slot, 0);
	return cfi_walk_done(b);
}

/* cfi_tgid is the current process's tgid when it is walked by CFI, else 0. */
static __always_inline u32 cfi_tgid(void)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return bpf_map_lookup_elem(&cfi_procs, &tgid) ? tgid : 0;
}

/* user_stack stores the current task's user stack, given its user-mode
 * registers: by CFI where the process is walked so, else by frame
 * pointers (the kernel's walk), fixed up. slot is the CFI buffer. */
static __always_inline u64 user_stack(void *ctx, u64 ip, u64 sp, u64 bp, u32 slot)
{
	u32 tgid = cfi_tgid();
	if (tgid)
		return cfi_stack(slot, tgid, ip, sp, bp);
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
static __always_inline u64 user_stack_here(void *ctx, u32 slot)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	u64 ip = BPF_CORE_READ(regs, ip), sp = BPF_CORE_READ(regs, sp), bp = BPF_CORE_READ(regs, bp);
	return user_stack(ctx, ip, sp, bp, slot);
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
