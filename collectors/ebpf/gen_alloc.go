package ebpf

// The allocation tracer's BPF program (bpf/alloc.bpf.c, the allocs and
// heap kinds) is a compilation unit of its own, so that the cpu, offcpu
// and wakeup programs and their objects do not change with it. It shares
// the process tree, the stack store and the leaf fix-up maps with
// profcap.bpf.c by map replacement at load (alloc_linux.go). Regenerate
// after changing bpf/ (needs clang, llvm and libbpf-dev):
//
//	go generate ./collectors/ebpf
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target amd64 -type alloc_key -type alloc_val -type live_key -type live_val -type tstate alloc bpf/alloc.bpf.c -- -I/usr/include/x86_64-linux-gnu -Wall -Werror
