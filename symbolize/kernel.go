package symbolize

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
)

// KernelModule is the Module of frames in the kernel proper, as perf names
// it; frames in a loadable module have "[name]".
const KernelModule = "[kernel.kallsyms]"

// kernelSyms is /proc/kallsyms, read as perf reads it.
type kernelSyms struct {
	syms    []symbol // names with their "\t[module]", as perf compares them
	mu      sync.Mutex
	problem string
}

// KallsymsLine is one parsed line of /proc/kallsyms: "ADDR TYPE NAME
// [MODULE]".
type KallsymsLine struct {
	Addr   uint64
	Type   byte
	Name   string
	Module string // without brackets; "" for the kernel proper
}

// ParseKallsymsLine parses one line of /proc/kallsyms.
func ParseKallsymsLine(line []byte) (KallsymsLine, error) {
	var k KallsymsLine
	line = bytes.TrimRight(line, "\r\n")
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || sp+3 > len(line) || line[sp+2] != ' ' {
		return k, errors.New("kallsyms: want 'ADDR TYPE NAME'")
	}
	a, err := parseHex(line[:sp])
	if err != nil {
		return k, fmt.Errorf("kallsyms: address: %w", err)
	}
	k.Addr, k.Type = a, line[sp+1]
	name := line[sp+3:]
	if i := bytes.IndexByte(name, '\t'); i >= 0 {
		mod := bytes.TrimSpace(name[i+1:])
		name = name[:i]
		if len(mod) >= 2 && mod[0] == '[' && mod[len(mod)-1] == ']' {
			k.Module = string(mod[1 : len(mod)-1])
		}
	}
	if len(name) == 0 {
		return k, errors.New("kallsyms: no name")
	}
	k.Name = string(name)
	return k, nil
}

// readKallsyms reads the kernel's symbols like perf's
// dso__load_kallsyms: text, weak, data and bss symbols (T, W, D, B in any
// case), unsized; ends and duplicates fixed up with the module in the name
// (which perf compares), then the module split off. Names stay offsets into
// the file's text until looked up.
func readKallsyms(path string) *kernelSyms {
	ks := &kernelSyms{}
	data, err := readProcFile(path)
	if err != nil {
		ks.problem = fmt.Sprintf("cannot read %s: %v", path, err)
		return ks
	}
	tab := &strtabRef{b: data} // data is resliced below; the table keeps the whole text
	syms := make([]symbol, 0, bytes.Count(data, []byte{'\n'})+1)
	nonzero := false
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		line := data
		if i >= 0 {
			line = data[:i]
		}
		// ADDR TYPE NAME[\t[MODULE]]
		if sp := bytes.IndexByte(line, ' '); sp > 0 && sp+3 < len(line) && line[sp+2] == ' ' {
			a, perr := parseHex(line[:sp])
			typ := line[sp+1]
			name := line[sp+3:]
			t := typ &^ 0x20 // upper case
			if perr == nil && len(name) > 0 {
				if a != 0 {
					nonzero = true
				}
				if (t == 'T' || t == 'W' || t == 'D' || t == 'B') && name[0] != '$' {
					bind := uint8(elf.STB_LOCAL)
					if typ == 'W' {
						bind = uint8(elf.STB_WEAK)
					} else if typ >= 'A' && typ <= 'Z' {
						bind = uint8(elf.STB_GLOBAL)
					}
					off := len(tab.b) - len(data) + sp + 3
					syms = append(syms, symbol{start: a, end: a, strtab: tab, nameOff: uint32(off), nameLen: uint32(len(name)), bind: bind, demangled: true,
						module: bytes.IndexByte(name, '[') >= 0})
				}
			}
		}
		if i < 0 {
			break
		}
		data = data[i+1:]
	}
	if !nonzero {
		ks.problem = fmt.Sprintf("%s shows every address as 0 (kernel.kptr_restrict): run as root, or sysctl -w kernel.kptr_restrict=0", path)
		return ks
	}
	ks.syms = fixupSymbols(syms, true)
	return ks
}

// readProcFile reads a file whose size stat does not tell (/proc/kallsyms
// says 0 and holds megabytes) into one buffer grown in large steps.
func readProcFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 0, 8<<20)
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf))
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// kname splits a kallsyms name ("fn\t[mod]") into the function and the
// module ("" for the kernel).
func kname(s *symbol) (string, string) {
	n := s.rawName()
	if j := strings.IndexByte(n, '\t'); j >= 0 {
		return n[:j], strings.TrimSpace(n[j+1:])
	}
	return n, ""
}

// lookup returns the index of the symbol containing addr, or -1 (reading
// only start and end: names are filled in under ks.mu).
func (ks *kernelSyms) lookup(addr uint64) int {
	i := sort.Search(len(ks.syms), func(i int) bool { return ks.syms[i].start > addr }) - 1
	if i < 0 || addr >= ks.syms[i].end {
		return -1
	}
	return i
}

// Kernel names kernel addresses (from a kernel stack) with /proc/kallsyms,
// read once. Module is KernelModule or a loadable module's "[name]";
// Offset is the address itself, as perf prints kernel addresses.
func (s *Symbolizer) Kernel(addrs []uint64) []Frame {
	out := make([]Frame, len(addrs))
	for i, a := range addrs {
		out[i] = s.KernelFrame(a)
	}
	return out
}

// KernelFrame is Kernel for one address, without allocating.
func (s *Symbolizer) KernelFrame(addr uint64) Frame {
	s.kernelOnce.Do(func() { s.kernel = readKallsyms(s.opt.Kallsyms) })
	ks := s.kernel
	f := Frame{Module: KernelModule, Offset: addr}
	if j := ks.lookup(addr); j >= 0 {
		s.kernelNamed.Add(1)
		ks.mu.Lock()
		name, mod := kname(&ks.syms[j])
		ks.mu.Unlock()
		f.Function, f.Known, f.FuncOffset = name, true, addr-ks.syms[j].start
		if mod != "" {
			f.Module = mod
		}
		return f
	}
	s.kernelUnnamed.Add(1)
	return f
}
