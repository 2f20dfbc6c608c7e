package symbolize

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"io"
	"slices"
	"sync"
)

// lineTable maps addresses to source lines from an ELF file's DWARF
// (.debug_line), one compilation unit at a time: the ranges of every unit
// are read once, a unit's line rows the first time one of its addresses is
// asked for.
type lineTable struct {
	mu    sync.Mutex
	d     *dwarf.Data
	units []unitRange // sorted by lo
	rows  map[dwarf.Offset][]lineRow
	ents  map[dwarf.Offset]*dwarf.Entry
}

type unitRange struct {
	lo, hi uint64
	off    dwarf.Offset
}

type lineRow struct {
	addr uint64
	end  bool // end of a sequence: no line from here
	file string
	line int
}

// maxLineRows bounds the rows kept per unit; beyond it a unit's lines are
// dropped (names stay).
const maxLineRows = 4 << 20

func newLineTable(f *elf.File) (*lineTable, error) {
	if f.Section(".debug_info") == nil && f.Section(".zdebug_info") == nil {
		return nil, errors.New("no DWARF")
	}
	d, err := f.DWARF()
	if err != nil {
		return nil, err
	}
	t := &lineTable{d: d, rows: map[dwarf.Offset][]lineRow{}, ents: map[dwarf.Offset]*dwarf.Entry{}}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag == dwarf.TagCompileUnit || e.Tag == dwarf.TagPartialUnit {
			if rs, err := d.Ranges(e); err == nil {
				for _, rg := range rs {
					if rg[1] > rg[0] {
						t.units = append(t.units, unitRange{rg[0], rg[1], e.Offset})
					}
				}
			}
			t.ents[e.Offset] = e
		}
		r.SkipChildren()
	}
	slices.SortFunc(t.units, func(a, b unitRange) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	return t, nil
}

// lookup returns the file and line of virtual address pc, or "", 0.
func (t *lineTable) lookup(pc uint64) (string, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i, _ := slices.BinarySearchFunc(t.units, pc, func(u unitRange, v uint64) int {
		if u.lo <= v {
			return -1
		}
		return 1
	})
	for k := i - 1; k >= 0 && k >= i-4; k-- {
		u := t.units[k]
		if pc < u.lo || pc >= u.hi {
			continue
		}
		rows, ok := t.rows[u.off]
		if !ok {
			rows = t.readRows(u.off)
			t.rows[u.off] = rows
		}
		j, _ := slices.BinarySearchFunc(rows, pc, func(r lineRow, v uint64) int {
			if r.addr <= v {
				return -1
			}
			return 1
		})
		if j > 0 && !rows[j-1].end {
			return rows[j-1].file, rows[j-1].line
		}
	}
	return "", 0
}

func (t *lineTable) readRows(off dwarf.Offset) []lineRow {
	e := t.ents[off]
	if e == nil {
		return nil
	}
	lr, err := t.d.LineReader(e)
	if err != nil || lr == nil {
		return nil
	}
	var rows []lineRow
	var le dwarf.LineEntry
	for len(rows) < maxLineRows {
		if err := lr.Next(&le); err != nil {
			if err != io.EOF {
				return rows
			}
			break
		}
		row := lineRow{addr: le.Address, end: le.EndSequence, line: le.Line}
		if le.File != nil {
			row.file = le.File.Name
		}
		rows = append(rows, row)
	}
	slices.SortStableFunc(rows, func(a, b lineRow) int {
		switch {
		case a.addr < b.addr:
			return -1
		case a.addr > b.addr:
			return 1
		case a.end && !b.end:
			return -1 // a sequence's end before the next one's start
		case b.end && !a.end:
			return 1
		}
		return 0
	})
	return rows
}
