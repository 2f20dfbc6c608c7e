// Package formats reads profiles from files in the formats profcap accepts
// as input: pprof protobuf (gzipped or raw), folded stacks, `perf script`
// text, the processed Firefox Profiler format (what samply writes) and
// speedscope JSON, each optionally gzipped. Every reader returns a
// *profile.Profile; the format is given or sniffed from the first bytes.
//
// Load and LoadMerged read what a command is given as inputs: files,
// standard input ("-") or bundle directories written by profcap record, and
// merge them (files into one profile, bundles into one per kind) with the
// one merge every command uses.
package formats

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/formats/firefox"
	"github.com/profcap/profcap/formats/folded"
	"github.com/profcap/profcap/formats/perfdata"
	"github.com/profcap/profcap/formats/perfscript"
	"github.com/profcap/profcap/formats/speedscope"
	"github.com/profcap/profcap/internal/pprofutil"
)

// Format names an input format.
type Format string

const (
	FormatAuto       Format = ""           // sniff the content
	FormatPprof      Format = "pprof"      // pprof protobuf, gzipped or raw
	FormatFolded     Format = "folded"     // "frame;frame COUNT" lines
	FormatPerfScript Format = "perfscript" // `perf script` text
	FormatPerfData   Format = "perfdata"   // perf.data, as perf record writes it
	FormatFirefox    Format = "firefox"    // processed Firefox Profiler JSON (samply)
	FormatSpeedscope Format = "speedscope" // speedscope JSON
	FormatUnknown    Format = "unknown"    // Sniff could not tell
)

// maxPprofFile bounds a pprof input, compressed and inflated: ten times
// the largest real profile seen (a long Go CPU profile of a large service).
const maxPprofFile = 1 << 30

// Formats lists the formats a user can name, in the order --help shows them.
var Formats = []Format{FormatPprof, FormatFolded, FormatPerfScript, FormatPerfData, FormatFirefox, FormatSpeedscope}

// ParseFormat maps a user's --input-format value to a Format. "auto" and ""
// mean FormatAuto; "perf" and "perf-script" are accepted for perfscript.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return FormatAuto, nil
	case "pprof", "pb", "proto":
		return FormatPprof, nil
	case "folded", "collapsed":
		return FormatFolded, nil
	case "perfscript", "perf-script", "perf":
		return FormatPerfScript, nil
	case "perfdata", "perf.data", "perf-data":
		return FormatPerfData, nil
	case "firefox", "samply", "gecko", "fxprof":
		return FormatFirefox, nil
	case "speedscope":
		return FormatSpeedscope, nil
	}
	return FormatUnknown, fmt.Errorf("unknown input format %q (want auto, pprof, folded, perfscript, perfdata, firefox or speedscope)", s)
}

// SniffLen is how many leading bytes Sniff wants to see. 64 KiB holds many
// complete perf script records and folded lines, so the guess rests on whole
// lines rather than the first one only.
const SniffLen = 64 << 10

var (
	gzipMagic = []byte{0x1f, 0x8b}
	// A perf script event header: "comm pid[/tid] [cpu] secs.usecs: ...".
	perfHeader = regexp.MustCompile(`^\S.*?\s\d+(/\d+)?\s+(\[\d+\]\s+)?\d+\.\d+:\s`)
	// A perf script frame line: indented hex address, then a symbol.
	perfFrame = regexp.MustCompile(`^\s+[0-9a-fA-F]+\s+\S`)
	// A folded line: a stack, a space, a count (optionally a second count).
	foldedLine = regexp.MustCompile(`^\S.*\s\d+(\.\d+)?$`)
)

// Sniff guesses the format of content that starts with head (ideally the
// first SniffLen bytes). Gzipped content is judged by what it decompresses
// to. It returns FormatUnknown when nothing fits.
func Sniff(head []byte) Format {
	if perfdata.IsPerfData(head) {
		return FormatPerfData
	}
	if bytes.HasPrefix(head, gzipMagic) {
		inner, _ := gunzipHead(head)
		if len(inner) == 0 {
			// A gzip stream whose first bytes do not decompress to anything
			// visible yet; pprof is by far the most common.
			return FormatPprof
		}
		return sniffPlain(inner, true)
	}
	return sniffPlain(head, len(head) < SniffLen)
}

