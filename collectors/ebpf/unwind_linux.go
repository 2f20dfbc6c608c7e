//go:build linux && amd64

package ebpf

import "github.com/profcap/profcap/bundle"

// unwindInfo is the leaf fix-up's table: CFI rows of frameless libraries
// the target maps, by file (see ehframe_linux.go).
type unwindInfo struct {
	files map[profcapFileKey]profcapFileRows
	rows  []profcapRow
	notes []string
	libs  []string // files covered
}

const warningPrefix = bundle.WarningPrefix

func buildUnwind(pid int) *unwindInfo {
	u := &unwindInfo{files: map[profcapFileKey]profcapFileRows{}}
	u.addLibraries(pid)
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
		if err := objs.UnwindFiles.Update(k, v, 0); err != nil {
			return err
		}
	}
	return nil
}
