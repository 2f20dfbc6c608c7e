// Package perfdata reads the perf.data files `perf record` writes, without
// perf: the file header, the event attributes (whose sample_type bits decide
// each sample's layout), the side-band records that say which process maps
// what (MMAP, MMAP2 with or without build-ids, COMM, FORK, EXIT), SAMPLE
// records with their callchains, context switches (PERF_RECORD_SWITCH) and
// tracepoint data (sched:sched_switch, its layout from the file's
// HEADER_TRACING_DATA), and the feature sections that name the events
// (HEADER_EVENT_DESC) and the files' build-ids (HEADER_BUILD_ID).
//
// Frames are named with the symbolize package, by perf's rules, so that
// Collapse gives byte for byte what `perf script | profcap collapse` gives
// for a recording of native code with frame pointers, and Parse the profile
// perfscript.Parse (or ParseOffCPU) builds from perf script's text.
//
// The format is perf's tools/perf/Documentation/perf.data-file-format.txt
// and include/uapi/linux/perf_event.h.
package perfdata

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
)

// Magic starts every perf.data file ("PERFILE2"; a big-endian file has it
// byte-swapped as a 64-bit number: "2ELIFREP").
const Magic = "PERFILE2"

// IsPerfData reports whether head is the start of a perf.data file.
func IsPerfData(head []byte) bool {
	return len(head) >= 8 && (string(head[:8]) == Magic || string(head[:8]) == "2ELIFREP")
}

// FormatError reports a file that is not (or no longer) valid perf.data,
// with the byte offset where that was found.
type FormatError struct {
	Offset int64
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("perf.data: at byte %d: %s", e.Offset, e.Msg)
}

func formatErr(off int, format string, args ...any) error {
	return &FormatError{Offset: int64(off), Msg: fmt.Sprintf(format, args...)}
}

// Record types (include/uapi/linux/perf_event.h, tools/lib/perf/include/perf/event.h).
const (
	recMMAP             = 1
	recLost             = 2
	recComm             = 3
	recExit             = 4
	recFork             = 7
	recSample           = 9
	recMMAP2            = 10
	recLostSamples      = 13
	recSwitch           = 14
	recSwitchCPUWide    = 15
	recKsymbol          = 17
	recHeaderAttr       = 64
	recHeaderTracing    = 66
	recHeaderBuildID    = 67
	recFinishedRound    = 68
	recHeaderFeature    = 80
	recCompressed       = 81
	miscCPUModeMask     = 7
	miscKernel          = 1
	miscUser            = 2
	miscSwitchOut       = 1 << 13
	miscMMAPBuildID     = 1 << 14
	miscCommExec        = 1 << 13
	miscBuildIDSize     = 1 << 15
	perfContextMax      = ^uint64(4095) + 1 // (u64)-4095
	perfContextHV       = ^uint64(32) + 1
	perfContextKernel   = ^uint64(128) + 1
	perfContextUser     = ^uint64(512) + 1
	perfContextGuest    = ^uint64(2048) + 1
	perfContextGuestK   = ^uint64(2176) + 1
	perfContextGuestU   = ^uint64(2560) + 1
	featureTracingData  = 1
	featureBuildID      = 2
	featureHostname     = 3
	featureOSRelease    = 4
	featureVersion      = 5
	featureArch         = 6
	featureCmdline      = 11
	featureEventDesc    = 12
	featureCompressed   = 27
	maxFeatures         = 256
	attrTypeHardware    = 0
	attrTypeSoftware    = 1
	attrTypeTracepoint  = 2
	attrTypeHWCache     = 3
	attrTypeRaw         = 4
	attrTypeBreakpoint  = 5
	sampleIP            = 1 << 0
	sampleTID           = 1 << 1
	sampleTime          = 1 << 2
	sampleAddr          = 1 << 3
	sampleRead          = 1 << 4
	sampleCallchain     = 1 << 5
	sampleID            = 1 << 6
	sampleCPU           = 1 << 7
	samplePeriod        = 1 << 8
	sampleStreamID      = 1 << 9
	sampleRaw           = 1 << 10
	sampleBranchStack   = 1 << 11
	sampleRegsUser      = 1 << 12
	sampleStackUser     = 1 << 13
	sampleWeight        = 1 << 14
	sampleDataSrc       = 1 << 15
	sampleIdentifier    = 1 << 16
	sampleTransaction   = 1 << 17
	sampleRegsIntr      = 1 << 18
	samplePhysAddr      = 1 << 19
	sampleAux           = 1 << 20
	sampleCgroup        = 1 << 21
	sampleDataPageSize  = 1 << 22
	sampleCodePageSize  = 1 << 23
	sampleWeightStruct  = 1 << 24
	formatTotalEnabled  = 1 << 0
	formatTotalRunning  = 1 << 1
	formatID            = 1 << 2
	formatGroup         = 1 << 3
	formatLost          = 1 << 4
	branchHWIndex       = 1 << 17 // PERF_SAMPLE_BRANCH_HW_INDEX in branch_sample_type
	attrFlagSampleIDAll = 1 << 18
	attrFlagMMAP2       = 1 << 23
	attrFlagSwitch      = 1 << 26
	attrFlagFreq        = 1 << 10
	attrFlagExclUser    = 1 << 4
	attrFlagExclKernel  = 1 << 5
)

