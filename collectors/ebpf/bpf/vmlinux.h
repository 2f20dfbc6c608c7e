/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel types profcap's BPF programs read, declared with
 * preserve_access_index so that clang emits CO-RE relocations: libbpf
 * semantics (cilium/ebpf) resolve every field against the running kernel's
 * BTF (/sys/kernel/btf/vmlinux) at load time, so neither the layout here nor
 * the kernel profcap was built on matters. A full `bpftool btf dump ...
 * format c` header would be 2.8 MB; these are all that is used.
 * The UAPI header gives the BPF constants and the fixed-layout context types.
 */
#ifndef PROFCAP_VMLINUX_H
#define PROFCAP_VMLINUX_H

#include <linux/types.h>
#include <linux/bpf.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __s32 s32;
typedef __u64 u64;
typedef __s64 s64;
typedef _Bool bool;
#define true 1
#define false 0

/* x86-64 user registers as saved at kernel entry. The layout must match
 * the kernel's (bpf_perf_event_data embeds it and is accessed by offset). */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
} __attribute__((preserve_access_index));

/* The perf_event program's context (UAPI linux/bpf_perf_event.h). */
struct bpf_perf_event_data {
	struct pt_regs regs;
	__u64 sample_period;
	__u64 addr;
};

struct super_block {
	u32 s_dev; /* dev_t */
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	unsigned long vm_pgoff;
	struct file *vm_file;
} __attribute__((preserve_access_index));

/* The scheduler's clock of a run queue (sched_clock_cpu, updated as
 * __schedule starts): reached from a task by its CFS run queue, a field
 * of kernels with CONFIG_FAIR_GROUP_SCHED (checked with CO-RE). */
struct rq {
	u64 clock;
} __attribute__((preserve_access_index));

struct cfs_rq {
	struct rq *rq;
} __attribute__((preserve_access_index));

struct sched_entity {
	struct cfs_rq *cfs_rq;
} __attribute__((preserve_access_index));

struct task_struct {
	struct sched_entity se;
	unsigned int __state;
	int on_cpu;
	unsigned int flags; /* PF_* */
	int pid;
	int tgid;
	char comm[16];
	struct task_struct *real_parent;
	struct task_struct *group_leader;
} __attribute__((preserve_access_index));

struct linux_binprm;

/* A task work in a map value (Linux 6.18; older kernels see a plain u64). */
struct bpf_task_work {
	u64 __opaque;
} __attribute__((aligned(8)));

/* Only as a pointer (the task work callback's first argument); a
 * definition, as kfunc argument types are compared with the kernel's. */
struct bpf_map {
	u32 map_type;
} __attribute__((preserve_access_index));

/* The task iterator's context (iter/task). */
struct bpf_iter_meta;

struct bpf_iter__task {
	union {
		struct bpf_iter_meta *meta;
	};
	union {
		struct task_struct *task;
	};
} __attribute__((preserve_access_index));

#endif
