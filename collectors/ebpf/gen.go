package ebpf

// The BPF programs (bpf/*.c) are compiled by clang through bpf2go into
// profcap_x86_bpfel.{go,o}: the .go bindings are committed, the .o objects
// are not (make builds them before any Go build: make bpf). Build them by
// hand (needs clang, llvm and libbpf-dev):
//
//	go generate ./collectors/ebpf
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target amd64 -type proc -type stack -type cpu_key -type cpu_val -type off_key -type off_val -type start -type pending -type comm -type last_user -type file_key -type file_rows -type row -type cfi_map -type cfi_maps -type proc_event profcap bpf/profcap.bpf.c -- -I/usr/include/x86_64-linux-gnu -Wall -Werror