// Attr is one event's perf_event_attr, with its name (from
// HEADER_EVENT_DESC, as perf script prints it) and sample ids.
type Attr struct {
	Type            uint32
	Config          uint64
	SamplePeriod    uint64 // or the frequency, when Freq
	SampleType      uint64
	ReadFormat      uint64
	Flags           uint64
	BranchSample    uint64
	SampleRegsUser  uint64
	SampleStackUser uint32
	SampleRegsIntr  uint64
	Name            string
	IDs             []uint64
}

// Freq reports whether SamplePeriod is a frequency (perf record -F).
func (a *Attr) Freq() bool { return a.Flags&attrFlagFreq != 0 }

// SampleIDAll reports whether side-band records carry the sample_id
// trailer (pid/tid, time, …).
func (a *Attr) SampleIDAll() bool { return a.Flags&attrFlagSampleIDAll != 0 }

// DWARFStacks reports whether samples carry a copy of the user stack
// (perf record --call-graph dwarf), which perf unwinds afterwards.
func (a *Attr) DWARFStacks() bool { return a.SampleType&sampleStackUser != 0 }

// idTrailerSize is the size of the sample_id trailer of side-band records.
func (a *Attr) idTrailerSize() int {
	if !a.SampleIDAll() {
		return 0
	}
	n := 0
	for _, b := range []uint64{sampleTID, sampleTime, sampleID, sampleStreamID, sampleCPU, sampleIdentifier} {
		if a.SampleType&b != 0 {
			n += 8
		}
	}
	return n
}

// File is a parsed perf.data file. Its records are read from Data.
type File struct {
	data   []byte
	bo     binary.ByteOrder
	pipe   bool
	Attrs  []*Attr
	byID   map[uint64]*Attr
	idPos  int // position of the id in a sample, in u64 words; -1 none
	isPos  int // position of the id from the end of a side-band record; -1 none
	recOff int // start and end of the records
	recEnd int

	features map[int][]byte

	// From the feature sections.
	BuildIDs  map[string]string // file name → hex build-id (HEADER_BUILD_ID)
	Hostname  string
	OSRelease string
	Version   string // perf's version
	Arch      string
	Cmdline   []string
	Tracing   *TracingData // HEADER_TRACING_DATA, nil when absent

	// Compressed is set when the records are zstd-compressed (perf record
	// -z), which this reader does not inflate.
	Compressed bool
}

