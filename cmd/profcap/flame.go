package main

import (
	"bufio"
	"context"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/pprof/profile"
	"github.com/spf13/pflag"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/flame"
	"github.com/profcap/profcap/formats"
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
	fs.StringVar(&f.inputFormat, "input-format", "auto", "input format: auto, pprof, folded, perfscript, firefox (samply) or speedscope")
	fs.StringSliceVar(&f.kinds, "kind", nil, "with bundles: only these kinds (comma-separated or repeated)")
}

// parseFlameFlags parses args; done is true when --help was printed.
func parseFlameFlags(name, usage, examples string, args []string, stdout, stderr io.Writer, diff bool) (f *flameFlags, fs *pflag.FlagSet, done bool, err error) {
	f = &flameFlags{}
	fs = pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
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

// flameGraph is one tree to write, named by its kind when it came from a bundle.
type flameGraph struct {
	kind string
	tree *flame.Tree
	opt  flame.Options
}

func runFlame(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, fs, done, err := parseFlameFlags("flame", flameUsage, flameExamples, args, stdout, stderr, false)
	if done || err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return usageError("flame: no INPUT given")
	}
	format, err := f.outputFormat("flame", []string{"html", "svg", "folded", "speedscope"})
	if err != nil {
		return err
	}
	inf, err := formats.ParseFormat(f.inputFormat)
	if err != nil {
		return usageError("flame: %v", err)
	}
	sets, err := loadFlameInputs(ctx, fs.Args(), inf, f.kinds)
	if err != nil {
		return fmt.Errorf("flame: %w", err)
	}
	var graphs []flameGraph
	for _, s := range sets {
		opt := f.opt
		if opt.Title == "" {
			opt.Title = s.title
		}
		t, err := buildFlameTree(s, opt, len(sets) > 1, stderr, func(o flame.Options) (*flame.Tree, error) { return flame.NewTree(s.prof, o) })
		if err != nil {
			return fmt.Errorf("flame: %s: %w", s.title, err)
		}
		graphs = append(graphs, flameGraph{kind: s.kind, tree: t, opt: opt})
	}
	return writeFlameGraphs("flame", f, format, graphs, stdout, stderr)
}

func runDiff(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, fs, done, err := parseFlameFlags("diff", diffUsage, diffExamples, args, stdout, stderr, true)
	if done || err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return usageError("diff: want BASE and NEW, got %d arguments", fs.NArg())
	}
	format, err := f.outputFormat("diff", []string{"html", "svg"})
	if err != nil {
		return err
	}
	inf, err := formats.ParseFormat(f.inputFormat)
	if err != nil {
		return usageError("diff: %v", err)
	}
	base, err := loadFlameInputs(ctx, fs.Args()[:1], inf, f.kinds)
	if err != nil {
		return fmt.Errorf("diff: base: %w", err)
	}
	cur, err := loadFlameInputs(ctx, fs.Args()[1:], inf, f.kinds)
	if err != nil {
		return fmt.Errorf("diff: new: %w", err)
	}
	if base[0].bundle != cur[0].bundle {
		return usageError("diff: BASE and NEW must both be bundles or both be profiles")
	}
	var graphs []flameGraph
	for _, c := range cur {
		i := slices.IndexFunc(base, func(b flameInput) bool { return b.kind == c.kind })
		if i < 0 {
			fmt.Fprintf(stderr, "profcap diff: %s: only in NEW, skipped\n", c.kind)
			continue
		}
		b := base[i]
		opt := f.opt
		if opt.Title == "" {
			opt.Title = "diff " + b.title + " → " + c.title
		}
		t, err := buildFlameTree(c, opt, len(cur) > 1, stderr, func(o flame.Options) (*flame.Tree, error) { return flame.NewDiffTree(b.prof, c.prof, o) })
		if err != nil {
			return fmt.Errorf("diff: %s: %w", c.title, err)
		}
		graphs = append(graphs, flameGraph{kind: c.kind, tree: t, opt: opt})
	}
	for _, b := range base {
		if !slices.ContainsFunc(cur, func(c flameInput) bool { return c.kind == b.kind }) {
			fmt.Fprintf(stderr, "profcap diff: %s: only in BASE, skipped\n", b.kind)
		}
	}
	if len(graphs) == 0 {
		return fmt.Errorf("diff: BASE and NEW share no kind of profile")
	}
	return writeFlameGraphs("diff", f, format, graphs, stdout, stderr)
}

