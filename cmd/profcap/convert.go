package main

import (
	"context"
	"fmt"
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
	"github.com/profcap/profcap/internal/pprofutil"
)

const convertUsage = `Usage: profcap convert [flags] INPUT... -o OUT

Convert a profile to pprof, folded stacks or speedscope JSON. An INPUT is
anything 'profcap flame' reads: pprof, folded stacks, perf script text,
samply / Firefox Profiler JSON (processed format, versions 41 to 70),
speedscope JSON, each optionally gzipped, or a bundle directory with
--kind. Several inputs of the same kind are merged first.

Flags:
`

const convertExamples = `
Examples:
  # a samply recording as pprof, for 'go tool pprof' or Pyroscope
  profcap convert --to pprof profile.json.gz -o cpu.pb.gz

  # a speedscope file as folded stacks for flamegraph.pl or inferno
  profcap convert --to folded trace.speedscope.json -o trace.folded

  # py-spy's raw output, opened in speedscope
  profcap convert -o app.speedscope.json pyspy.folded

  # the cpu profiles of a bundle as one pprof
  profcap convert --kind cpu -o cpu.pb.gz ./profcap-20260101-120000

--to defaults from -o's extension: .pb.gz/.pb/.pprof → pprof, .folded/.txt
→ folded, .json → speedscope. "-o -" writes to stdout (folded unless --to). Folded and speedscope
output come from the frame tree 'profcap flame' draws (one speedscope
profile per sample type; folded uses --sample-index or the default type).
Reading formats: docs/importers.md.
`

const mergeUsage = `Usage: profcap merge [flags] -o OUT.pb.gz INPUT...

Merge profiles of one kind (the same sample types) into one pprof file.
Inputs are anything 'profcap flame' reads, or bundle directories with
--kind. --label KEY tags every sample with KEY=where it came from, so the
merged profile can still be split ('profcap flame --group-by KEY'): a file
inside a bundle by its path there (targets/worker-1/cpu.pb.gz), a bundle by
its directory's name, any other file by its name.

Flags:
`

const mergeExamples = `
Examples:
  # three samply recordings of one service as one CPU profile
  profcap merge -o cpu.pb.gz a.json.gz b.json.gz c.json.gz

  # keep track of where each sample came from
  profcap merge --label host -o all.pb.gz host1.pb.gz host2.pb.gz
  profcap flame --group-by host -o all.html all.pb.gz

  # two targets of one bundle, labelled targets/worker-1/cpu.pb.gz and ...-2/...
  profcap merge --label src -o w.pb.gz b/targets/worker-1/cpu.pb.gz b/targets/worker-2/cpu.pb.gz

  # heap profiles of two bundles
  profcap merge --kind heap -o heap.pb.gz ./profcap-a ./profcap-b
`

