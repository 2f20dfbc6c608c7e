//go:build linux && amd64

package ebpf

import (
	"errors"
	"fmt"

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
	info, err := main.UnwindRows.Info()
	if err != nil {
		return nil, err
	}
	spec.Maps["unwind_rows"].MaxEntries = info.MaxEntries
	repl := map[string]*cebpf.Map{}
	for name, m := range sharedMaps(main) {
		if _, ok := spec.Maps[name]; ok {
			repl[name] = m
		}
	}
	t := &switchTW{}
	if err := spec.LoadAndAssign(&t.objs, &cebpf.CollectionOptions{MapReplacements: repl}); err != nil {
		var ve *cebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("verifier: %s", lastLines(fmt.Sprintf("%+v", ve), 3))
		}
		return nil, err
	}
	return t, nil
}

func (t *switchTW) close() {
	if t != nil {
		_ = t.objs.Close()
	}
}

// sharedMaps are main's maps by name, for the objects that share them.
func sharedMaps(main *profcapObjects) map[string]*cebpf.Map {
	m := main.profcapMaps
	return map[string]*cebpf.Map{
		"procs": m.Procs, "starts": m.Starts, "initial": m.Initial, "open_out": m.OpenOut, "pendings": m.Pendings,
		"stacks": m.Stacks, "scratch": m.Scratch, "cpu_counts": m.CpuCounts, "off_counts": m.OffCounts,
		"comms": m.Comms, "last_users": m.LastUsers, "unwind_files": m.UnwindFiles, "unwind_rows": m.UnwindRows,
		"events": m.Events, "stats": m.Stats,
	}
}
