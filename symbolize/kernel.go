package symbolize

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// KernelModule is the Module of frames in the kernel proper, as perf names
// it; frames in a loadable module have "[name]".
const KernelModule = "[kernel.kallsyms]"

// kernelSyms is /proc/kallsyms, read as perf reads it.
type kernelSyms struct {
	syms    []symbol // names without the module; mods[i] is syms[i]'s module ("" for the kernel)
	mods    []string
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
// (which perf compares), then the module split off.
func readKallsyms(path string) *kernelSyms {
	ks := &kernelSyms{}
	f, err := os.Open(path)
	if err != nil {
		ks.problem = fmt.Sprintf("cannot read %s: %v", path, err)
		return ks
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 256<<10)
	var syms []symbol
	nonzero := false
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if k, perr := ParseKallsymsLine(line); perr == nil {
				if k.Addr != 0 {
					nonzero = true
				}
				t := k.Type &^ 0x20 // upper case
				if (t == 'T' || t == 'W' || t == 'D' || t == 'B') && k.Name[0] != '$' {
					bind := uint8(elf.STB_LOCAL)
					if k.Type == 'W' {
						bind = uint8(elf.STB_WEAK)
					} else if k.Type >= 'A' && k.Type <= 'Z' {
						bind = uint8(elf.STB_GLOBAL)
					}
					name := k.Name
					if k.Module != "" {
						name += "\t[" + k.Module + "]"
					}
					syms = append(syms, symbol{start: k.Addr, end: k.Addr, name: name, bind: bind, demangled: true})
				}
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
				ks.problem = fmt.Sprintf("reading %s: %v", path, err)
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			break
		}
	}
	if !nonzero {
		ks.problem = fmt.Sprintf("%s shows every address as 0 (kernel.kptr_restrict): run as root, or sysctl -w kernel.kptr_restrict=0", path)
		return ks
	}
	syms = fixupSymbols(syms, true)
	ks.mods = make([]string, len(syms))
	for i := range syms {
		if j := bytes.IndexByte([]byte(syms[i].name), '\t'); j >= 0 {
			mod := syms[i].name[j+1:]
			syms[i].name = syms[i].name[:j]
			ks.mods[i] = mod
		}
	}
	ks.syms = syms
	return ks
}

// lookup returns the index of the symbol containing addr, or -1.
func (ks *kernelSyms) lookup(addr uint64) int {
	i, found := slices.BinarySearchFunc(ks.syms, addr, func(s symbol, v uint64) int {
		switch {
		case s.start < v:
			return -1
		case s.start > v:
			return 1
		}
		return 0
	})
	if !found {
		i--
	}
	if i < 0 || addr >= ks.syms[i].end {
		return -1
	}
	return i
}

// Kernel names kernel addresses (from a kernel stack) with /proc/kallsyms,
// read once. Module is KernelModule or a loadable module's "[name]";
// Offset is the address itself, as perf prints kernel addresses.
func (s *Symbolizer) Kernel(addrs []uint64) []Frame {
	s.kernelOnce.Do(func() { s.kernel = readKallsyms(s.opt.Kallsyms) })
	ks := s.kernel
	out := make([]Frame, len(addrs))
	for i, a := range addrs {
		f := Frame{Module: KernelModule, Offset: a}
		if j := ks.lookup(a); j >= 0 {
			f.Function, f.Known, f.FuncOffset = ks.syms[j].name, true, a-ks.syms[j].start
			if ks.mods[j] != "" {
				f.Module = ks.mods[j]
			}
			s.kernelNamed.Add(1)
		} else {
			s.kernelUnnamed.Add(1)
		}
		out[i] = f
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
		f.Function, f.Known, f.FuncOffset = ks.syms[j].name, true, addr-ks.syms[j].start
		if ks.mods[j] != "" {
			f.Module = ks.mods[j]
		}
		return f
	}
	s.kernelUnnamed.Add(1)
	return f
}
