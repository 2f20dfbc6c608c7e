package symbolize

import (
	"bytes"
	"strconv"
	"strings"
)

// MapsEntry is one line of /proc/PID/maps.
type MapsEntry struct {
	Start, End, Offset uint64
	Exec               bool
	Inode              uint64
	Dev                uint32 // the file's device as the kernel's dev_t: major << 20 | minor
	Path               string // "" for anonymous memory; " (deleted)" cut off
	Deleted            bool
}

// ParseMaps parses /proc/PID/maps ("start-end perms offset dev inode
// path"); malformed lines are skipped.
func ParseMaps(data []byte) []MapsEntry {
	var out []MapsEntry
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		if e, ok := parseMapsLine(line); ok {
			out = append(out, e)
		}
	}
	return out
}

func parseMapsLine(line []byte) (MapsEntry, bool) {
	var e MapsEntry
	field := func() []byte {
		line = bytes.TrimLeft(line, " ")
		i := bytes.IndexByte(line, ' ')
		if i < 0 {
			f := line
			line = nil
			return f
		}
		f := line[:i]
		line = line[i+1:]
		return f
	}
	rng, perms, off, dev, inode := field(), field(), field(), field(), field()
	lo, hi, ok := bytes.Cut(rng, []byte("-"))
	if !ok || len(perms) < 4 {
		return e, false
	}
	var err error
	if e.Start, err = strconv.ParseUint(string(lo), 16, 64); err != nil {
		return e, false
	}
	if e.End, err = strconv.ParseUint(string(hi), 16, 64); err != nil || e.End < e.Start {
		return e, false
	}
	if e.Offset, err = strconv.ParseUint(string(off), 16, 64); err != nil {
		return e, false
	}
	e.Inode, _ = strconv.ParseUint(string(inode), 10, 64)
	if maj, min, ok := bytes.Cut(dev, []byte(":")); ok {
		ma, _ := strconv.ParseUint(string(maj), 16, 32)
		mi, _ := strconv.ParseUint(string(min), 16, 32)
		e.Dev = uint32(ma<<20 | mi)
	}
	e.Exec = perms[2] == 'x'
	path := strings.TrimLeft(string(line), " ")
	if p, ok := strings.CutSuffix(path, " (deleted)"); ok {
		path, e.Deleted = p, true
	}
	e.Path = path
	return e, true
}