// convertTo maps an output name onto a --to value.
func convertTo(out string) string {
	low := strings.ToLower(out)
	switch {
	case out == "-":
		return "folded"
	case strings.HasSuffix(low, ".pb.gz"), strings.HasSuffix(low, ".pb"), strings.HasSuffix(low, ".pprof"), strings.HasSuffix(low, ".pprof.gz"):
		return "pprof"
	case strings.HasSuffix(low, ".folded"), strings.HasSuffix(low, ".collapsed"), strings.HasSuffix(low, ".txt"):
		return "folded"
	case strings.HasSuffix(low, ".json"):
		return "speedscope"
	}
	return ""
}

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("convert", pflag.ContinueOnError)
	var (
		to, out, inputFormat string
		kinds                []string
		opt                  flame.Options
	)
	fs.StringVar(&to, "to", "", "output format: pprof, folded or speedscope (default: from -o's extension)")
	fs.StringVarP(&out, "output", "o", "", "output file, or - for stdout (required)")
	fs.StringVar(&inputFormat, "input-format", "auto", "input format: auto, pprof, folded, perfscript, perfdata, firefox or speedscope")
	fs.StringSliceVar(&kinds, "kind", nil, "with bundles: the kind to convert (cpu, heap, ...)")
	fs.StringVar(&opt.SampleIndex, "sample-index", "", "folded: the sample type to write (default: the profile's default)")
	fs.StringVar(&opt.Title, "title", "", "speedscope: the file's name (default: the first input's name)")
	if done, err := parseArgs(fs, args, stdout, func(w io.Writer) {
		fmt.Fprintf(w, "%s%s%s", convertUsage, fs.FlagUsages(), convertExamples)
	}); done || err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError("convert: no INPUT given")
	}
	if out == "" {
		return usageError("convert: -o OUT is required (\"-o -\" for stdout)")
	}
	if to == "" {
		if to = convertTo(out); to == "" {
			return usageError("convert: cannot tell the output format from -o %s; use --to pprof|folded|speedscope", out)
		}
	}
	to = strings.ToLower(to)
	if !slices.Contains([]string{"pprof", "folded", "speedscope"}, to) {
		return usageError("convert: unknown --to %q (want pprof, folded or speedscope)", to)
	}
	lo, err := loadOptions(inputFormat, kinds)
	if err != nil {
		return usageError("convert: %v", err)
	}
	p, title, err := loadOneKind(ctx, "convert", fs.Args(), lo)
	if err != nil {
		return err
	}
	if opt.Title == "" {
		opt.Title = title
	}
	var write func(io.Writer) error
	switch to {
	case "pprof":
		write = p.Write
	case "folded", "speedscope":
		opt.MaxNodes = -1 // a conversion keeps every frame
		t, err := flame.NewTree(p, opt)
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		write = func(w io.Writer) error { return flame.WriteFolded(w, t, opt) }
		if to == "speedscope" {
			write = func(w io.Writer) error { return flame.WriteSpeedscope(w, t, opt) }
		}
	}
	if err := writeFlameOutput(out, stdout, stderr, write); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	return nil
}

// loadOneKind reads inputs (files merged, or one kind of bundles) into one
// profile and its title.
func loadOneKind(ctx context.Context, cmd string, inputs []string, opt formats.LoadOptions) (*profile.Profile, string, error) {
	sets, err := formats.LoadMerged(ctx, inputs, opt)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", cmd, err)
	}
	if len(sets) > 1 {
		var ks []string
		for _, s := range sets {
			ks = append(ks, string(s.Kind))
		}
		return nil, "", usageError("%s: the bundles hold %d kinds (%s); pick one with --kind", cmd, len(sets), strings.Join(ks, ", "))
	}
	return sets[0].Profile, sets[0].Title(), nil
}

func runMerge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("merge", pflag.ContinueOnError)
	var (
		out, inputFormat, label string
		kinds                   []string
	)
	fs.StringVarP(&out, "output", "o", "", "output pprof file (.pb.gz), or - for stdout (required)")
	fs.StringVar(&inputFormat, "input-format", "auto", "input format: auto, pprof, folded, perfscript, perfdata, firefox or speedscope")
	fs.StringSliceVar(&kinds, "kind", nil, "with bundles: the kind to merge (cpu, heap, ...)")
	fs.StringVar(&label, "label", "", "tag each sample with this label key = where it came from: its path inside its bundle (targets/worker-1/cpu.pb.gz), a bundle's name, else the file's name")
	if done, err := parseArgs(fs, args, stdout, func(w io.Writer) {
		fmt.Fprintf(w, "%s%s%s", mergeUsage, fs.FlagUsages(), mergeExamples)
	}); done || err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError("merge: no INPUT given")
	}
	if out == "" {
		return usageError("merge: -o OUT.pb.gz is required")
	}
	if label != "" && (strings.ContainsAny(label, " ;=") || label != strings.TrimSpace(label)) {
		return usageError("merge: --label %q: want a label key such as host", label)
	}
	lo, err := loadOptions(inputFormat, kinds)
	if err != nil {
		return usageError("merge: %v", err)
	}
	var p *profile.Profile
	if label == "" {
		if p, _, err = loadOneKind(ctx, "merge", fs.Args(), lo); err != nil {
			return err
		}
	} else if p, err = loadLabelled(ctx, fs.Args(), lo, label); err != nil {
		return err
	}
	p = p.Compact()
	if err := p.CheckValid(); err != nil {
		return fmt.Errorf("merge: merged profile is invalid: %w", err)
	}
	if err := writeFlameOutput(out, stdout, stderr, p.Write); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	return nil
}