// Parse parses a perf.data file held in data (a file's contents or a
// mapping of it). The records are not read yet.
func Parse(data []byte) (*File, error) {
	if len(data) < 16 {
		return nil, formatErr(0, "file too short for a perf.data header")
	}
	f := &File{data: data, byID: map[uint64]*Attr{}, features: map[int][]byte{}, BuildIDs: map[string]string{}}
	switch string(data[:8]) {
	case Magic:
		f.bo = binary.LittleEndian
	case "2ELIFREP":
		f.bo = binary.BigEndian
	default:
		return nil, formatErr(0, "no PERFILE2 magic: not a perf.data file (or one from perf before 2010, PERFFILE)")
	}
	hsize := f.bo.Uint64(data[8:])
	if hsize == 16 {
		// Pipe mode (perf record -o -): attributes and features come as
		// records in the stream.
		f.pipe = true
		f.recOff, f.recEnd = 16, len(data)
		if err := f.scanPipeHeaders(); err != nil {
			return nil, err
		}
		return f, f.finishAttrs()
	}
	if hsize < 104 || hsize > uint64(len(data)) {
		return nil, formatErr(8, "header size %d", hsize)
	}
	attrSize := f.bo.Uint64(data[16:])
	attrsOff, attrsSize := f.bo.Uint64(data[24:]), f.bo.Uint64(data[32:])
	dataOff, dataSize := f.bo.Uint64(data[40:]), f.bo.Uint64(data[48:])
	if dataOff > uint64(len(data)) || dataSize > uint64(len(data))-dataOff {
		if dataOff <= uint64(len(data)) && dataSize == 0 {
			return nil, formatErr(40, "the data section is empty: perf record did not finish writing this file (killed before it exited?)")
		}
		return nil, formatErr(40, "data section [%d, +%d) past the end of the file (%d bytes): truncated", dataOff, dataSize, len(data))
	}
	f.recOff, f.recEnd = int(dataOff), int(dataOff+dataSize)
	if attrSize < 64+16 || attrSize > 4096 || attrsOff > uint64(len(data)) || attrsSize > uint64(len(data))-attrsOff {
		return nil, formatErr(16, "attribute section: size %d, [%d, +%d)", attrSize, attrsOff, attrsSize)
	}
	for off := attrsOff; off+attrSize <= attrsOff+attrsSize; off += attrSize {
		raw := data[off : off+attrSize]
		a, err := f.parseAttr(raw[:attrSize-16], int(off))
		if err != nil {
			return nil, err
		}
		idsOff, idsSize := f.bo.Uint64(raw[attrSize-16:]), f.bo.Uint64(raw[attrSize-8:])
		if idsOff > uint64(len(data)) || idsSize > uint64(len(data))-idsOff || idsSize%8 != 0 {
			return nil, formatErr(int(off), "attribute ids [%d, +%d) outside the file", idsOff, idsSize)
		}
		for i := uint64(0); i < idsSize; i += 8 {
			a.IDs = append(a.IDs, f.bo.Uint64(data[idsOff+i:]))
		}
		f.Attrs = append(f.Attrs, a)
	}
	if len(f.Attrs) == 0 {
		return nil, formatErr(24, "no event attributes")
	}
	// Feature sections: one perf_file_section each for the bits set in
	// the header's flags, in bit order, right after the data section.
	var feats [4]uint64
	for i := range feats {
		feats[i] = f.bo.Uint64(data[72+8*i:])
	}
	fsec := dataOff + dataSize
	n := 0
	for bit := 0; bit < maxFeatures; bit++ {
		if feats[bit/64]&(1<<(bit%64)) == 0 {
			continue
		}
		at := fsec + uint64(16*n)
		n++
		if at+16 > uint64(len(data)) {
			break // features cut off: the records may still be good
		}
		off, size := f.bo.Uint64(data[at:]), f.bo.Uint64(data[at+8:])
		if off > uint64(len(data)) || size > uint64(len(data))-off {
			continue
		}
		f.features[bit] = data[off : off+size]
	}
	if err := f.readFeatures(); err != nil {
		return nil, err
	}
	return f, f.finishAttrs()
}

