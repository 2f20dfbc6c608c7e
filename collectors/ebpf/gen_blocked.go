package ebpf

// The task iterator that takes the stacks of threads still blocked at the
// window's end (bpf/blocked.bpf.c) is a compilation unit of its own: a
// kernel that refuses it (sleepable iterators, bpf_copy_from_user_task)
// still runs every other program. It shares the process tree, the off-CPU
// maps, the stack store and the leaf fix-up tables with profcap.bpf.c by
// map replacement at load (blocked_linux.go). Regenerate after changing
// bpf/ (needs clang, llvm and libbpf-dev):
//
//	go generate ./collectors/ebpf
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target amd64 -type blocked_stack blocked bpf/blocked.bpf.c -- -I/usr/include/x86_64-linux-gnu -Wall -Werror
