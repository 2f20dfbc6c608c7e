package symbolize

import "debug/elf"

// FunctionStarts returns the function start addresses of .eh_frame_hdr's
// binary search table (LSB 5.0 "eh_frame_hdr"), sorted, when it uses the
// usual encoding (datarel sdata4, as GNU ld, lld and mold write it): the
// functions of a binary, stripped of its symbols or not.
func FunctionStarts(f *elf.File) []uint64 {
	s := f.Section(".eh_frame_hdr")
	if s == nil {
		return nil
	}
	d, err := s.Data()
	if err != nil || len(d) < 12 || d[0] != 1 || d[3] != 0x3b {
		return nil
	}
	size := func(enc byte) int {
		switch enc & 0x0f {
		case 0x03, 0x0b: // udata4, sdata4
			return 4
		case 0x04, 0x0c: // udata8, sdata8
			return 8
		}
		return 0
	}
	off := 4 + size(d[1]) // version, three encodings, eh_frame_ptr
	n := size(d[2])
	if size(d[1]) == 0 || n == 0 || off+n > len(d) {
		return nil
	}
	bo := f.ByteOrder
	var count uint64
	if n == 4 {
		count = uint64(bo.Uint32(d[off:]))
	} else {
		count = bo.Uint64(d[off:])
	}
	off += n
	count = min(count, uint64((len(d)-off)/8))
	starts := make([]uint64, 0, count)
	for i := uint64(0); i < count; i++ {
		rel := int32(bo.Uint32(d[off:]))
		starts = append(starts, uint64(int64(s.Addr)+int64(rel)))
		off += 8
	}
	return starts
}
