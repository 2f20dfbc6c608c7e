// Package formats reads profiles from files in the formats profcap accepts
// as input: pprof protobuf (gzipped or raw), folded stacks, `perf script`
// text, the processed Firefox Profiler format (what samply writes) and
// speedscope JSON, each optionally gzipped. Every reader returns a
// *profile.Profile; the format is given or sniffed from the first bytes.
package formats

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/formats/firefox"
	"github.com/profcap/profcap/formats/folded"
	"github.com/profcap/profcap/formats/perfscript"
	"github.com/profcap/profcap/formats/speedscope"
)

// Format names an input format.
type Format string

const (
	FormatAuto       Format = ""           // sniff the content
	FormatPprof      Format = "pprof"      // pprof protobuf, gzipped or raw
	FormatFolded     Format = "folded"     // "frame;frame COUNT" lines
	FormatPerfScript Format = "perfscript" // `perf script` text
	FormatFirefox    Format = "firefox"    // processed Firefox Profiler JSON (samply)
	FormatSpeedscope Format = "speedscope" // speedscope JSON
	FormatUnknown    Format = "unknown"    // Sniff could not tell
)

// Formats lists the formats a user can name, in the order --help shows them.
var Formats = []Format{FormatPprof, FormatFolded, FormatPerfScript, FormatFirefox, FormatSpeedscope}

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
	case "firefox", "samply", "gecko", "fxprof":
		return FormatFirefox, nil
	case "speedscope":
		return FormatSpeedscope, nil
	}
	return FormatUnknown, fmt.Errorf("unknown input format %q (want auto, pprof, folded, perfscript, firefox or speedscope)", s)
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
		p, err = profile.Parse(br)
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
