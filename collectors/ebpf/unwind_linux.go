//go:build linux && amd64

package ebpf

import "github.com/profcap/profcap/bundle"

// unwindInfo is the unwinding tables: CFI rows by file (the leaf fix-up's
// of frameless libraries, and every code file's of a process walked by
// CFI: see ehframe_linux.go), and the processes walked by CFI.
type unwindInfo struct {
	files  map[profcapFileKey]profcapFileRows
	rows   []profcapRow
	cfi    map[uint32]profcapCfiMaps // by tgid
	cfiWhy []string                  // the processes walked by CFI, and why
	notes  []string
	libs   []string // files covered
}

const warningPrefix = bundle.WarningPrefix

// buildUnwind builds the tables for the processes of the tree (pid and
// its descendants now).
func buildUnwind(tree []int) *unwindInfo {
	u := &unwindInfo{files: map[profcapFileKey]profcapFileRows{}, cfi: map[uint32]profcapCfiMaps{}}
	for _, pid := range tree {
		u.addLibraries(pid)
		u.addCFI(pid)
	}
	return u
}

func (u *unwindInfo) install(objs *profcapObjects) error {
	if len(u.rows) == 0 {
		return nil
	}
	// In one batch where the kernel has them (5.6+): a Go program's table
	// is 100,000 rows and more.
	keys := make([]uint32, len(u.rows))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := objs.UnwindRows.BatchUpdate(keys, u.rows, nil); err != nil {
		for i, r := range u.rows {
			if err := objs.UnwindRows.Update(uint32(i), r, 0); err != nil {
				return err
			}
		}
	}
	for k, v := range u.files {
		if v.Count == 0 || k == vdsoKey {
			continue
		}
		if err := objs.UnwindFiles.Update(k, v, 0); err != nil {
			return err
		}
	}
	for tgid, cm := range u.cfi {
		if err := objs.CfiProcs.Update(tgid, &cm, 0); err != nil {
			return err
		}
	}
	return nil
}