func (f *File) parseAttr(b []byte, off int) (*Attr, error) {
	if len(b) < 64 {
		return nil, formatErr(off, "perf_event_attr of %d bytes", len(b))
	}
	bo := f.bo
	a := &Attr{
		Type:         bo.Uint32(b[0:]),
		Config:       bo.Uint64(b[8:]),
		SamplePeriod: bo.Uint64(b[16:]),
		SampleType:   bo.Uint64(b[24:]),
		ReadFormat:   bo.Uint64(b[32:]),
		Flags:        bo.Uint64(b[40:]),
	}
	if len(b) >= 80 {
		a.BranchSample = bo.Uint64(b[72:])
	}
	if len(b) >= 96 {
		a.SampleRegsUser = bo.Uint64(b[80:])
		a.SampleStackUser = bo.Uint32(b[88:])
	}
	if len(b) >= 104 {
		a.SampleRegsIntr = bo.Uint64(b[96:])
	}
	return a, nil
}

// finishAttrs indexes the attributes by id and works out where ids sit in
// records, as perf's evlist__id_pos and is_pos do.
func (f *File) finishAttrs() error {
	if len(f.Attrs) == 0 {
		return formatErr(0, "no event attributes")
	}
	for _, a := range f.Attrs {
		for _, id := range a.IDs {
			f.byID[id] = a
		}
	}
	a := f.Attrs[0]
	st := a.SampleType
	f.idPos, f.isPos = -1, -1
	switch {
	case st&sampleIdentifier != 0:
		f.idPos, f.isPos = 0, 1
	case st&sampleID != 0:
		pos := 0
		for _, b := range []uint64{sampleIP, sampleTID, sampleTime, sampleAddr} {
			if st&b != 0 {
				pos++
			}
		}
		f.idPos = pos
		pos = 1
		for _, b := range []uint64{sampleCPU, sampleStreamID} {
			if st&b != 0 {
				pos++
			}
		}
		f.isPos = pos
	}
	return nil
}

// scanPipeHeaders reads the attributes and features of a pipe-mode file,
// which come as records before (and among) the events.
func (f *File) scanPipeHeaders() error {
	for off := f.recOff; off+8 <= f.recEnd; {
		typ, size := f.bo.Uint32(f.data[off:]), int(f.bo.Uint16(f.data[off+6:]))
		if size < 8 || off+size > f.recEnd {
			break
		}
		body := f.data[off+8 : off+size]
		switch typ {
		case recHeaderAttr:
			if len(body) < 8 {
				return formatErr(off, "HEADER_ATTR record of %d bytes", size)
			}
			asize := int(f.bo.Uint32(body[4:]))
			if asize < 64 || asize > len(body) {
				return formatErr(off, "HEADER_ATTR with an attribute of %d bytes", asize)
			}
			a, err := f.parseAttr(body[:asize], off)
			if err != nil {
				return err
			}
			for i := asize; i+8 <= len(body); i += 8 {
				a.IDs = append(a.IDs, f.bo.Uint64(body[i:]))
			}
			f.Attrs = append(f.Attrs, a)
		case recHeaderFeature:
			if len(body) >= 8 {
				id := int(f.bo.Uint64(body))
				if id >= 0 && id < maxFeatures {
					f.features[id] = body[8:]
				}
			}
		case recHeaderTracing:
			// The tracing data follows the record, its size in the
			// record, padded to 8 bytes.
			if len(body) >= 4 {
				n := int(f.bo.Uint32(body))
				pad := (8 - n%8) % 8
				if off+size+n <= f.recEnd {
					f.features[featureTracingData] = f.data[off+size : off+size+n]
					off += n + pad
				}
			}
		case recHeaderBuildID:
			f.addBuildID(f.data[off:off+size], off)
		}
		off += size
	}
	return f.readFeatures()
}

