package symbolize

import (
	"bytes"
	"debug/elf"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// mapped holds the memory mapping each ELF file opened by mapELF was read
// from: section contents are slices of it, not copies, and the string
// tables that symbol names are read from on first use stay in the page
// cache rather than in the heap. Mappings are never removed: they live as
// long as the symbols that point into them (the Symbolizer's cache).
var mapped sync.Map // *elf.File → []byte

// mapELF maps f read-only and parses it as ELF; it falls back to reading
// through the file when mapping is not possible.
func mapELF(fh *os.File) (*elf.File, error) {
	st, err := fh.Stat()
	if err == nil && st.Mode().IsRegular() && st.Size() > 0 && st.Size() == int64(int(st.Size())) {
		if m, err := unix.Mmap(int(fh.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED); err == nil {
			f, err := elf.NewFile(bytes.NewReader(m))
			if err != nil {
				_ = unix.Munmap(m)
				return nil, err
			}
			mapped.Store(f, m)
			return f, nil
		}
	}
	return elf.NewFile(fh)
}

// openELF opens and maps the regular file at path.
func openELF(path string) (*elf.File, error) {
	fh, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close() // the mapping outlives the descriptor
	f, err := mapELF(fh)
	if err != nil {
		return nil, err
	}
	if _, ok := mapped.Load(f); !ok {
		// Not mapped: debug/elf reads through fh, which must stay open.
		fh2, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		return elf.NewFile(fh2)
	}
	return f, nil
}

// sectionData returns a section's contents: a slice of the file's mapping
// where it has one and the section is stored plainly, else a copy.
func sectionData(f *elf.File, s *elf.Section) ([]byte, error) {
	if m, ok := mapped.Load(f); ok && s.Type != elf.SHT_NOBITS && s.Flags&elf.SHF_COMPRESSED == 0 {
		raw := m.([]byte)
		if s.Offset <= uint64(len(raw)) && s.FileSize <= uint64(len(raw))-s.Offset {
			return raw[s.Offset : s.Offset+s.FileSize], nil
		}
	}
	return s.Data()
}