// gunzipHead decompresses as much of a truncated gzip stream as it can.
func gunzipHead(head []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(head))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	_, err = io.Copy(&out, io.LimitReader(zr, SniffLen))
	return out.Bytes(), err
}

// JSON members that identify the JSON formats. speedscope files are
// recognised by their $schema only, as speedscope does; processed Firefox
// profiles by meta.preprocessedProfileVersion or, failing that, a top-level
// object holding both "meta" and "threads".
var (
	speedscopeSchema = regexp.MustCompile(`"\$schema"\s*:\s*"` + regexp.QuoteMeta(speedscope.Schema) + `"`)
	firefoxVersion   = regexp.MustCompile(`"preprocessedProfileVersion"\s*:\s*\d`)
	jsonMeta         = regexp.MustCompile(`"meta"\s*:\s*\{`)
	jsonThreads      = regexp.MustCompile(`"threads"\s*:\s*\[`)
)

// sniffJSON tells the JSON formats apart; head starts with '{'.
func sniffJSON(head []byte) Format {
	switch {
	case speedscopeSchema.Match(head):
		return FormatSpeedscope
	case firefoxVersion.Match(head):
		return FormatFirefox
	case jsonMeta.Match(head) && jsonThreads.Match(head):
		return FormatFirefox
	}
	return FormatUnknown
}

func sniffPlain(head []byte, complete bool) Format {
	if len(head) == 0 {
		return FormatUnknown
	}
	if trimmed := bytes.TrimLeft(bytes.TrimPrefix(head, []byte("\ufeff")), " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '{' {
		return sniffJSON(trimmed)
	}
	if !isText(head) {
		return FormatPprof
	}
	lines := strings.Split(string(head), "\n")
	if !complete && len(lines) > 1 {
		lines = lines[:len(lines)-1] // the last line may be cut short
	}
	folded, other := 0, 0
	for _, l := range lines {
		l = strings.TrimRight(l, "\r")
		switch {
		case strings.TrimSpace(l) == "":
			continue
		case strings.HasPrefix(l, "# ========") || strings.HasPrefix(l, "# captured on"):
			return FormatPerfScript
		case strings.HasPrefix(l, "#"):
			continue
		case perfFrame.MatchString(l) || perfHeader.MatchString(l):
			return FormatPerfScript
		case foldedLine.MatchString(l):
			folded++
		default:
			other++
		}
	}
	// A majority of folded lines: call it folded and let the parser name
	// the bad lines, which helps more than "unknown format".
	if folded > 0 && folded >= other {
		return FormatFolded
	}
	return FormatUnknown
}

// isText reports whether b looks like text: valid UTF-8 (allowing a rune cut
// at the end) without control characters other than tab, CR and LF.
func isText(b []byte) bool {
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n <= 1 {
			if len(b) < utf8.UTFMax && !utf8.FullRune(b) {
				return true
			}
			return false
		}
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			return false
		}
		b = b[n:]
	}
	return true
}