// readFeatures parses the feature sections this reader uses.
func (f *File) readFeatures() error {
	if b, ok := f.features[featureEventDesc]; ok {
		f.readEventDesc(b)
	}
	for bit, dst := range map[int]*string{featureHostname: &f.Hostname, featureOSRelease: &f.OSRelease, featureVersion: &f.Version, featureArch: &f.Arch} {
		if b, ok := f.features[bit]; ok {
			*dst, _, _ = f.headerString(b)
		}
	}
	if b, ok := f.features[featureCmdline]; ok && len(b) >= 4 {
		n := int(f.bo.Uint32(b))
		b = b[4:]
		for i := 0; i < n && i < 4096; i++ {
			s, rest, ok := f.headerString(b)
			if !ok {
				break
			}
			f.Cmdline = append(f.Cmdline, s)
			b = rest
		}
	}
	if b, ok := f.features[featureBuildID]; ok {
		for off := 0; off+8 <= len(b); {
			size := int(f.bo.Uint16(b[off+6:]))
			if size < 8 || off+size > len(b) {
				break
			}
			f.addBuildID(b[off:off+size], off)
			off += size
		}
	}
	if _, ok := f.features[featureCompressed]; ok {
		f.Compressed = true
	}
	if b, ok := f.features[featureTracingData]; ok {
		if td, err := ParseTracingData(b); err == nil {
			f.Tracing = td
		}
	}
	return nil
}

// addBuildID reads a build_id_event: header, pid, 24 bytes of build-id
// (20 used, or the size in byte 20 when the header says so), file name.
func (f *File) addBuildID(rec []byte, off int) {
	if len(rec) < 8+4+24 {
		return
	}
	misc := f.bo.Uint16(rec[4:])
	id := rec[12 : 12+20]
	if misc&miscBuildIDSize != 0 {
		if n := int(rec[12+20]); n <= 20 {
			id = id[:n]
		}
	} else {
		// Older perf: 20 bytes, zero-padded for shorter ids.
		id = bytes.TrimRight(id, "\x00")
	}
	name := rec[12+24:]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	if len(name) == 0 || len(id) == 0 {
		return
	}
	f.BuildIDs[string(name)] = fmt.Sprintf("%x", id)
}

// headerString reads a perf_header_string: u32 length (with padding), then
// the NUL-terminated string.
func (f *File) headerString(b []byte) (string, []byte, bool) {
	if len(b) < 4 {
		return "", nil, false
	}
	n := int(f.bo.Uint32(b))
	if n < 0 || 4+n > len(b) {
		return "", nil, false
	}
	s := b[4 : 4+n]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	return string(s), b[4+n:], true
}

// readEventDesc names the attributes: u32 count, u32 attr size, then per
// event its attr, u32 number of ids, the name, the ids.
func (f *File) readEventDesc(b []byte) {
	if len(b) < 8 {
		return
	}
	n, asize := int(f.bo.Uint32(b)), int(f.bo.Uint32(b[4:]))
	b = b[8:]
	for i := 0; i < n && asize > 0 && len(b) >= asize+4; i++ {
		attr := b[:asize]
		nids := int(f.bo.Uint32(b[asize:]))
		b = b[asize+4:]
		name, rest, ok := f.headerString(b)
		if !ok || nids < 0 || nids > len(rest)/8 {
			return
		}
		var ids []uint64
		for k := 0; k < nids; k++ {
			ids = append(ids, f.bo.Uint64(rest[8*k:]))
		}
		b = rest[8*nids:]
		// Match by ids, else by position.
		var target *Attr
		for _, a := range f.Attrs {
			if len(ids) > 0 && len(a.IDs) > 0 && slices.Contains(a.IDs, ids[0]) {
				target = a
				break
			}
		}
		if target == nil && i < len(f.Attrs) {
			target = f.Attrs[i]
		}
		if target != nil && target.Name == "" {
			target.Name = name
		}
		_ = attr
	}
}

// record is one record of the data section.
type record struct {
	typ  uint32
	misc uint16
	body []byte // after the 8-byte header
	off  int    // file offset, for errors
}