// buildFlameTree builds a tree; with several kinds, a --sample-index that one kind
// lacks falls back to that kind's default instead of failing the rest.
func buildFlameTree(s flameInput, opt flame.Options, several bool, stderr io.Writer, build func(flame.Options) (*flame.Tree, error)) (*flame.Tree, error) {
	t, err := build(opt)
	if err != nil && several && opt.SampleIndex != "" && strings.Contains(err.Error(), "sample index") {
		fmt.Fprintf(stderr, "profcap: %s: %v; showing its default\n", s.kind, err)
		opt.SampleIndex = ""
		t, err = build(opt)
	}
	return t, err
}

// flameInput is one merged profile: all file inputs, or one kind of the bundles.
type flameInput struct {
	kind   string // "" for file inputs
	title  string
	prof   *profile.Profile
	bundle bool
}

// loadFlameInputs reads the inputs: either files (merged into one profile) or
// bundle directories (merged per kind). Mixing them is an error.
func loadFlameInputs(ctx context.Context, inputs []string, inf formats.Format, kinds []string) ([]flameInput, error) {
	var files, bundles []string
	for _, in := range inputs {
		if in == "-" {
			files = append(files, in) // standard input
			continue
		}
		st, err := os.Stat(in)
		if err != nil {
			return nil, err
		}
		switch {
		case st.IsDir() && bundle.IsBundle(in):
			bundles = append(bundles, in)
		case st.IsDir():
			return nil, fmt.Errorf("%s is a directory but not a profcap bundle (no %s)", in, bundle.ManifestFile)
		default:
			files = append(files, in)
		}
	}
	if len(files) > 0 && len(bundles) > 0 {
		return nil, usageError("give either profile files or bundle directories, not both")
	}
	if len(kinds) > 0 && len(bundles) == 0 {
		return nil, usageError("--kind only applies to bundle inputs")
	}
	if len(files) > 0 {
		var ps []*profile.Profile
		for _, fn := range files {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			var p *profile.Profile
			var err error
			if fn == "-" {
				if p, err = formats.Read(os.Stdin, inf); err != nil {
					err = fmt.Errorf("standard input: %w", err)
				}
			} else {
				p, err = formats.ReadFile(fn, inf)
			}
			if err != nil {
				return nil, err
			}
			ps = append(ps, p)
		}
		p, err := mergeProfiles(ps, files)
		if err != nil {
			return nil, err
		}
		title := filepath.Base(files[0])
		if len(files) > 1 {
			title += fmt.Sprintf(" and %d more", len(files)-1)
		}
		return []flameInput{{title: title, prof: p}}, nil
	}
	var order []string
	byKind := map[string][]*profile.Profile{}
	from := map[string][]string{}
	for _, dir := range bundles {
		m, err := bundle.Read(dir)
		if err != nil {
			return nil, err
		}
		for _, mg := range m.Merged {
			if len(kinds) > 0 && !slices.Contains(kinds, string(mg.Kind)) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			p, err := bundle.LoadProfile(dir, mg.Path)
			if err != nil {
				return nil, err
			}
			k := string(mg.Kind)
			if _, ok := byKind[k]; !ok {
				order = append(order, k)
			}
			byKind[k] = append(byKind[k], p)
			from[k] = append(from[k], filepath.Join(dir, mg.Path))
		}
	}
	if len(order) == 0 {
		if len(kinds) > 0 {
			return nil, fmt.Errorf("%s: no merged profile of kind %s", strings.Join(bundles, ", "), strings.Join(kinds, ", "))
		}
		return nil, fmt.Errorf("%s: bundle holds no merged profiles", strings.Join(bundles, ", "))
	}
	var sets []flameInput
	for _, k := range order {
		p, err := mergeProfiles(byKind[k], from[k])
		if err != nil {
			return nil, err
		}
		title := k + " — " + filepath.Base(filepath.Clean(bundles[0]))
		if len(bundles) > 1 {
			title += fmt.Sprintf(" and %d more", len(bundles)-1)
		}
		sets = append(sets, flameInput{kind: k, title: title, prof: p, bundle: true})
	}
	return sets, nil
}

