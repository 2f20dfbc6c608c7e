package ebpf

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// cfaRow is one row of a CFI table: from file offset Off (up to the next
// row) the CFA is SP + CFA (CFA > 1), RBP + -CFA (CFA < 0, a function
// with a frame pointer), SP + 8 or 16 by the PC's place in a PLT entry
// (cfaPLT), none (cfaEnd: the outermost frame, whose return address is
// undefined), or unknown (0: an expression, or no function here). RBP != 0
// says the caller's RBP is saved at CFA + RBP; 0 that this code has not
// changed it. The return address is at CFA - 8 (x86-64).
type cfaRow struct {
	Off uint64
	CFA int32
	RBP int32
}

// cfaPLT is the CFA rule of lazy-binding PLT entries (the expression GNU
// ld writes for .plt: SP + 8, + 8 more from the entry's 11th byte on,
// after its push).
const cfaPLT = -1 << 31

// cfaEnd marks the outermost frame (_start, clone3's child): a walk that
// reaches it is whole. A CFA of SP + 1 is never real (CFAs are 8-aligned).
const cfaEnd = 1

// x86-64 DWARF register numbers.
const (
	dwarfRBP = 6
	dwarfRSP = 7
	dwarfRA  = 16
)

// textOffset maps a virtual address in f's executable segments to its
// file offset (the offsets the kernel's VMAs give BPF).
func textOffset(f *elf.File) func(uint64) (uint64, bool) {
	var text []elf.ProgHeader
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 {
			text = append(text, p.ProgHeader)
		}
	}
	return func(v uint64) (uint64, bool) {
		for _, p := range text {
			if v >= p.Vaddr && v < p.Vaddr+p.Filesz {
				return v - p.Vaddr + p.Off, true
			}
		}
		return 0, false
	}
}

// cfiRows parses the .eh_frame of an x86-64 ELF file and returns, sorted
// by file offset, how to find each instruction's caller: the table the
// leaf fix-up and the CFI unwinder read (bpf/unwind.h).
func cfiRows(f *elf.File) ([]cfaRow, error) {
	sec := f.Section(".eh_frame")
	if sec == nil {
		return nil, errors.New("no .eh_frame")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	return parseCFI(data, sec.Addr, textOffset(f))
}

// parseCFI is cfiRows of an .eh_frame section's bytes at address base;
// toOff maps code addresses to file offsets.
func parseCFI(data []byte, base uint64, toOff func(uint64) (uint64, bool)) ([]cfaRow, error) {
	p := &ehParser{data: data, base: base, cies: map[uint64]*cie{}}
	var rows []cfaRow
	var rerr error
	err := p.each(func(fd *fde) {
		emit := func(pc uint64, cfa, rbp int32) {
			if off, ok := toOff(pc); ok {
				rows = append(rows, cfaRow{Off: off, CFA: cfa, RBP: rbp})
			}
		}
		if e := p.run(fd, emit); e != nil && rerr == nil {
			rerr = e
		}
	})
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	// Sort, keeping for each offset the last row emitted there (a
	// function starting where another ends overrides its end row), and
	// merge runs of equal rules.
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Off < rows[j].Off })
	out := rows[:0]
	for _, r := range rows {
		if n := len(out); n > 0 && out[n-1].Off == r.Off {
			if r.CFA != 0 || out[n-1].CFA == 0 {
				out[n-1] = r
			}
			continue
		}
		out = append(out, r)
	}
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && merged[n-1].CFA == r.CFA && merged[n-1].RBP == r.RBP {
			continue
		}
		merged = append(merged, r)
	}
	return merged, nil
}

type cie struct {
	codeAlign uint64
	dataAlign int64
	fdeEnc    byte
	hasAug    bool
	insns     []byte
}

type fde struct {
	cie        *cie
	start, end uint64
	insns      []byte
}

type ehParser struct {
	data []byte
	base uint64 // the section's address
	cies map[uint64]*cie
}

var errEH = errors.New("malformed .eh_frame")

type rd struct {
	b   []byte
	pos int
	err bool
}

func (r *rd) u8() byte {
	if r.pos >= len(r.b) {
		r.err = true
		return 0
	}
	v := r.b[r.pos]
	r.pos++
	return v
}

