package symbolize

import (
	"bytes"
	"debug/elf"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// mapped holds the memory mapping each ELF file opened by mapELF is read
// from while its symbols are read (section contents are slices of it, not
// copies); forget drops the entry once they are. The string tables that
// symbol names are read from on first use keep their mapping alive
// (strtabRef), and it is unmapped when no symbol points into it any more.
var mapped sync.Map // *elf.File → *mmapping

// mmapping is one file's read-only mapping.
type mmapping struct{ b []byte }

// strtabRef is a string table and, when it lies in a mapping, the mapping.
type strtabRef struct {
	b  []byte
	mm *mmapping
}

func newMapping(b []byte) *mmapping {
	mm := &mmapping{b: b}
	runtime.AddCleanup(mm, func(b []byte) { _ = unix.Munmap(b) }, b)
	return mm
}

// forget drops f's entry in mapped: its mapping then lives only as long as
// the symbols read from it.
func forget(f *elf.File) {
	if f != nil {
		mapped.Delete(f)
	}
}

// mappingOf returns the mapping f was read from, or nil.
func mappingOf(f *elf.File) *mmapping {
	if m, ok := mapped.Load(f); ok {
		return m.(*mmapping)
	}
	return nil
}

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
			mapped.Store(f, newMapping(m))
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
	if mm := mappingOf(f); mm != nil && s.Type != elf.SHT_NOBITS && s.Flags&elf.SHF_COMPRESSED == 0 {
		raw := mm.b
		if s.Offset <= uint64(len(raw)) && s.FileSize <= uint64(len(raw))-s.Offset {
			return raw[s.Offset : s.Offset+s.FileSize], nil
		}
	}
	return s.Data()
}