// loadLabelled reads every input of merge --label and tags its samples
// with label = where it came from (labelValues), then merges them: one
// kind only, as merge writes one profile.
func loadLabelled(ctx context.Context, inputs []string, lo formats.LoadOptions, label string) (*profile.Profile, error) {
	values := labelValues(inputs)
	byKind := map[bundle.Kind][]formats.Loaded{}
	var order []bundle.Kind
	files, bundles := 0, 0
	for _, in := range inputs {
		ls, err := formats.Load(ctx, in, lo)
		if err != nil {
			return nil, fmt.Errorf("merge: %w", err)
		}
		if in != "-" && bundle.IsBundle(in) {
			bundles++
		} else {
			files++
		}
		for _, l := range ls {
			pprofutil.LabelSamples(l.Profile, label, values[in])
			if _, ok := byKind[l.Kind]; !ok {
				order = append(order, l.Kind)
			}
			byKind[l.Kind] = append(byKind[l.Kind], l)
		}
	}
	if files > 0 && bundles > 0 {
		return nil, fmt.Errorf("merge: %w", formats.ErrMixedInputs)
	}
	if len(order) > 1 {
		var ks []string
		for _, k := range order {
			ks = append(ks, string(k))
		}
		return nil, usageError("merge: the bundles hold %d kinds (%s); pick one with --kind", len(order), strings.Join(ks, ", "))
	}
	if len(order) == 0 {
		return nil, fmt.Errorf("merge: the inputs hold no profile")
	}
	p, err := formats.Merge(byKind[order[0]])
	if err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	return p, nil
}

// labelValues names each input for merge --label: a file inside a bundle by
// its path inside the bundle (targets/worker-1/cpu.pb.gz; with files of
// several bundles, the bundle's name first), a bundle by its name, any
// other file by its name, or by its path as given when two share a name.
func labelValues(inputs []string) map[string]string {
	out := map[string]string{}
	roots := map[string]bool{}
	rel := map[string][2]string{} // input → bundle root, path inside it
	for _, in := range inputs {
		if in == "-" {
			continue
		}
		if root, r, ok := bundleRelative(in); ok {
			rel[in] = [2]string{root, r}
			roots[root] = true
		}
	}
	names := map[string]int{}
	for _, in := range inputs {
		names[filepath.Base(filepath.Clean(in))]++
	}
	for _, in := range inputs {
		switch r, ok := rel[in]; {
		case in == "-":
			out[in] = "-"
		case ok && r[1] == ".":
			out[in] = filepath.Base(r[0]) // a bundle directory
		case ok && len(roots) > 1:
			out[in] = filepath.Base(r[0]) + "/" + r[1]
		case ok:
			out[in] = r[1]
		case names[filepath.Base(filepath.Clean(in))] > 1:
			out[in] = filepath.ToSlash(filepath.Clean(in))
		default:
			out[in] = filepath.Base(filepath.Clean(in))
		}
	}
	return out
}

// bundleRelative finds the bundle a path lies in (the nearest directory at
// or above it that holds a manifest) and the path inside it.
func bundleRelative(path string) (root, rel string, ok bool) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", "", false
	}
	dir := abs
	if st, err := os.Stat(abs); err == nil && !st.IsDir() {
		dir = filepath.Dir(abs)
	}
	for {
		if bundle.IsBundle(dir) {
			r, err := filepath.Rel(dir, abs)
			if err != nil {
				return "", "", false
			}
			return dir, filepath.ToSlash(r), true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", "", false
		}
		dir = parent
	}
}
