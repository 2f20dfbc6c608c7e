package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/flame"
	"github.com/profcap/profcap/formats"
	"github.com/profcap/profcap/internal/pprofutil"
	"github.com/profcap/profcap/internal/termsafe"
)

const flameUsage = `Usage: profcap flame [flags] INPUT...

Render profiles as flame graphs. An INPUT is a pprof file (.pb.gz or .pb),
folded stacks ("frame;frame;frame COUNT" lines: py-spy, rbspy, inferno,
stackcollapse), perf script text, samply's Firefox-profiler JSON, speedscope
JSON, any of them gzipped, - for standard input, or a bundle directory
written by 'profcap record'. The format is sniffed from the content unless
--input-format names it. Several inputs of the same kind are merged into
one flame graph.

A bundle gives one flame graph per kind (cpu, heap, ...). As html they are written
to one page with a section per kind; as svg, folded or speedscope -o names a
directory that receives KIND.svg, KIND.folded or KIND.speedscope.json.

Flags:
`

const flameExamples = `
Examples:
  # interactive flame graph of a Go CPU profile
  profcap flame -o cpu.html cpu.pb.gz

  # allocations, not live heap, with the hot allocators as roots
  profcap flame --sample-index alloc_space --reverse -o allocs.html heap.pb.gz

  # flamegraph.pl-style SVG from folded stacks (py-spy, rbspy, inferno ...)
  profcap flame -o out.svg stacks.folded

  # perf recording, merged with a second one, as folded stacks on stdout
  perf script > a.txt; profcap flame --format folded a.txt b.txt | less

  # every kind in a bundle, one tower per target, on one page
  profcap flame --group-by target -o bundle.html ./profcap-20260101-120000

  # open in speedscope
  profcap flame -o cpu.speedscope.json cpu.pb.gz

Output: -o FILE picks the format from its extension (.html, .svg, .folded,
.json) unless --format is given; without -o folded goes to stdout and the
others to flame.html, flame.svg or flame.speedscope.json; "-o -" is stdout.
Reading the graphs: docs/flame.md.
`

const diffUsage = `Usage: profcap diff [flags] BASE NEW

Differential flame graph: NEW's frames in NEW's shape, each coloured by how
much its share of the total (self value over total value) grew (red) or
shrank (blue) from BASE to NEW. Shares, not raw values, are compared, so
captures of different length or rate compare fairly. Tooltips show both
values and the change. Frames that exist only in BASE are not drawn; their
value shows as shrinkage of their nearest caller that NEW still has.

BASE and NEW are both profiles (any input 'profcap flame' reads) or both
bundles. For bundles there is one diff per kind both hold: one html page with
a section per kind, or with --format svg one DIR/KIND.svg each (-o DIR).

Flags:
`

const diffExamples = `
Examples:
  # did the change make encoding cheaper?
  profcap diff -o cpu-diff.html before/cpu.pb.gz after/cpu.pb.gz

  # two bundles, every kind they share, on one page
  profcap diff -o diff.html ./profcap-before ./profcap-after

  # static SVG of the allocation change
  profcap diff --sample-index alloc_space -o heap-diff.svg old-heap.pb.gz new-heap.pb.gz
`

// flameFlags are the flags flame and diff share.
type flameFlags struct {
	opt         flame.Options
	format      string
	output      string
	inputFormat string
	kinds       []string
}

func (f *flameFlags) register(fs *pflag.FlagSet, diff bool) {
	if diff {
		fs.StringVar(&f.format, "format", "", "output format: html or svg (default: from -o's extension, else html)")
	} else {
		fs.StringVar(&f.format, "format", "", "output format: html, svg, folded or speedscope (default: from -o's extension, else html)")
	}
	fs.StringVarP(&f.output, "output", "o", "", "output file, directory (several graphs, non-html) or - for stdout")
	fs.StringVar(&f.opt.Title, "title", "", "title shown above the flame graph")
	fs.StringVar(&f.opt.SampleIndex, "sample-index", "", "pprof sample type to show, e.g. alloc_space or inuse_space (default: the profile's default)")
	fs.BoolVar(&f.opt.Reverse, "reverse", false, "merge stacks by leaf: roots are the hot functions, children their callers")
	fs.BoolVar(&f.opt.Icicle, "icicle", false, "draw roots at the top (icicle flame graph)")
	fs.Float64Var(&f.opt.MinWidth, "minwidth", 0, "leave out frames narrower than this many pixels (default 1 in html, 0.1 in svg)")
	fs.StringVar(&f.opt.GroupBy, "group-by", "", "a root frame per value of this sample label; 'target' separates the targets of a bundle")
	fs.StringVar(&f.inputFormat, "input-format", "auto", "input format: auto, pprof, folded, perfscript, perfdata, firefox (samply) or speedscope")
	fs.StringSliceVar(&f.kinds, "kind", nil, "with bundles: only these kinds (comma-separated or repeated)")
}

