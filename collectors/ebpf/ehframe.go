package ebpf

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// cfaRow says that from file offset Off (up to the next row) the CFA is
// SP + CFA when CFA > 0; CFA <= 0 means it is not SP-based (a frame
// pointer, an expression) or unknown.
type cfaRow struct {
	Off uint64
	CFA int32
}

// x86-64 DWARF register numbers.
const (
	dwarfRSP = 7
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

// spRows parses the .eh_frame of an x86-64 ELF file and returns, sorted
// by file offset, where its code's CFA is SP-based and by how much: the
// table the leaf fix-up reads. Only the CFA rule is tracked (the return
// address is at CFA-8 on x86-64).
func spRows(f *elf.File) ([]cfaRow, error) {
	sec := f.Section(".eh_frame")
	if sec == nil {
		return nil, errors.New("no .eh_frame")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	toOff := textOffset(f)
	p := &ehParser{data: data, base: sec.Addr, cies: map[uint64]*cie{}}
	var rows []cfaRow
	var rerr error
	err = p.each(func(fd *fde) {
		emit := func(pc uint64, cfa int32) {
			if off, ok := toOff(pc); ok {
				rows = append(rows, cfaRow{Off: off, CFA: cfa})
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
			if r.CFA > 0 || out[n-1].CFA <= 0 {
				out[n-1] = r
			}
			continue
		}
		out = append(out, r)
	}
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && merged[n-1].CFA == r.CFA {
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
	if r.pos+k > len(r.b) || k < 0 {
		r.err = true
		r.pos = len(r.b)
		return make([]byte, max(k, 0))
	}
	v := r.b[r.pos : r.pos+k]
	r.pos += k
	return v
}

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
}

// run executes the CIE's initial instructions and the FDE's, emitting
// (pc, SP-based offset or 0) at every change and 0 at the FDE's end.
func (p *ehParser) run(fd *fde, emit func(pc uint64, cfa int32)) error {
	var cur cfaRule
	var stack []cfaRule
	loc := fd.start
	val := func() int32 {
		if cur.ok && cur.reg == dwarfRSP && cur.off > 0 && cur.off < 1<<20 {
			return int32(cur.off)
		}
		return 0
	}
	exec := func(insns []byte, initial cfaRule) error {
		r := &rd{b: insns}
		for r.pos < len(r.b) {
			op := r.u8()
			advance := func(d uint64) {
				emit(loc, val())
				loc += d * fd.cie.codeAlign
			}
			switch op >> 6 {
			case 1:
				advance(uint64(op & 0x3f))
				continue
			case 2:
				r.uleb()
				continue
			case 3:
				continue
			}
			switch op {
			case 0x00:
			case 0x01:
				emit(loc, val())
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
			case 0x05:
				r.uleb()
				r.uleb()
			case 0x06, 0x07, 0x08:
				r.uleb()
			case 0x09:
				r.uleb()
				r.uleb()
			case 0x0a:
				stack = append(stack, cur)
			case 0x0b:
				if n := len(stack); n > 0 {
					cur = stack[n-1]
					stack = stack[:n-1]
				}
			case 0x0c:
				cur = cfaRule{reg: r.uleb(), off: int64(r.uleb()), ok: true}
			case 0x0d:
				cur.reg = r.uleb()
			case 0x0e:
				cur.off = int64(r.uleb())
			case 0x0f:
				r.n(int(r.uleb()))
				cur.ok = false
			case 0x10:
				r.uleb()
				r.n(int(r.uleb()))
			case 0x11:
				r.uleb()
				r.sleb()
			case 0x12:
				cur = cfaRule{reg: r.uleb(), off: r.sleb() * fd.cie.dataAlign, ok: true}
			case 0x13:
				cur.off = r.sleb() * fd.cie.dataAlign
			case 0x14:
				r.uleb()
				r.uleb()
			case 0x15:
				r.uleb()
				r.sleb()
			case 0x16:
				r.uleb()
				r.n(int(r.uleb()))
			case 0x2e:
				r.uleb()
			case 0x2f:
				r.uleb()
				r.uleb()
			default:
				return fmt.Errorf("%w: CFA opcode %#x", errEH, op)
			}
			if r.err {
				return errEH
			}
		}
		return nil
	}
	if err := exec(fd.cie.insns, cfaRule{}); err != nil {
		return err
	}
	if err := exec(fd.insns, cur); err != nil {
		return err
	}
	emit(loc, val())
	emit(fd.end, 0)
	return nil
}