func (r *rd) n(k int) []byte {
	if k < 0 || r.pos < 0 || r.pos > len(r.b) || k > len(r.b)-r.pos {
		// Past the end: an error, and zeros for the fixed-size reads
		// (never a buffer of the length the input claims).
		r.err = true
		r.pos = len(r.b)
		return zeros[:min(max(k, 0), len(zeros))]
	}
	v := r.b[r.pos : r.pos+k]
	r.pos += k
	return v
}

var zeros [8]byte

func (r *rd) u16() uint16 { return binary.LittleEndian.Uint16(r.n(2)) }
func (r *rd) u32() uint32 { return binary.LittleEndian.Uint32(r.n(4)) }
func (r *rd) u64() uint64 { return binary.LittleEndian.Uint64(r.n(8)) }

func (r *rd) uleb() uint64 {
	var v uint64
	for shift := uint(0); ; shift += 7 {
		b := r.u8()
		if shift < 64 {
			v |= uint64(b&0x7f) << shift
		}
		if b&0x80 == 0 || r.err {
			return v
		}
	}
}

func (r *rd) sleb() int64 {
	var v int64
	var shift uint
	var b byte
	for {
		b = r.u8()
		if shift < 64 {
			v |= int64(b&0x7f) << shift
		}
		shift += 7
		if b&0x80 == 0 || r.err {
			break
		}
	}
	if shift < 64 && b&0x40 != 0 {
		v |= -1 << shift
	}
	return v
}

func (r *rd) cstring() string {
	start := r.pos
	for r.pos < len(r.b) && r.b[r.pos] != 0 {
		r.pos++
	}
	s := string(r.b[start:r.pos])
	r.u8()
	return s
}

// ptr reads a pointer in DW_EH_PE encoding enc, at section address addr
// of the field (for pc-relative encodings).
func (r *rd) ptr(enc byte, addr uint64) (uint64, error) {
	if enc == 0xff { // DW_EH_PE_omit
		return 0, nil
	}
	var v uint64
	switch enc & 0x0f {
	case 0x00:
		v = r.u64()
	case 0x01:
		v = r.uleb()
	case 0x02:
		v = uint64(r.u16())
	case 0x03:
		v = uint64(r.u32())
	case 0x04:
		v = r.u64()
	case 0x09:
		v = uint64(r.sleb())
	case 0x0a:
		v = uint64(int64(int16(r.u16())))
	case 0x0b:
		v = uint64(int64(int32(r.u32())))
	case 0x0c:
		v = r.u64()
	default:
		return 0, fmt.Errorf("%w: pointer encoding %#x", errEH, enc)
	}
	switch enc & 0x70 {
	case 0x00:
	case 0x10: // pcrel
		v += addr
	default:
		return 0, fmt.Errorf("%w: pointer encoding %#x", errEH, enc)
	}
	return v, nil
}

// each calls fn for every FDE.
func (p *ehParser) each(fn func(*fde)) error {
	pos := 0
	for pos+4 <= len(p.data) {
		r := &rd{b: p.data, pos: pos}
		length := uint64(r.u32())
		if length == 0 {
			pos = r.pos
			continue // terminator (or padding)
		}
		if length == 0xffffffff {
			length = r.u64()
		}
		body := r.pos
		end := body + int(length)
		if end > len(p.data) || end < body {
			return errEH
		}
		idPos := r.pos
		id := r.u32()
		ent := &rd{b: p.data[:end], pos: r.pos}
		if id == 0 {
			c, err := p.parseCIE(ent)
			if err != nil {
				return err
			}
			p.cies[uint64(pos)] = c
		} else {
			ciePos := uint64(idPos) - uint64(id)
			if uint64(idPos) < uint64(id) || ciePos+8 > uint64(len(p.data)) {
				return fmt.Errorf("%w: an FDE at %#x names a CIE outside the section", errEH, pos)
			}
			c := p.cies[ciePos]
			if c == nil {
				cr := &rd{b: p.data, pos: int(ciePos)}
				l := int(cr.u32())
				cr.u32()
				cr.b = p.data[:min(len(p.data), int(ciePos)+4+l)]
				var err error
				if c, err = p.parseCIE(cr); err != nil {
					return err
				}
				p.cies[ciePos] = c
			}
			start, err := ent.ptr(c.fdeEnc, p.base+uint64(ent.pos))
			if err != nil {
				return err
			}
			size, err := ent.ptr(c.fdeEnc&0x0f, 0)
			if err != nil {
				return err
			}
			if c.hasAug {
				n := ent.uleb()
				ent.n(int(n))
			}
			if ent.err {
				return errEH
			}
			fn(&fde{cie: c, start: start, end: start + size, insns: p.data[ent.pos:end]})
		}
		pos = end
	}
	return nil
}