// records calls fn for each record in file order. It stops at the first
// malformed record header with an error (records before it are kept).
func (f *File) records(fn func(r record) error) error {
	off := f.recOff
	for off < f.recEnd {
		if off+8 > f.recEnd {
			return formatErr(off, "record header cut off: the file is truncated")
		}
		typ := f.bo.Uint32(f.data[off:])
		misc := f.bo.Uint16(f.data[off+4:])
		size := int(f.bo.Uint16(f.data[off+6:]))
		if size < 8 {
			return formatErr(off, "record of %d bytes (type %d): the file is corrupt", size, typ)
		}
		if off+size > f.recEnd {
			return formatErr(off, "record of %d bytes (type %d) runs past the end of the data: the file is truncated", size, typ)
		}
		r := record{typ: typ, misc: misc, body: f.data[off+8 : off+size], off: off}
		if f.pipe && typ == recHeaderTracing && len(r.body) >= 4 {
			n := int(f.bo.Uint32(r.body))
			off += n + (8-n%8)%8
		}
		if err := fn(r); err != nil {
			return err
		}
		off += size
	}
	return nil
}

// recordAt decodes the record at file offset off, which records checked.
func (f *File) recordAt(off int) record {
	size := int(f.bo.Uint16(f.data[off+6:]))
	return record{typ: f.bo.Uint32(f.data[off:]), misc: f.bo.Uint16(f.data[off+4:]), body: f.data[off+8 : off+size], off: off}
}

// attrOf finds the attribute of a sample (id at idPos) or of a side-band
// record (id isPos words from its end).
func (f *File) attrOf(r record) *Attr {
	if len(f.Attrs) == 1 {
		return f.Attrs[0]
	}
	if r.typ == recSample {
		if f.idPos >= 0 && len(r.body) >= 8*(f.idPos+1) {
			if a := f.byID[f.bo.Uint64(r.body[8*f.idPos:])]; a != nil {
				return a
			}
		}
		return f.Attrs[0]
	}
	if f.isPos > 0 && len(r.body) >= 8*f.isPos {
		if a := f.byID[f.bo.Uint64(r.body[len(r.body)-8*f.isPos:])]; a != nil {
			return a
		}
	}
	return f.Attrs[0]
}

// sampleIDTrailer is the sample_id trailer of a side-band record.
type sampleIDTrailer struct {
	pid, tid int32
	time     uint64
	hasTime  bool
	cpu      uint32
}

// trailer reads the sample_id trailer of side-band record r (whose fixed
// part is fixed bytes).
func (f *File) trailer(r record, a *Attr) sampleIDTrailer {
	var s sampleIDTrailer
	s.pid, s.tid = -1, -1
	n := a.idTrailerSize()
	if n == 0 || len(r.body) < n {
		return s
	}
	b := r.body[len(r.body)-n:]
	st := a.SampleType
	if st&sampleTID != 0 {
		s.pid, s.tid = int32(f.bo.Uint32(b)), int32(f.bo.Uint32(b[4:]))
		b = b[8:]
	}
	if st&sampleTime != 0 {
		s.time, s.hasTime = f.bo.Uint64(b), true
		b = b[8:]
	}
	if st&sampleID != 0 {
		b = b[8:]
	}
	if st&sampleStreamID != 0 {
		b = b[8:]
	}
	if st&sampleCPU != 0 {
		s.cpu = f.bo.Uint32(b)
	}
	return s
}

// Sample is a parsed SAMPLE record; slices point into the file.
type Sample struct {
	Attr      *Attr
	Misc      uint16
	IP        uint64
	PID, TID  int32
	Time      uint64
	HasTime   bool
	CPU       uint32
	HasCPU    bool
	Period    uint64
	HasPeriod bool
	Callchain []byte // nr u64 words, in file byte order
	Raw       []byte
	StackUser int // bytes of user stack copied (DWARF unwinding), 0 none
}

// CallchainLen is the number of entries of the callchain.
func (s *Sample) CallchainLen() int { return len(s.Callchain) / 8 }

var errShort = errors.New("sample shorter than its sample_type says")

