package ebpf

// The sched_switch program that takes a kept block's user stack by a BPF
// task work (bpf/switchtw.bpf.c, Linux 6.18) is a compilation unit of its
// own: a kernel without the kfunc refuses it alone, and the collector
// falls back on profcap.bpf.c's on_switch and on_sys_exit. It shares every
// map with profcap.bpf.c by replacement at load (switchtw_linux.go).
// Regenerate after changing bpf/ (needs clang, llvm and libbpf-dev):
//
//	go generate ./collectors/ebpf
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target amd64 switchtw bpf/switchtw.bpf.c -- -I/usr/include/x86_64-linux-gnu -Wall -Werror
