package perfscript

// Mapped input: profcap collapse FILE folds the file's pages in place.

import (
	"context"
	"errors"
	"io"
	"os"
	"runtime/debug"
)

// CollapseFile is Collapse of the file at path. A regular file is mapped
// into memory rather than read: the segments the workers fold are slices of
// the mapping and the event cache keeps slices of it too, so the input is
// never copied (reading it through read(2) was a third of the time of
// `profcap collapse` on a 60 MB input whose events repeat). Anything else (a
// pipe, a file that cannot be mapped) is read as Collapse reads. ctx is
// checked between segments.
//
// A file that shrinks while it is folded would fault on the missing pages;
// the fault is caught and returned as an error naming the file.
func CollapseFile(ctx context.Context, path string, w io.Writer, opt CollapseOptions) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if !st.Mode().IsRegular() || size == 0 || size != int64(int(size)) {
		return Collapse(&ctxReader{ctx: ctx, r: f}, w, opt)
	}
	data, unmap, err := mapFile(f, int(size))
	if err != nil {
		return Collapse(&ctxReader{ctx: ctx, r: f}, w, opt)
	}
	defer unmap()
	return collapseBytes(ctx, data, w, opt, foldConfig{workers: collapseWorkers(), segSize: segSize, maxSeg: maxSeg, warmup: warmup})
}

// collapseBytes folds data, which must not change until it returns.
func collapseBytes(ctx context.Context, data []byte, w io.Writer, opt CollapseOptions, cfg foldConfig) (err error) {
	if len(data) == 0 {
		data = []byte{}
	}
	cfg.mapped = true
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if !isFault(r) {
				panic(r)
			}
			err = errShrank
		}
	}()
	return collapseCut(&cutter{whole: data, ctx: ctx}, w, opt, cfg)
}

var errShrank = errors.New("the file changed while it was read (it was truncated?)")

// isFault: r is the panic of a memory fault (debug.SetPanicOnFault).
func isFault(r any) bool {
	_, ok := r.(interface{ Addr() uintptr })
	return ok
}

// foldSegment folds seg; on mapped input a memory fault (the file shrank
// under the mapping) ends the segment with errShrank.
func (f *folder) foldSegment(seg *segment, mapped bool) {
	if mapped {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() {
			if r := recover(); r != nil {
				if !isFault(r) {
					panic(r)
				}
				seg.err = errShrank
			}
		}()
	}
	f.segment(seg)
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