func (p *ehParser) parseCIE(r *rd) (*cie, error) {
	c := &cie{fdeEnc: 0}
	version := r.u8()
	aug := r.cstring()
	if len(aug) >= 2 && aug[:2] == "eh" {
		r.u64()
	}
	c.codeAlign = r.uleb()
	c.dataAlign = r.sleb()
	if version == 1 {
		r.u8()
	} else {
		r.uleb()
	}
	if len(aug) > 0 && aug[0] == 'z' {
		c.hasAug = true
		n := r.uleb()
		augEnd := r.pos + int(n)
		for _, ch := range aug[1:] {
			switch ch {
			case 'R':
				c.fdeEnc = r.u8()
			case 'P':
				enc := r.u8()
				if _, err := r.ptr(enc&0x7f, 0); err != nil {
					return nil, err
				}
			case 'L':
				r.u8()
			case 'S', 'B':
			default:
				r.pos = augEnd
			}
		}
		r.pos = augEnd
	}
	if r.err || r.pos > len(r.b) {
		return nil, errEH
	}
	c.insns = r.b[r.pos:]
	return c, nil
}

type cfaRule struct {
	reg uint64
	off int64
	ok  bool // false: an expression, unknown
	plt bool // the PLT expression
}

// cfiState is what the unwinder needs of a row: the CFA rule, where the
// caller's RBP is saved (rbpSaved: at CFA + rbp) and whether the return
// address is undefined (the outermost frame).
type cfiState struct {
	cfa      cfaRule
	rbp      int64
	rbpSaved bool
	raUndef  bool
}

// pltExpr is GNU ld's CFA expression for .plt entries: DW_OP_breg7 8,
// DW_OP_breg16 0, DW_OP_lit15, DW_OP_and, DW_OP_lit11 (lit10 in some),
// DW_OP_ge, DW_OP_lit3, DW_OP_shl, DW_OP_plus.
func pltExpr(b []byte) bool {
	return len(b) == 11 && b[0] == 0x77 && b[1] == 8 && b[2] == 0x80 && b[3] == 0 && b[4] == 0x3f && b[5] == 0x1a &&
		(b[6] == 0x3b || b[6] == 0x3a) && b[7] == 0x2a && b[8] == 0x33 && b[9] == 0x24 && b[10] == 0x22
}

