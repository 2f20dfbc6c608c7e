// Package firefox reads the processed Firefox Profiler format: the JSON that
// `samply record` writes (plain, or gzipped: recognised by its magic) and
// that profiler.firefox.com loads. Every thread becomes samples of one
// *profile.Profile, labelled with the thread and process.
//
// The format changed between versions 41 and 70 (firefox-devtools/profiler
// src/profile-logic/processed-profile-versioning.js at df31314e). The reader
// detects each change by its feature, never by the version number:
//
//   - stringArray per thread (up to v55) or in profile.shared (v56+);
//   - stackTable, frameTable, funcTable, resourceTable and nativeSymbols per
//     thread (up to v59) or in profile.shared (v60+);
//   - stackTable.prefix (parent index or null) or stackTable.prefixOffset
//     (0 for a root, else parent = index − offset; v66+);
//   - samples.time (ms) or samples.timeDeltas (v50+; cumulative);
//   - the library of a frame from resourceTable.lib or frameTable.lib (v70).
//
// The JSON is read as a token stream: tables are kept as compact columns,
// samples are summed per stack as they arrive, and only the stack column of
// the thread being read is buffered (4 bytes a sample, at most
// MaxSamplesPerThread), so memory does not grow with the length of a
// recording beyond one thread's stack column.
//
// columns.go reads the tables, samples.go streams each thread's samples,
// build.go turns what they kept into the pprof profile.
package firefox

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/pprof/profile"
	"github.com/profcap/profcap/formats/internal/jsonutil"
)

// Lib is one entry of the profile's libs list.
type Lib struct {
	Name       string `json:"name"`
	Path       string `json:"path"`
	DebugName  string `json:"debugName"`
	DebugPath  string `json:"debugPath"`
	BreakpadID string `json:"breakpadId"`
	CodeID     string `json:"codeId"` // the ELF GNU build-id in hex (Linux), or the Mach-O UUID
	Arch       string `json:"arch"`
}

// Options control Parse. The zero value is usable.
type Options struct {
	// Symbolize names a frame the file leaves unsymbolicated (its function
	// name is "0x…"): addr is relative to the library, as samply stores it.
	// It returns false when it cannot; the frame is then named
	// "LIB+0xADDR".
	Symbolize func(lib Lib, addr uint64) (name string, ok bool)
	// MaxSamplesPerThread bounds one thread's sample count (and any table's
	// row count); 0 means DefaultMaxSamples.
	MaxSamplesPerThread int
	// MaxFrames bounds the frames of all distinct sampled stacks together
	// (what the pprof profile holds); 0 means DefaultMaxFrames.
	MaxFrames int
}

// DefaultMaxFrames is 64 Mi frame references (512 MiB of pointers): far
// above real recordings (100,000 distinct stacks of depth 100 are 10 Mi),
// low enough that a hostile file of deep chains fails instead of eating the
// machine.
const DefaultMaxFrames = 1 << 26

// MaxDepth is the deepest stack read. Deeper chains are an error: real
// stacks stop well before (thread stacks are finite), hostile ones would
// make every sample cost its depth.
const MaxDepth = 1 << 13

// DefaultMaxSamples is 16 Mi samples: 4.6 hours of one thread at samply's
// default 1 kHz, a 64 MiB stack column while the thread is read.
const DefaultMaxSamples = 1 << 24

// FormatError is a problem with the content of the file, with the byte
// offset where it was found and the JSON path it concerns.
type FormatError = jsonutil.FormatError

// formatName starts every error message of this reader.
const formatName = "firefox profile"

// ParseFile reads the processed profile in path (gzipped or not).
func ParseFile(name string, opt Options) (*profile.Profile, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := Parse(f, opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// Parse reads a processed Firefox Profiler profile from r. Gzipped input is
// recognised by its magic bytes.
func Parse(r io.Reader, opt Options) (*profile.Profile, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if head, _ := br.Peek(2); bytes.Equal(head, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("firefox profile: reading gzip: %w", err)
		}
		defer zr.Close()
		r = &gzipReader{zr}
	} else {
		r = br
	}
	if opt.MaxSamplesPerThread <= 0 {
		opt.MaxSamplesPerThread = DefaultMaxSamples
	}
	if opt.MaxFrames <= 0 {
		opt.MaxFrames = DefaultMaxFrames
	}
	p := &parser{Walker: newWalker(r), opt: opt}
	if err := p.top(); err != nil {
		var fe *FormatError
		if errors.As(err, &fe) {
			return nil, err
		}
		var ge *gzipError
		if errors.As(err, &ge) {
			return nil, fmt.Errorf("firefox profile: reading gzip after byte %d: %w", p.D.InputOffset(), ge.err)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, &FormatError{Format: formatName, Offset: p.D.InputOffset(), Path: p.Path, Msg: "input ends early (truncated file?)"}
		}
		var se *jsontext.SyntacticError
		if errors.As(err, &se) {
			return nil, &FormatError{Format: formatName, Offset: se.ByteOffset, Path: p.Path, Msg: "invalid JSON: " + se.Err.Error()}
		}
		return nil, fmt.Errorf("firefox profile: %w", err)
	}
	return p.build()
}

// gzipReader marks decompression errors so they are not taken for
// truncated JSON.
type gzipReader struct{ r io.Reader }

type gzipError struct{ err error }

func (e *gzipError) Error() string { return e.err.Error() }

func (g *gzipReader) Read(b []byte) (int, error) {
	n, err := g.r.Read(b)
	if err != nil && err != io.EOF {
		err = &gzipError{err}
	}
	return n, err
}
