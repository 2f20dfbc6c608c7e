//go:build linux && amd64

package ebpf

import (
	cebpf "github.com/cilium/ebpf"
)

// switchTW is bpf/switchtw.bpf.c: the sched_switch program that takes a
// kept block's user stack by a task work, so that no program runs at
// every system call's exit. Loaded sharing every map of main.
type switchTW struct {
	objs switchtwObjects
}

// loadSwitchTW loads it, or says why the kernel refused it (before Linux
// 6.18 there is no bpf_task_work_schedule_resume).
func loadSwitchTW(main *profcapObjects, thresholdNs uint64) (*switchTW, error) {
	spec, err := loadSwitchtw()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["threshold_ns"].Set(thresholdNs); err != nil {
		return nil, err
	}
	t := &switchTW{}
	if err := loadSharing(spec, main, &t.objs); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *switchTW) close() {
	if t != nil {
		_ = t.objs.Close()
	}
}

// loadSharing loads spec into objs with every map it has in common with
// main replaced by main's (the objects that share the process tree, the
// off-CPU state, the stack store and the leaf fix-up tables).
func loadSharing(spec *cebpf.CollectionSpec, main *profcapObjects, objs any) error {
	info, err := main.UnwindRows.Info()
	if err != nil {
		return err
	}
	spec.Maps["unwind_rows"].MaxEntries = info.MaxEntries
	m := main.profcapMaps
	repl := map[string]*cebpf.Map{}
	for name, mp := range map[string]*cebpf.Map{
		"procs": m.Procs, "starts": m.Starts, "initial": m.Initial, "open_out": m.OpenOut, "pendings": m.Pendings,
		"stacks": m.Stacks, "scratch": m.Scratch, "cpu_counts": m.CpuCounts, "off_counts": m.OffCounts,
		"comms": m.Comms, "last_users": m.LastUsers, "unwind_files": m.UnwindFiles, "unwind_rows": m.UnwindRows,
		"cfi_procs": m.CfiProcs, "events": m.Events, "stats": m.Stats,
	} {
		if _, ok := spec.Maps[name]; ok {
			repl[name] = mp
		}
	}
	if err := spec.LoadAndAssign(objs, &cebpf.CollectionOptions{MapReplacements: repl}); err != nil {
		return loadError(err)
	}
	return nil
}