// parseFlameFlags parses args; done is true when --help was printed.
func parseFlameFlags(name, usage, examples string, args []string, stdout io.Writer, diff bool) (f *flameFlags, fs *pflag.FlagSet, done bool, err error) {
	f = &flameFlags{}
	fs = pflag.NewFlagSet(name, pflag.ContinueOnError)
	f.register(fs, diff)
	if done, err := parseArgs(fs, args, stdout, func(w io.Writer) { fmt.Fprintf(w, "%s%s%s", usage, fs.FlagUsages(), examples) }); done || err != nil {
		return nil, nil, done, err
	}
	if f.opt.MinWidth < 0 {
		return nil, nil, false, usageError("%s: --minwidth must not be negative", name)
	}
	if f.opt.GroupBy != "" && strings.ContainsAny(f.opt.GroupBy, " ;=") {
		return nil, nil, false, usageError("%s: --group-by %q: want a label key such as target", name, f.opt.GroupBy)
	}
	return f, fs, false, nil
}

// outputFormat settles the format from --format or -o's extension.
func (f *flameFlags) outputFormat(name string, allowed []string) (string, error) {
	format := strings.ToLower(f.format)
	if format == "" {
		switch ext := strings.ToLower(filepath.Ext(f.output)); ext {
		case ".svg":
			format = "svg"
		case ".folded", ".collapsed", ".txt":
			format = "folded"
		case ".json":
			format = "speedscope"
		default:
			format = "html"
		}
		if !slices.Contains(allowed, format) {
			return "", usageError("%s: cannot write %s output (from -o %s); use --format %s", name, format, f.output, strings.Join(allowed, "|"))
		}
	}
	if !slices.Contains(allowed, format) {
		return "", usageError("%s: unknown --format %q (want %s)", name, f.format, strings.Join(allowed, ", "))
	}
	return format, nil
}

var flameExt = map[string]string{"html": ".html", "svg": ".svg", "folded": ".folded", "speedscope": ".speedscope.json"}

func runFlame(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, fs, done, err := parseFlameFlags("flame", flameUsage, flameExamples, args, stdout, false)
	if done || err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError("flame: no INPUT given")
	}
	format, err := f.outputFormat("flame", []string{"html", "svg", "folded", "speedscope"})
	if err != nil {
		return err
	}
	lo, err := loadOptions(f.inputFormat, f.kinds)
	if err != nil {
		return usageError("flame: %v", err)
	}
	sets, err := formats.LoadMerged(ctx, fs.Args(), lo)
	if err != nil {
		return fmt.Errorf("flame: %w", err)
	}
	var graphs []flame.Section
	for _, s := range sets {
		opt := f.opt
		if opt.Title == "" {
			opt.Title = s.Title()
		}
		t, err := buildFlameTree(s, opt, len(sets) > 1, stderr, func(o flame.Options) (*flame.Tree, error) { return flame.NewTree(s.Profile, o) })
		if err != nil {
			return fmt.Errorf("flame: %s: %w", s.Title(), err)
		}
		graphs = append(graphs, flame.Section{Name: string(s.Kind), Tree: t, Options: opt})
	}
	return writeFlameGraphs("flame", f, format, graphs, stdout, stderr)
}