func mergeProfiles(ps []*profile.Profile, names []string) (*profile.Profile, error) {
	if len(ps) == 1 {
		return ps[0], nil
	}
	for i, p := range ps[1:] {
		if !sameSampleTypes(ps[0], p) {
			return nil, fmt.Errorf("cannot merge %s (%s) with %s (%s): different sample types", names[0], sampleTypesOf(ps[0]), names[i+1], sampleTypesOf(p))
		}
		// Merge wants equal period types; folded and perf inputs may differ
		// only in what they call the period.
		if p.PeriodType == nil || ps[0].PeriodType == nil || *p.PeriodType != *ps[0].PeriodType {
			p.PeriodType, p.Period = ps[0].PeriodType, ps[0].Period
		}
	}
	p, err := profile.Merge(ps)
	if err != nil {
		return nil, fmt.Errorf("merging %s: %w", strings.Join(names, ", "), err)
	}
	return p, nil
}

func sameSampleTypes(a, b *profile.Profile) bool {
	return sampleTypesOf(a) == sampleTypesOf(b)
}

func sampleTypesOf(p *profile.Profile) string {
	var s []string
	for _, st := range p.SampleType {
		s = append(s, st.Type+"/"+st.Unit)
	}
	return strings.Join(s, ",")
}

var flamePageTmpl = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>{{.Title}}</title>
{{.Head}}<style>body{margin:8px 12px;font-family:system-ui,sans-serif}nav a{margin-right:1em}</style>
</head>
<body>
<h1 style="font-size:18px">{{.Title}}</h1>
<nav>{{range .Graphs}}<a href="#{{.ID}}-sec">{{.Kind}}</a>{{end}}</nav>
{{range .Graphs}}<section id="{{.ID}}-sec"><h2 style="font-size:16px">{{.Kind}}</h2>
{{.HTML}}</section>
{{end}}</body>
</html>
`))

// writeFlameGraphs writes one flame graph to a file or stdout, or several: html as one
// page, other formats as one file each in the -o directory.
func writeFlameGraphs(name string, f *flameFlags, format string, graphs []flameGraph, stdout, stderr io.Writer) (err error) {
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
				return write(w, graphs[0].tree, graphs[0].opt)
			}
			return writeFlamePage(w, f, graphs)
		})
	}
	if out == "" || out == "-" {
		return usageError("%s: %d graphs (%s) as %s need -o DIR", name, len(graphs), flameKinds(graphs), format)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, g := range graphs {
		path := filepath.Join(out, flameFileName(g.kind)+flameExt[format])
		if err := writeFlameOutput(path, stdout, stderr, func(w io.Writer) error { return write(w, g.tree, g.opt) }); err != nil {
			return err
		}
	}
	return nil
}

func writeFlamePage(w io.Writer, f *flameFlags, graphs []flameGraph) error {
	type sec struct {
		ID, Kind string
		HTML     template.HTML
	}
	var secs []sec
	for i, g := range graphs {
		id := fmt.Sprintf("g%d", i)
		h, err := flame.Embed(id, g.tree, g.opt)
		if err != nil {
			return err
		}
		secs = append(secs, sec{ID: id, Kind: g.kind, HTML: h})
	}
	title := f.opt.Title
	if title == "" {
		title = "profcap flame graphs: " + flameKinds(graphs)
	}
	return flamePageTmpl.Execute(w, struct {
		Title  string
		Head   template.HTML
		Graphs []sec
	}{title, flame.PageHead(), secs})
}

func flameKinds(graphs []flameGraph) string {
	var ks []string
	for _, g := range graphs {
		ks = append(ks, g.kind)
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
