package symbolize

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The jitdump format (tools/perf/Documentation/jitdump-specification.txt,
// tools/perf/util/jitdump.h): a 40-byte header, then records, each with a
// 16-byte prefix (id, total size, timestamp). JavaScriptCore (Bun:
// BUN_JSC_logJITCodeForPerf=1), V8 (--perf-prof), the JVM agents and .NET
// (DOTNET_PerfMapEnabled) write it as jit-PID.dump and map it executable, so
// it shows in the process's memory map.
const (
	jitMagic        = 0x4A695444 // "JiTD" in the writer's byte order
	jitMagicSwapped = 0x4454694A
	jitHeaderSize   = 40
	jitPrefixSize   = 16

	jitCodeLoad      = 0
	jitCodeMove      = 1
	jitCodeDebugInfo = 2
	jitCodeClose     = 3

	// maxJITRecord bounds one record (a compiled function's code, usually
	// bytes to kilobytes): a corrupt size cannot make the reader allocate
	// more.
	maxJITRecord = 64 << 20
)

// ErrNotJITDump is returned for input that does not start with the jitdump
// magic.
var ErrNotJITDump = errors.New("not a jitdump file (no JiTD magic)")

// jitLine is one JIT_CODE_DEBUG_INFO entry.
type jitLine struct {
	addr uint64
	line int
	file string
}

// ParseJITDump reads the code-load and code-move records of a jitdump. A
// record cut short at the end (the JIT was still writing) ends the input
// without an error; other damage is an error after the symbols read so far.
func ParseJITDump(r io.Reader) ([]JITSymbol, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var hdr [jitHeaderSize]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, ErrNotJITDump
	}
	var bo binary.ByteOrder = binary.LittleEndian
	switch binary.LittleEndian.Uint32(hdr[:]) {
	case jitMagic:
	case jitMagicSwapped:
		bo = binary.BigEndian
	default:
		return nil, ErrNotJITDump
	}
	total := bo.Uint32(hdr[8:])
	if total < jitHeaderSize || total > 1<<20 {
		return nil, fmt.Errorf("jitdump: header size %d", total)
	}
	if _, err := br.Discard(int(total - jitHeaderSize)); err != nil {
		return nil, nil
	}
	var syms []JITSymbol
	index := map[uint64]int{} // code_addr → syms index, for moves
	var pending []jitLine     // debug info for the next code load
	var pendingAddr uint64
	var buf []byte
	for {
		var pre [jitPrefixSize]byte
		if _, err := io.ReadFull(br, pre[:]); err != nil {
			return syms, nil // clean end, or a record cut short
		}
		id, size := bo.Uint32(pre[:]), bo.Uint32(pre[4:])
		if size < jitPrefixSize || size > maxJITRecord {
			return syms, fmt.Errorf("jitdump: record of %d bytes", size)
		}
		body := int(size - jitPrefixSize)
		switch id {
		case jitCodeLoad, jitCodeMove, jitCodeDebugInfo:
		default:
			// JIT_CODE_CLOSE, JIT_CODE_UNWINDING_INFO and future records.
			if _, err := br.Discard(body); err != nil {
				return syms, nil
			}
			if id == jitCodeClose {
				return syms, nil
			}
			continue
		}
		if id == jitCodeLoad {
			// Only the fixed part and the name: the code is skipped.
			need := min(body, 40+4096)
			buf = append(buf[:0], make([]byte, need)...)
			if _, err := io.ReadFull(br, buf); err != nil {
				return syms, nil
			}
			if body < 40 {
				return syms, fmt.Errorf("jitdump: code load record of %d bytes", size)
			}
			addr, codeSize := bo.Uint64(buf[16:]), bo.Uint64(buf[24:])
			read := need
			name := buf[40:]
			nul := bytes.IndexByte(name, 0)
			if nul < 0 && read < body {
				// A name longer than read so far: read on to its end.
				rest, err := br.ReadSlice(0)
				if err != nil {
					return syms, nil
				}
				read += len(rest)
				name = append(name, rest...)
				nul = bytes.IndexByte(name, 0)
			}
			if nul < 0 || read > body {
				return syms, errors.New("jitdump: code load name not terminated within its record")
			}
			s := JITSymbol{Start: addr, Size: codeSize, Name: string(name[:nul])}
			if len(pending) > 0 && pendingAddr == addr {
				s.File, s.Line = pending[0].file, pending[0].line
			}
			pending = pending[:0]
			index[addr] = len(syms)
			syms = append(syms, s)
			if _, err := br.Discard(body - read); err != nil {
				return syms, nil
			}
			continue
		}
		buf = append(buf[:0], make([]byte, body)...)
		if _, err := io.ReadFull(br, buf); err != nil {
			return syms, nil
		}
		switch id {
		case jitCodeMove:
			if body < 40 {
				return syms, fmt.Errorf("jitdump: code move record of %d bytes", size)
			}
			oldAddr, newAddr, codeSize := bo.Uint64(buf[16:]), bo.Uint64(buf[24:]), bo.Uint64(buf[32:])
			s := JITSymbol{Start: newAddr, Size: codeSize}
			if i, ok := index[oldAddr]; ok {
				s.Name, s.File, s.Line = syms[i].Name, syms[i].File, syms[i].Line
			} else {
				s.Name = fmt.Sprintf("[jit code moved from %#x]", oldAddr)
			}
			index[newAddr] = len(syms)
			syms = append(syms, s)
		case jitCodeDebugInfo:
			if body < 16 {
				return syms, fmt.Errorf("jitdump: debug info record of %d bytes", size)
			}
			pendingAddr = bo.Uint64(buf)
			n := bo.Uint64(buf[8:])
			pending = pending[:0]
			p := buf[16:]
			prev := ""
			for i := uint64(0); i < n && len(p) >= 16; i++ {
				e := jitLine{addr: bo.Uint64(p), line: int(int32(bo.Uint32(p[8:])))}
				p = p[16:]
				nul := bytes.IndexByte(p, 0)
				if nul < 0 {
					break
				}
				name := p[:nul]
				p = p[nul+1:]
				if len(name) == 1 && name[0] == 0xff {
					e.file = prev // "same file as the previous entry"
				} else {
					e.file = string(name)
				}
				prev = e.file
				pending = append(pending, e)
			}
		}
	}
}