// parseSample decodes a SAMPLE record by its attribute's sample_type.
func (f *File) parseSample(r record, s *Sample) error {
	a := f.attrOf(r)
	*s = Sample{Attr: a, Misc: r.misc, PID: -1, TID: -1}
	b := r.body
	bo := f.bo
	st := a.SampleType
	u64 := func() (uint64, bool) {
		if len(b) < 8 {
			return 0, false
		}
		v := bo.Uint64(b)
		b = b[8:]
		return v, true
	}
	skip := func(n int) bool {
		if n < 0 || len(b) < n {
			return false
		}
		b = b[n:]
		return true
	}
	var ok bool
	if st&sampleIdentifier != 0 && !skip(8) {
		return errShort
	}
	if st&sampleIP != 0 {
		if s.IP, ok = u64(); !ok {
			return errShort
		}
	}
	if st&sampleTID != 0 {
		if len(b) < 8 {
			return errShort
		}
		s.PID, s.TID = int32(bo.Uint32(b)), int32(bo.Uint32(b[4:]))
		b = b[8:]
	}
	if st&sampleTime != 0 {
		if s.Time, ok = u64(); !ok {
			return errShort
		}
		s.HasTime = true
	}
	if st&sampleAddr != 0 && !skip(8) {
		return errShort
	}
	if st&sampleID != 0 && !skip(8) {
		return errShort
	}
	if st&sampleStreamID != 0 && !skip(8) {
		return errShort
	}
	if st&sampleCPU != 0 {
		if len(b) < 8 {
			return errShort
		}
		s.CPU, s.HasCPU = bo.Uint32(b), true
		b = b[8:]
	}
	if st&samplePeriod != 0 {
		if s.Period, ok = u64(); !ok {
			return errShort
		}
		s.HasPeriod = true
	} else if !a.Freq() {
		// A fixed period (perf record -c) is not sampled; perf takes the
		// attribute's.
		s.Period, s.HasPeriod = a.SamplePeriod, true
	}
	if st&sampleRead != 0 {
		rf := a.ReadFormat
		if rf&formatGroup != 0 {
			nr, ok := u64()
			if !ok || nr > uint64(len(b)) {
				return errShort
			}
			n := 0
			if rf&formatTotalEnabled != 0 {
				n++
			}
			if rf&formatTotalRunning != 0 {
				n++
			}
			per := 1
			if rf&formatID != 0 {
				per++
			}
			if rf&formatLost != 0 {
				per++
			}
			if !skip(8 * (n + per*int(nr))) {
				return errShort
			}
		} else {
			n := 1 + bits.OnesCount64(rf&(formatTotalEnabled|formatTotalRunning|formatID|formatLost))
			if !skip(8 * n) {
				return errShort
			}
		}
	}
	if st&sampleCallchain != 0 {
		nr, ok := u64()
		if !ok || nr > uint64(len(b))/8 {
			return errShort
		}
		s.Callchain = b[:8*nr]
		b = b[8*nr:]
	}
	if st&sampleRaw != 0 {
		if len(b) < 4 {
			return errShort
		}
		n := int(bo.Uint32(b))
		if n < 0 || 4+n > len(b) {
			return errShort
		}
		s.Raw = b[4 : 4+n]
		// The raw data is padded so that the u32 size plus it are a
		// multiple of 8.
		b = b[min(len(b), (4+n+7)&^7):]
	}
	if st&sampleBranchStack != 0 {
		nr, ok := u64()
		if !ok || nr > uint64(len(b)) {
			return errShort
		}
		if a.BranchSample&branchHWIndex != 0 && !skip(8) {
			return errShort
		}
		if !skip(24 * int(nr)) {
			return errShort
		}
	}
	if st&sampleRegsUser != 0 {
		abi, ok := u64()
		if !ok {
			return errShort
		}
		if abi != 0 && !skip(8*bits.OnesCount64(a.SampleRegsUser)) {
			return errShort
		}
	}
	if st&sampleStackUser != 0 {
		size, ok := u64()
		if !ok || size > uint64(len(b)) {
			return errShort
		}
		b = b[size:]
		if size != 0 {
			dyn, ok := u64()
			if !ok {
				return errShort
			}
			s.StackUser = int(min(dyn, size))
		}
	}
	return nil
}

// callchain returns entry i of s's callchain.
func (f *File) callchain(s *Sample, i int) uint64 { return f.bo.Uint64(s.Callchain[8*i:]) }

// cstring reads a NUL-terminated string.
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
