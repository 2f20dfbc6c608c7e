package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"unicode/utf8"

	"github.com/spf13/pflag"

	"github.com/profcap/profcap/formats/perfdata"
	"github.com/profcap/profcap/formats/perfscript"
)

const collapseExamples = `
Examples:
  # fold a perf recording for flamegraph.pl, inferno or 'profcap flame'
  perf record -F 99 -g -p 1234 -- sleep 10
  perf script | profcap collapse > out.folded

  # one tower per thread, with kernel frames marked _[k]
  perf script -F comm,pid,tid,time,period,event,ip,sym,dso | profcap collapse --tid --kernel

  # only the cycles samples of a recording with several events
  profcap collapse --event-filter cycles perf.txt

  # perf.data itself, without perf script (several times faster)
  profcap collapse perf.data > out.folded

The output is byte-identical to FlameGraph's stackcollapse-perf.pl with the
same options: "comm;root;...;leaf COUNT" lines sorted bytewise, COUNT being
the sum of the samples' periods (1 when perf printed none). Lines it cannot
read are reported on stderr with their line number and skipped, as the Perl
script does; --strict makes them an error.

A perf.data file (recognised by its PERFILE2 magic) is read directly and
folds to what 'perf script | profcap collapse' gives; with --pid or --tid
its pids are real (as with perf script -F +pid). Recordings with DWARF
stacks (--call-graph dwarf) or compressed records (-z) are handed to perf
script, with a note on stderr.
`

func runCollapse(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("collapse", pflag.ContinueOnError)
	var opt perfscript.CollapseOptions
	fs.BoolVar(&opt.PID, "pid", false, "append the PID to the process name (comm-PID)")
	fs.BoolVar(&opt.TID, "tid", false, "append PID and TID to the process name (comm-PID/TID)")
	fs.BoolVar(&opt.Kernel, "kernel", false, "annotate kernel frames with _[k]")
	fs.BoolVar(&opt.JIT, "jit", false, "annotate JIT frames (/tmp/perf-PID.map) with _[j]")
	fs.BoolVar(&opt.All, "all", false, "all annotations (--kernel --jit)")
	fs.BoolVar(&opt.Addrs, "addrs", false, "include raw addresses where a symbol is unknown")
	fs.StringVar(&opt.EventFilter, "event-filter", "", "keep only events of this type (default: the first type seen)")
	fs.BoolVar(&opt.Strict, "strict", false, "fail on a line that is not perf script text instead of skipping it")
	if done, err := parseArgs(fs, args, stdout, func(w io.Writer) {
		fmt.Fprintf(w, "Usage: profcap collapse [flags] [FILE|-]\n\nFold perf script text into stacks, one line per stack.\n\nFlags:\n%s%s", fs.FlagUsages(), collapseExamples)
	}); done || err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usageError("collapse: at most one input file, got %d", fs.NArg())
	}
	var in io.Reader = os.Stdin
	name := "standard input"
	path := ""
	if fs.NArg() == 1 && fs.Arg(0) != "-" {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return fmt.Errorf("collapse: %w", err)
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.IsDir() {
			return fmt.Errorf("collapse: %s is a directory, not perf script text or perf.data", fs.Arg(0))
		}
		in, name, path = f, fs.Arg(0), fs.Arg(0)
	}
	warn := &prefixWriter{prefix: "profcap collapse: " + name + ": ", w: stderr}
	br := bufio.NewReaderSize(&ctxReader{ctx: ctx, r: in}, 256<<10)
	head, _ := br.Peek(4096)
	bw := bufio.NewWriterSize(stdout, 256<<10)
	if perfdata.IsPerfData(head) {
		// Symbol tables are most of what reading perf.data allocates,
		// and all of it lives to the end: collect garbage less often.
		debug.SetGCPercent(400)
		popt := perfdata.Options{Context: ctx, Notes: func(n string) { fmt.Fprintln(warn, n) }}
		var err error
		if path != "" {
			err = perfdata.CollapseFile(path, bw, opt, popt)
		} else {
			err = perfdata.Collapse(br, bw, opt, popt)
		}
		if err != nil {
			return fmt.Errorf("collapse %s: %w", name, err)
		}
		return bw.Flush()
	}
	if why := binaryInput(head); why != "" {
		return fmt.Errorf("collapse %s: %w: %s; give the text of perf script, or a perf.data file", name, errNotPerfText, why)
	}
	opt.Warn = warn
	// The collapser's caches are most of what it allocates, and they live
	// to the end: collect garbage less often (a tenth of the CPU time on a
	// 60 MB C++ input; the heap stays a few tens of MB).
	debug.SetGCPercent(400)
	var err error
	if path != "" {
		// A file is mapped, not read: CollapseFile folds its pages in place.
		err = perfscript.CollapseFile(ctx, path, bw, opt)
	} else {
		err = perfscript.Collapse(br, bw, opt)
	}
	if err != nil {
		return fmt.Errorf("collapse %s: %w", name, err)
	}
	return bw.Flush()
}

var errNotPerfText = errors.New("not perf script text")

// binaryInput says why head is not text ("" when it is): perf script
// prints text, so NUL bytes or invalid UTF-8 mean another file (a pprof
// profile, an archive, an executable) was given.
func binaryInput(head []byte) string {
	if len(head) == 0 {
		return ""
	}
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return "it is gzip-compressed (decompress it first; a pprof profile goes to profcap flame or convert)"
	case bytes.HasPrefix(head, []byte("\x7fELF")):
		return "it is an ELF file (an executable or library)"
	case bytes.IndexByte(head, 0) >= 0:
		return "it holds NUL bytes, so it is binary data"
	}
	b := head
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n <= 1 {
			if len(b) < utf8.UTFMax && !utf8.FullRune(b) {
				break // cut at the end of the head
			}
			return "it is not UTF-8 text"
		}
		b = b[n:]
	}
	return ""
}

// ctxReader stops reading once ctx is done (Ctrl-C on a long input).
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

// prefixWriter prefixes each write (one warning line) with a fixed string.
type prefixWriter struct {
	prefix string
	w      io.Writer
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix); err != nil {
		return 0, err
	}
	return p.w.Write(b)
}
