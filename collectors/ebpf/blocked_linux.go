//go:build linux && amd64

package ebpf

import (
	"fmt"
	"io"
	"time"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Flags of bpf/blocked.bpf.c's struct blocked_stack.
const (
	bPending = 1 // its kept block waited for its syscall exit
	bRunning = 2 // on a CPU when walked
)

// blockedIter is the task iterator that takes the stacks of threads still
// blocked when the window ends (bpf/blocked.bpf.c): loaded and attached
// with the other programs, run once at the window's end.
type blockedIter struct {
	objs blockedObjs
	it   *link.Iter

	walked map[uint32]blockedBlockedStack // by thread, after walk
	took   time.Duration
}

type blockedObjs struct {
	Prog *cebpf.Program `ebpf:"blocked_stacks"`
	Out  *cebpf.Map     `ebpf:"blocked_out"`
}

// loadBlockedIter loads the iterator sharing main's maps and attaches it.
func loadBlockedIter(main *profcapObjects) (*blockedIter, error) {
	spec, err := loadBlocked()
	if err != nil {
		return nil, err
	}
	b := &blockedIter{}
	if err := loadSharing(spec, main, &b.objs); err != nil {
		return nil, err
	}
	if b.it, err = link.AttachIter(link.IterOptions{Program: b.objs.Prog}); err != nil {
		b.close()
		return nil, fmt.Errorf("attaching the task iterator: %w", err)
	}
	return b, nil
}

// walk runs the iterator over every task once (reading the iterator's
// file runs the program per task) and reads what it found.
func (b *blockedIter) walk() error {
	t0 := time.Now()
	rd, err := b.it.Open()
	if err != nil {
		return fmt.Errorf("running the task iterator: %w", err)
	}
	_, err = io.Copy(io.Discard, rd)
	_ = rd.Close()
	if err != nil {
		return fmt.Errorf("running the task iterator: %w", err)
	}
	b.took = time.Since(t0)
	b.walked = map[uint32]blockedBlockedStack{}
	var tid uint32
	var v blockedBlockedStack
	it := b.objs.Out.Iterate()
	for it.Next(&tid, &v) {
		b.walked[tid] = v
	}
	return it.Err()
}

func (b *blockedIter) close() {
	if b == nil {
		return
	}
	if b.it != nil {
		_ = b.it.Close()
	}
	if b.objs.Prog != nil {
		_ = b.objs.Prog.Close()
	}
	if b.objs.Out != nil {
		_ = b.objs.Out.Close()
	}
}

// stacks is what the walk found of a thread: (user, kernel) stack store
// keys, and whether they are its block's: an open block's thread that
// was on a CPU when walked had been woken after the window's end, and
// its registers and memory are no longer the block's.
func (b *blockedIter) stacks(tid uint32, pending bool) (blockedBlockedStack, bool) {
	if b == nil {
		return blockedBlockedStack{}, false
	}
	v, ok := b.walked[tid]
	if !ok || v.Ustack == 0 {
		return v, false
	}
	if !pending && v.Flags&bRunning != 0 {
		return v, false
	}
	return v, true
}