// ReadFile reads the profile in path. With FormatAuto the format is sniffed
// from the content. Errors name the file.
func ReadFile(path string, f Format) (*profile.Profile, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	if st, err := fh.Stat(); err == nil && st.IsDir() {
		return nil, fmt.Errorf("%s is a directory, not a profile", path)
	}
	if f == FormatPerfData || f == FormatAuto {
		var head [8]byte
		n, _ := io.ReadFull(fh, head[:])
		if f == FormatPerfData || perfdata.IsPerfData(head[:n]) {
			// Mapped, not read: perf.data files run to gigabytes.
			p, err := readPerfData(path, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return p, nil
		}
		if _, err := fh.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
	}
	p, err := Read(fh, f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ErrUnknownFormat is returned (wrapped) when sniffing finds no format.
var ErrUnknownFormat = errors.New("cannot tell the input format (pprof, folded stacks, perf script, Firefox Profiler/samply JSON or speedscope JSON); name it with --input-format")

// Read reads a profile from r, sniffing the format when f is FormatAuto.
func Read(r io.Reader, f Format) (*profile.Profile, error) {
	br := bufio.NewReaderSize(r, SniffLen)
	head, err := br.Peek(SniffLen)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, err
	}
	if len(head) == 0 {
		return nil, errors.New("empty input")
	}
	if f == FormatAuto {
		f = Sniff(head)
	}
	var p *profile.Profile
	switch f {
	case FormatPprof:
		// A file is the user's own, so nothing is cut; but what it
		// inflates to is bounded, so a gzip bomb is an error, not the
		// host's memory.
		data, rerr := io.ReadAll(io.LimitReader(br, maxPprofFile+1))
		if rerr != nil {
			return nil, fmt.Errorf("reading pprof: %w", rerr)
		}
		if int64(len(data)) > maxPprofFile {
			return nil, fmt.Errorf("reading pprof: %w", &pprofutil.TooLargeError{What: "profile file", Limit: maxPprofFile})
		}
		p, err = pprofutil.Parse(data, maxPprofFile)
		if err != nil {
			return nil, fmt.Errorf("reading pprof: %w", err)
		}
	case FormatFirefox:
		// The importers recognise gzip themselves.
		p, err = firefox.Parse(br, firefox.Options{})
		if err != nil {
			return nil, err
		}
	case FormatSpeedscope:
		p, err = speedscope.Parse(br, speedscope.Options{})
		if err != nil {
			return nil, err
		}
	case FormatFolded, FormatPerfScript:
		var in io.Reader = br
		if bytes.HasPrefix(head, gzipMagic) {
			zr, err := gzip.NewReader(br)
			if err != nil {
				return nil, fmt.Errorf("reading gzip: %w", err)
			}
			defer zr.Close()
			in = zr
		}
		if f == FormatFolded {
			p, err = folded.Parse(in)
			if err != nil {
				return nil, fmt.Errorf("reading folded stacks: %w", err)
			}
		} else {
			p, err = perfscript.Parse(in, perfscript.Options{})
			if err != nil {
				return nil, fmt.Errorf("reading perf script: %w", err)
			}
		}
	case FormatPerfData:
		p, err = readPerfData("", br)
		if err != nil {
			return nil, err
		}
	case FormatUnknown:
		return nil, ErrUnknownFormat
	default:
		return nil, fmt.Errorf("unknown input format %q", f)
	}
	if p == nil {
		return nil, errors.New("reader returned no profile")
	}
	if err := p.CheckValid(); err != nil {
		return nil, fmt.Errorf("invalid profile: %w", err)
	}
	return p, nil
}

// readPerfData reads a perf.data file (at path, else from r): a CPU profile,
// or an off-CPU one for a recording of sched:sched_switch with switch events;
// what the reader says about it (frames left unnamed and why, perf script
// run for DWARF stacks) goes to the profile's comments.
func readPerfData(path string, r io.Reader) (*profile.Profile, error) {
	var notes []string
	opt := perfdata.Options{Notes: func(n string) { notes = append(notes, n) }}
	var p *profile.Profile
	var err error
	if path != "" {
		p, err = perfdata.ReadFile(path, opt)
	} else {
		p, err = perfdata.Read(r, opt)
	}
	if err != nil {
		return nil, fmt.Errorf("reading perf.data: %w", err)
	}
	p.Comments = append(p.Comments, notes...)
	return p, nil
}

// LoadOptions say how Load and LoadMerged read their inputs.
type LoadOptions struct {
	// Format is the format of file inputs; FormatAuto sniffs each file.
	Format Format
	// Kinds limits bundle inputs to these kinds (every kind when empty).
	// With file inputs it is an error, ErrKindsWithoutBundles.
	Kinds []bundle.Kind
	// Label, when not empty, tags every sample of each input with
	// Label=<the input's base name>, so that a merge can be split again
	// (flame --group-by).
	Label string
	// Stdin is what the input "-" reads; os.Stdin when nil.
	Stdin io.Reader
}

// Loaded is one profile read from one input, with where it came from.
type Loaded struct {
	Profile *profile.Profile
	// Input is the input as given: a file, "-" or a bundle directory.
	Input string
	// Origin is the file the profile was read from: Input for a file, the
	// merged profile's path inside a bundle.
	Origin string
	// Bundle is set when Input is a bundle directory; Kind is then the
	// kind of the merged profile.
	Bundle bool
	Kind   bundle.Kind
}

// The inputs of one LoadMerged are either files or bundles.
var (
	ErrMixedInputs         = errors.New("give either profile files or bundle directories, not both")
	ErrKindsWithoutBundles = errors.New("--kind only applies to bundle inputs")
)

// input is one classified input.
type input struct {
	name   string
	bundle bool
}

// Schemes maps the NAME of an input written NAME:REF (pyroscope:URL) onto
// what loads it: a profile and the origin to name it by. Commands register
// them; an input whose NAME is not registered is a file.
var Schemes = map[string]func(ctx context.Context, ref string) (*profile.Profile, string, error){}

func scheme(name string) (func(context.Context, string) (*profile.Profile, string, error), string, bool) {
	i := strings.IndexByte(name, ':')
	fn, ok := Schemes[name[:max(i, 0)]]
	return fn, name[i+1:], ok && i > 0
}

func classify(name string) (input, error) {
	if _, _, ok := scheme(name); name == "-" || ok {
		return input{name: name}, nil // standard input, or a scheme's
	}
	st, err := os.Stat(name)
	if err != nil {
		return input{}, err
	}
	switch {
	case st.IsDir() && bundle.IsBundle(name):
		return input{name: name, bundle: true}, nil
	case st.IsDir():
		return input{}, fmt.Errorf("%s is a directory but not a profcap bundle (no %s)", name, bundle.ManifestFile)
	}
	return input{name: name}, nil
}

// Load reads one input: a profile file in any format Read takes, or "-"
// for opt.Stdin (one Loaded), or a bundle directory written by profcap
// record (its merged profile of each kind in opt.Kinds, in manifest order;
// possibly none).
func Load(ctx context.Context, name string, opt LoadOptions) ([]Loaded, error) {
	in, err := classify(name)
	if err != nil {
		return nil, err
	}
	if !in.bundle && len(opt.Kinds) > 0 {
		return nil, ErrKindsWithoutBundles
	}
	return load(ctx, in, opt)
}

func load(ctx context.Context, in input, opt LoadOptions) ([]Loaded, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var ls []Loaded
	if !in.bundle {
		var p *profile.Profile
		var err error
		origin := in.name
		if in.name == "-" {
			stdin := opt.Stdin
			if stdin == nil {
				stdin = os.Stdin
			}
			if p, err = Read(stdin, opt.Format); err != nil {
				return nil, fmt.Errorf("standard input: %w", err)
			}
		} else if fn, ref, ok := scheme(in.name); ok {
			if p, origin, err = fn(ctx, ref); err != nil {
				return nil, err
			}
		} else if p, err = ReadFile(in.name, opt.Format); err != nil {
			return nil, err
		}
		ls = append(ls, Loaded{Profile: p, Input: in.name, Origin: origin})
	} else {
		m, err := bundle.Read(in.name)
		if err != nil {
			return nil, err
		}
		for _, mg := range m.Merged {
			if len(opt.Kinds) > 0 && !slices.Contains(opt.Kinds, mg.Kind) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			p, err := bundle.LoadProfile(in.name, mg.Path)
			if err != nil {
				return nil, err
			}
			ls = append(ls, Loaded{Profile: p, Input: in.name, Origin: filepath.Join(in.name, mg.Path), Bundle: true, Kind: mg.Kind})
		}
	}
	if opt.Label != "" {
		v := filepath.Base(filepath.Clean(in.name))
		for _, l := range ls {
			pprofutil.LabelSamples(l.Profile, opt.Label, v)
		}
	}
	return ls, nil
}

// A Set is the profiles of one kind of every input, merged into one.
type Set struct {
	// Kind is the kind of the bundles' profiles; "" for file inputs.
	Kind    bundle.Kind
	Profile *profile.Profile
	// Inputs are the inputs that gave a profile to the set, in the order
	// given; Bundles is set when they are bundle directories.
	Inputs  []string
	Bundles bool
}

// Title names the set in titles and messages: the first input's base
// name ("cpu.pb.gz and 2 more") and, for bundles, the kind first
// ("heap — profcap-20260101T120000Z-api-1").
func (s *Set) Title() string {
	if len(s.Inputs) == 0 {
		return string(s.Kind)
	}
	t := filepath.Base(filepath.Clean(s.Inputs[0]))
	if s.Inputs[0] == "-" {
		t = "-"
	}
	if s.Bundles {
		t = string(s.Kind) + " — " + t
	}
	if len(s.Inputs) > 1 {
		t += fmt.Sprintf(" and %d more", len(s.Inputs)-1)
	}
	return t
}

// LoadMerged reads every input (as Load does) and merges what it read:
// every file into one Set, or, for bundle directories, one Set per kind, in
// the order the kinds first appear. Files and bundles cannot be mixed
// (ErrMixedInputs), and bundles must give at least one profile.
func LoadMerged(ctx context.Context, names []string, opt LoadOptions) ([]Set, error) {
	ins := make([]input, 0, len(names))
	var files, bundles []string
	for _, n := range names {
		in, err := classify(n)
		if err != nil {
			return nil, err
		}
		ins = append(ins, in)
		if in.bundle {
			bundles = append(bundles, n)
		} else {
			files = append(files, n)
		}
	}
	if len(files) > 0 && len(bundles) > 0 {
		return nil, ErrMixedInputs
	}
	if len(opt.Kinds) > 0 && len(bundles) == 0 {
		return nil, ErrKindsWithoutBundles
	}
	var order []bundle.Kind
	byKind := map[bundle.Kind][]Loaded{}
	for _, in := range ins {
		ls, err := load(ctx, in, opt)
		if err != nil {
			return nil, err
		}
		for _, l := range ls {
			if _, ok := byKind[l.Kind]; !ok {
				order = append(order, l.Kind)
			}
			byKind[l.Kind] = append(byKind[l.Kind], l)
		}
	}
	if len(order) == 0 {
		if len(opt.Kinds) > 0 {
			var ks []string
			for _, k := range opt.Kinds {
				ks = append(ks, string(k))
			}
			return nil, fmt.Errorf("%s: no merged profile of kind %s", strings.Join(bundles, ", "), strings.Join(ks, ", "))
		}
		return nil, fmt.Errorf("%s: bundle holds no merged profiles", strings.Join(bundles, ", "))
	}
	sets := make([]Set, 0, len(order))
	for _, k := range order {
		ls := byKind[k]
		p, err := Merge(ls)
		if err != nil {
			return nil, err
		}
		s := Set{Kind: k, Profile: p, Bundles: len(bundles) > 0}
		for _, l := range ls {
			if !slices.Contains(s.Inputs, l.Input) {
				s.Inputs = append(s.Inputs, l.Input)
			}
		}
		sets = append(sets, s)
	}
	return sets, nil
}

// Merge merges loaded profiles of one kind into one with pprofutil.Merge.
// Their sample types must be the same; their period types may differ (what
// folded and perf script inputs call the period), and become the first
// one's. One profile is returned as it is.
func Merge(ls []Loaded) (*profile.Profile, error) {
	if len(ls) == 0 {
		return nil, errors.New("no profiles to merge")
	}
	first := ls[0].Profile
	if len(ls) == 1 {
		return first, nil
	}
	ps := []*profile.Profile{first}
	var names []string
	names = append(names, ls[0].Origin)
	for _, l := range ls[1:] {
		p := l.Profile
		if !sameSampleTypes(first, p) {
			return nil, fmt.Errorf("cannot merge %s (%s) with %s (%s): different sample types", ls[0].Origin, pprofutil.TypeList(first), l.Origin, pprofutil.TypeList(p))
		}
		// profile.Merge wants equal period types.
		if p.PeriodType == nil || first.PeriodType == nil || *p.PeriodType != *first.PeriodType {
			p.PeriodType, p.Period = first.PeriodType, first.Period
		}
		ps = append(ps, p)
		names = append(names, l.Origin)
	}
	p, err := pprofutil.Merge(ps...)
	if err != nil {
		return nil, fmt.Errorf("merging %s: %w", strings.Join(names, ", "), err)
	}
	return p, nil
}

func sameSampleTypes(a, b *profile.Profile) bool {
	return slices.EqualFunc(a.SampleType, b.SampleType, func(x, y *profile.ValueType) bool {
		return x.Type == y.Type && x.Unit == y.Unit
	})
}
