package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/google/pprof/profile"
	"github.com/spf13/pflag"

	"github.com/profcap/profcap/flame"
	"github.com/profcap/profcap/formats"
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
--kind. --label KEY tags every sample with KEY=<input file name>, so the
merged profile can still be split ('profcap flame --group-by KEY').

Flags:
`

const mergeExamples = `
Examples:
  # three samply recordings of one service as one CPU profile
  profcap merge -o cpu.pb.gz a.json.gz b.json.gz c.json.gz

  # keep track of where each sample came from
  profcap merge --label host -o all.pb.gz host1.pb.gz host2.pb.gz
  profcap flame --group-by host -o all.html all.pb.gz

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
	fs.StringVar(&label, "label", "", "tag each sample with this label key = the input's file name")
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
	lo.Label = label
	p, _, err := loadOneKind(ctx, "merge", fs.Args(), lo)
	if err != nil {
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