func runDiff(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, fs, done, err := parseFlameFlags("diff", diffUsage, diffExamples, args, stdout, true)
	if done || err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usageError("diff: want BASE and NEW, got %d arguments", fs.NArg())
	}
	format, err := f.outputFormat("diff", []string{"html", "svg"})
	if err != nil {
		return err
	}
	lo, err := loadOptions(f.inputFormat, f.kinds)
	if err != nil {
		return usageError("diff: %v", err)
	}
	base, err := formats.LoadMerged(ctx, fs.Args()[:1], lo)
	if err != nil {
		return fmt.Errorf("diff: base: %w", err)
	}
	cur, err := formats.LoadMerged(ctx, fs.Args()[1:], lo)
	if err != nil {
		return fmt.Errorf("diff: new: %w", err)
	}
	if base[0].Bundles != cur[0].Bundles {
		return usageError("diff: BASE and NEW must both be bundles or both be profiles")
	}
	baseName, newName := inputName(fs.Arg(0)), inputName(fs.Arg(1))
	if base[0].Bundles {
		warnTargets(stderr, fs.Arg(0), fs.Arg(1))
	}
	if f.output == "" {
		// Named after the two inputs, not flame.html: a second diff in the
		// same directory does not overwrite the first.
		f.output = "diff-" + flameFileName(baseName) + "-vs-" + flameFileName(newName) + flameExt[format]
	}
	var graphs []flame.Section
	for _, c := range cur {
		i := slices.IndexFunc(base, func(b formats.Set) bool { return b.Kind == c.Kind })
		if i < 0 {
			fmt.Fprintf(stderr, "profcap diff: %s: only in NEW, skipped\n", c.Kind)
			continue
		}
		b := base[i]
		opt := f.opt
		if opt.Title == "" {
			opt.Title = "diff " + baseName + " → " + newName
			if c.Bundles {
				opt.Title = string(c.Kind) + ": " + baseName + " → " + newName
			}
		}
		t, err := buildFlameTree(c, opt, len(cur) > 1, stderr, func(o flame.Options) (*flame.Tree, error) { return flame.NewDiffTree(b.Profile, c.Profile, o) })
		if err != nil {
			return fmt.Errorf("diff: %s: %w", c.Title(), err)
		}
		graphs = append(graphs, flame.Section{Name: string(c.Kind), Tree: t, Options: opt})
	}
	for _, b := range base {
		if !slices.ContainsFunc(cur, func(c formats.Set) bool { return c.Kind == b.Kind }) {
			fmt.Fprintf(stderr, "profcap diff: %s: only in BASE, skipped\n", b.Kind)
		}
	}
	if len(graphs) == 0 {
		return fmt.Errorf("diff: BASE and NEW share no kind of profile")
	}
	if f.opt.Title == "" && len(graphs) > 1 {
		f.opt.Title = "profcap diff: " + baseName + " → " + newName
	}
	return writeFlameGraphs("diff", f, format, graphs, stdout, stderr)
}

// buildFlameTree builds a tree; with several kinds, a --sample-index that one kind
// lacks falls back to that kind's default instead of failing the rest.
func buildFlameTree(s formats.Set, opt flame.Options, several bool, stderr io.Writer, build func(flame.Options) (*flame.Tree, error)) (*flame.Tree, error) {
	if several && opt.SampleIndex != "" && len(s.Profile.SampleType) > 0 {
		if _, err := pprofutil.SampleIndex(s.Profile, opt.SampleIndex); err != nil {
			fmt.Fprintf(stderr, "profcap: %s: %v; showing its default\n", s.Kind, err)
			opt.SampleIndex = ""
		}
	}
	t, err := build(opt)
	if err == nil && t.PrunedBelow > 0 {
		fmt.Fprintf(stderr, "profcap: %s: frames under %.3g%% of the total are folded into their callers to bound memory (%d frames kept); for every frame, convert --to folded\n",
			termsafe.String(s.Title()), t.PrunedBelow*100, t.Nodes)
	}
	return t, err
}

// loadOptions maps the input flags onto the loader's options.
func loadOptions(inputFormat string, kinds []string) (formats.LoadOptions, error) {
	inf, err := formats.ParseFormat(inputFormat)
	if err != nil {
		return formats.LoadOptions{}, err
	}
	opt := formats.LoadOptions{Format: inf}
	if opt.Kinds, err = parseKinds("--kind", kinds); err != nil {
		return formats.LoadOptions{}, err
	}
	return opt, nil
}

