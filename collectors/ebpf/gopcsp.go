package ebpf

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// goSPRows reads a Go executable's pclntab (Go 1.18 and later: the
// runtime's own table of functions, kept in stripped binaries too) and
// returns, sorted by file offset, the leaf fix-up's rows for its code:
// where the return address is at the stack pointer (cfa 8: a function
// without a frame, or the prologue and epilogue of one with a frame,
// whose body keeps a frame pointer, cfa 0). Go leaves small leaf
// functions without a frame, so frame-pointer unwinding of a sample in
// one skips its caller (main.spinHash's caller main.burner was missing).
//
// Each function's pcsp table maps its PCs to the SP's offset from the
// function's entry; the format is the runtime's (runtime/symtab.go):
// varint pairs of a zig-zag value delta and a PC delta in units of the
// minimum instruction size.
func goSPRows(f *elf.File) ([]cfaRow, error) {
	sec := f.Section(".gopclntab")
	if sec == nil {
		return nil, errors.New("no .gopclntab")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	var textAddr uint64
	if t := f.Section(".text"); t != nil {
		textAddr = t.Addr
	}
	return pclnSPRows(data, textAddr, textOffset(f))
}

// maxGoFuncs bounds what a pclntab may claim (the largest Go binaries
// have a few hundred thousand functions).
const maxGoFuncs = 4 << 20

// pclnSPRows is goSPRows on the pclntab's bytes; textAddr is the .text
// section's address (the header's text start is 0 in the file: the
// linker leaves it to the runtime), toOff maps a virtual address to a
// file offset.
func pclnSPRows(tab []byte, textAddr uint64, toOff func(uint64) (uint64, bool)) ([]cfaRow, error) {
	if len(tab) < 8+8*8 {
		return nil, errors.New("pclntab: too short for its header")
	}
	le := binary.LittleEndian
	switch magic := le.Uint32(tab); magic {
	case 0xfffffff0, 0xfffffff1: // Go 1.18-1.19, 1.20 and later
	default:
		return nil, fmt.Errorf("pclntab: magic %#x is not Go 1.18 or later's", magic)
	}
	minLC, ptrSize := uint64(tab[6]), tab[7]
	if ptrSize != 8 || minLC == 0 {
		return nil, fmt.Errorf("pclntab: pointer size %d, instruction size %d: not a 64-bit table", ptrSize, minLC)
	}
	word := func(i int) uint64 { return le.Uint64(tab[8+8*i:]) }
	nfunc, textStart, pctab, functab := word(0), word(2), word(6), word(7)
	if textStart == 0 {
		textStart = textAddr
	}
	if nfunc == 0 || nfunc > maxGoFuncs || pctab >= uint64(len(tab)) || functab >= uint64(len(tab)) ||
		functab+(nfunc+1)*8 > uint64(len(tab)) {
		return nil, fmt.Errorf("pclntab: %d functions, tables at %d and %d, in %d bytes", nfunc, pctab, functab, len(tab))
	}
	ft := tab[functab:]
	var rows []cfaRow
	emit := func(pc uint64, cfa int32) {
		if off, ok := toOff(pc); ok {
			rows = append(rows, cfaRow{Off: off, CFA: cfa})
		}
	}
	type span struct {
		lo, hi uint64
		sp     int64
	}
	var spans []span
	for i := uint64(0); i < nfunc; i++ {
		entry := textStart + uint64(le.Uint32(ft[8*i:]))
		end := textStart + uint64(le.Uint32(ft[8*(i+1):]))
		fo := functab + uint64(le.Uint32(ft[8*i+4:]))
		if end <= entry || fo+20 > uint64(len(tab)) {
			continue
		}
		pcsp := le.Uint32(tab[fo+16:])
		if pcsp == 0 || pctab+uint64(pcsp) >= uint64(len(tab)) {
			continue
		}
		spans = spans[:0]
		framed := false
		p := tab[pctab+uint64(pcsp):]
		val, pc := int64(-1), entry
		for first := true; pc < end; first = false {
			uv, n := binary.Uvarint(p)
			if n <= 0 || (uv == 0 && !first) {
				break
			}
			p = p[n:]
			d := int64(uv >> 1)
			if uv&1 != 0 {
				d = ^d
			}
			val += d
			pd, m := binary.Uvarint(p)
			if m <= 0 {
				break
			}
			p = p[m:]
			hi := min(pc+pd*minLC, end)
			spans = append(spans, span{pc, hi, val})
			framed = framed || val > 0
			pc = hi
		}
		for _, s := range spans {
			switch {
			case s.sp == 0:
				emit(s.lo, 8) // the return address is at SP
			case framed:
				emit(s.lo, 0) // the body keeps a frame pointer
			}
		}
		emit(end, 0)
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Off < rows[j].Off })
	out := rows[:0]
	for _, r := range rows {
		if n := len(out); n > 0 && out[n-1].Off == r.Off {
			// A function's first row overrides the end row of the one
			// before it.
			out[n-1] = r
			continue
		}
		if n := len(out); n > 0 && out[n-1].CFA == r.CFA {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}