// run executes the CIE's initial instructions and the FDE's, emitting
// (pc, CFA rule, RBP rule) at every change and (end, 0, 0) at the FDE's
// end.
func (p *ehParser) run(fd *fde, emit func(pc uint64, cfa, rbp int32)) error {
	var cur, initial cfiState
	var stack []cfiState
	loc := fd.start
	val := func() (int32, int32) {
		var rbp int32
		if cur.rbpSaved && cur.rbp > -1<<20 && cur.rbp < 1<<20 {
			rbp = int32(cur.rbp)
		}
		c := cur.cfa
		switch {
		case cur.raUndef:
			return cfaEnd, 0
		case c.plt:
			return cfaPLT, rbp
		case !c.ok || c.off <= 0 || c.off >= 1<<20:
			return 0, rbp
		case c.reg == dwarfRSP:
			return int32(c.off), rbp
		case c.reg == dwarfRBP:
			return -int32(c.off), rbp
		}
		return 0, rbp
	}
	emitCur := func() {
		c, r := val()
		emit(loc, c, r)
	}
	// setReg applies a register rule: saved at CFA + off (saved), or
	// anything else (not saved: same value, undefined, in a register, an
	// expression).
	setReg := func(reg uint64, off int64, saved bool) {
		switch reg {
		case dwarfRBP:
			cur.rbp, cur.rbpSaved = off, saved
		case dwarfRA:
			cur.raUndef = false
		}
	}
	restore := func(reg uint64) {
		switch reg {
		case dwarfRBP:
			cur.rbp, cur.rbpSaved = initial.rbp, initial.rbpSaved
		case dwarfRA:
			cur.raUndef = initial.raUndef
		}
	}
	exec := func(insns []byte) error {
		r := &rd{b: insns}
		for r.pos < len(r.b) {
			op := r.u8()
			advance := func(d uint64) {
				emitCur()
				loc += d * fd.cie.codeAlign
			}
			switch op >> 6 {
			case 1: // advance_loc
				advance(uint64(op & 0x3f))
				continue
			case 2: // offset
				setReg(uint64(op&0x3f), int64(r.uleb())*fd.cie.dataAlign, true)
				continue
			case 3: // restore
				restore(uint64(op & 0x3f))
				continue
			}
			switch op {
			case 0x00: // nop
			case 0x01: // set_loc
				emitCur()
				v, err := r.ptr(fd.cie.fdeEnc, p.base)
				if err != nil {
					return err
				}
				loc = v
			case 0x02:
				advance(uint64(r.u8()))
			case 0x03:
				advance(uint64(r.u16()))
			case 0x04:
				advance(uint64(r.u32()))
			case 0x05: // offset_extended
				reg := r.uleb()
				setReg(reg, int64(r.uleb())*fd.cie.dataAlign, true)
			case 0x06: // restore_extended
				restore(r.uleb())
			case 0x07: // undefined
				if reg := r.uleb(); reg == dwarfRA {
					cur.raUndef = true
				} else {
					setReg(reg, 0, false)
				}
			case 0x08: // same_value
				setReg(r.uleb(), 0, false)
			case 0x09: // register
				reg := r.uleb()
				r.uleb()
				setReg(reg, 0, false)
			case 0x0a: // remember_state
				stack = append(stack, cur)
			case 0x0b: // restore_state
				if n := len(stack); n > 0 {
					cur = stack[n-1]
					stack = stack[:n-1]
				}
			case 0x0c: // def_cfa
				cur.cfa = cfaRule{reg: r.uleb(), off: int64(r.uleb()), ok: true}
			case 0x0d: // def_cfa_register
				cur.cfa.reg = r.uleb()
			case 0x0e: // def_cfa_offset
				cur.cfa.off = int64(r.uleb())
			case 0x0f: // def_cfa_expression
				cur.cfa = cfaRule{plt: pltExpr(r.n(int(r.uleb())))}
			case 0x10: // expression
				reg := r.uleb()
				r.n(int(r.uleb()))
				setReg(reg, 0, false)
			case 0x11: // offset_extended_sf
				reg := r.uleb()
				setReg(reg, r.sleb()*fd.cie.dataAlign, true)
			case 0x12: // def_cfa_sf
				cur.cfa = cfaRule{reg: r.uleb(), off: r.sleb() * fd.cie.dataAlign, ok: true}
			case 0x13: // def_cfa_offset_sf
				cur.cfa.off = r.sleb() * fd.cie.dataAlign
			case 0x14: // val_offset
				reg := r.uleb()
				r.uleb()
				setReg(reg, 0, false)
			case 0x15: // val_offset_sf
				reg := r.uleb()
				r.sleb()
				setReg(reg, 0, false)
			case 0x16: // val_expression
				reg := r.uleb()
				r.n(int(r.uleb()))
				setReg(reg, 0, false)
			case 0x2e: // GNU_args_size
				r.uleb()
			case 0x2f: // GNU_negative_offset_extended
				reg := r.uleb()
				setReg(reg, -int64(r.uleb())*fd.cie.dataAlign, true)
			default:
				return fmt.Errorf("%w: CFA opcode %#x", errEH, op)
			}
			if r.err {
				return errEH
			}
		}
		return nil
	}
	if err := exec(fd.cie.insns); err != nil {
		return err
	}
	initial = cur
	if err := exec(fd.insns); err != nil {
		return err
	}
	emitCur()
	emit(fd.end, 0, 0)
	return nil
}