// writeFlameGraphs writes one flame graph to a file or stdout, or several: html as one
// page, other formats as one file each in the -o directory.
func writeFlameGraphs(name string, f *flameFlags, format string, graphs []flame.Section, stdout, stderr io.Writer) (err error) {
	write := map[string]func(io.Writer, *flame.Tree, flame.Options) error{
		"html": flame.WriteHTML, "svg": flame.WriteSVG, "folded": flame.WriteFolded, "speedscope": flame.WriteSpeedscope,
	}[format]
	out := f.output
	if len(graphs) == 1 || format == "html" {
		if out == "" {
			out = "-"
			if format != "folded" {
				out = "flame" + flameExt[format]
			}
		}
		return writeFlameOutput(out, stdout, stderr, func(w io.Writer) error {
			if len(graphs) == 1 {
				return write(w, graphs[0].Tree, graphs[0].Options)
			}
			title := f.opt.Title
			if title == "" {
				title = "profcap flame graphs: " + flameKinds(graphs)
			}
			return flame.WriteHTMLPage(w, title, graphs)
		})
	}
	if out == "" || out == "-" {
		return usageError("%s: %d graphs (%s) as %s need -o DIR", name, len(graphs), flameKinds(graphs), format)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, g := range graphs {
		path := filepath.Join(out, flameFileName(g.Name)+flameExt[format])
		if err := writeFlameOutput(path, stdout, stderr, func(w io.Writer) error { return write(w, g.Tree, g.Options) }); err != nil {
			return err
		}
	}
	return nil
}

func flameKinds(graphs []flame.Section) string {
	var ks []string
	for _, g := range graphs {
		ks = append(ks, g.Name)
	}
	return strings.Join(ks, ", ")
}

// flameFileName keeps a kind usable as a file name.
func flameFileName(kind string) string {
	s := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == 0 || r == ':' {
			return '_'
		}
		return r
	}, kind)
	if s == "" || s == "." || s == ".." {
		s = "profile"
	}
	return s
}

// writeFlameOutput writes to path ("-" is stdout) through a buffer, reporting the
// file on stderr.
func writeFlameOutput(path string, stdout, stderr io.Writer, fn func(io.Writer) error) error {
	if path == "-" {
		bw := bufio.NewWriterSize(stdout, 256<<10)
		if err := fn(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(fh, 256<<10)
	if err := fn(bw); err != nil {
		fh.Close()
		os.Remove(path)
		return err
	}
	if err := bw.Flush(); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s\n", path)
	return nil
}

// inputName is an input as titles and file names say it: a bundle's or a
// file's base name.
func inputName(in string) string {
	if in == "-" {
		return "stdin"
	}
	n := filepath.Base(filepath.Clean(in))
	for _, ext := range []string{".gz", ".pb", ".json", ".folded", ".txt"} {
		n = strings.TrimSuffix(n, ext)
	}
	return n
}

// warnTargets says on stderr when two bundles were captured from different
// targets: their diff then compares different clusters (shares are of each
// bundle's whole).
func warnTargets(stderr io.Writer, a, b string) {
	ma, err1 := bundle.Read(a)
	mb, err2 := bundle.Read(b)
	if err1 != nil || err2 != nil {
		return
	}
	names := func(m *bundle.Manifest) map[string]bool {
		out := map[string]bool{}
		for _, t := range m.Targets {
			out[t.Name] = true
		}
		return out
	}
	na, nb := names(ma), names(mb)
	var onlyA, onlyB []string
	for n := range na {
		if !nb[n] {
			onlyA = append(onlyA, n)
		}
	}
	for n := range nb {
		if !na[n] {
			onlyB = append(onlyB, n)
		}
	}
	if len(onlyA) == 0 && len(onlyB) == 0 {
		return
	}
	slices.Sort(onlyA)
	slices.Sort(onlyB)
	msg := "profcap diff: warning: the bundles were captured from different targets"
	if len(onlyA) > 0 {
		msg += "; only in BASE: " + strings.Join(onlyA, ", ")
	}
	if len(onlyB) > 0 {
		msg += "; only in NEW: " + strings.Join(onlyB, ", ")
	}
	fmt.Fprintln(stderr, termsafe.String(msg+" (each share is of its whole bundle)"))
}
