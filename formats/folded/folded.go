// Package folded reads folded stacks: one line per distinct stack, frames
// separated by ';' root first, then a space and a count. It is the format
// flamegraph.pl and inferno render, and what stackcollapse-*.pl, py-spy
// (--format raw), rbspy (collapsed) and inferno-collapse-* print:
//
//	main;run;compute 12
//	main;run;io wait 3
//
// The count is the last space-separated field, so frame names may contain
// spaces. Blank lines and lines starting with '#' are skipped. A line may
// carry a second count (the "differential" folded format of difffolded.pl);
// only the last field is used, as flamegraph.pl does for a single column.
package folded

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/google/pprof/profile"
)

// SyntaxError reports a malformed line.
type SyntaxError struct {
	Line int    // 1-based line number
	Text string // the offending line, shortened
	Msg  string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("line %d: %s: %q", e.Line, e.Msg, e.Text)
}

// Pos returns the line number of the error.
func (e *SyntaxError) Pos() int { return e.Line }

// maxLine bounds one line; real folded files have stacks of a few hundred
// frames, so 16 MiB is generous while keeping a corrupt file from eating memory.
const maxLine = 16 << 20

// Parse reads folded stacks into a profile with one sample type,
// "samples"/"count". Identical stacks are summed.
func Parse(r io.Reader) (*profile.Profile, error) {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}},
		PeriodType: &profile.ValueType{Type: "samples", Unit: "count"},
		Period:     1,
	}
	funcs := map[string]*profile.Location{}
	samples := map[string]*profile.Sample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r\t ")
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			return nil, &SyntaxError{Line: n, Text: short(line), Msg: "no count after the stack (want \"frame;frame COUNT\")"}
		}
		stack, num := strings.TrimRight(line[:sp], " "), line[sp+1:]
		count, err := parseCount(num)
		if err != nil {
			return nil, &SyntaxError{Line: n, Text: short(line), Msg: err.Error()}
		}
		if stack == "" {
			return nil, &SyntaxError{Line: n, Text: short(line), Msg: "empty stack"}
		}
		if count == 0 {
			continue
		}
		if s := samples[stack]; s != nil {
			if s.Value[0] > (1<<62)-count {
				return nil, &SyntaxError{Line: n, Text: short(line), Msg: "count overflows"}
			}
			s.Value[0] += count
			continue
		}
		frames := strings.Split(stack, ";")
		s := &profile.Sample{Value: []int64{count}, Location: make([]*profile.Location, 0, len(frames))}
		// pprof stores stacks leaf first.
		for i := len(frames) - 1; i >= 0; i-- {
			name := frames[i]
			loc := funcs[name]
			if loc == nil {
				id := uint64(len(p.Function) + 1)
				fn := &profile.Function{ID: id, Name: name, SystemName: name}
				loc = &profile.Location{ID: id, Line: []profile.Line{{Function: fn}}}
				p.Function = append(p.Function, fn)
				p.Location = append(p.Location, loc)
				funcs[name] = loc
			}
			s.Location = append(s.Location, loc)
		}
		samples[stack] = s
		p.Sample = append(p.Sample, s)
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			return nil, &SyntaxError{Line: n + 1, Text: "", Msg: fmt.Sprintf("line longer than %d bytes", maxLine)}
		}
		return nil, err
	}
	if err := p.CheckValid(); err != nil {
		return nil, fmt.Errorf("building profile: %w", err)
	}
	return p, nil
}

func parseCount(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("missing count")
	}
	c, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		// Some tools print fractional weights; round them.
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr == nil && f > 1<<62 {
			return 0, fmt.Errorf("count %q is too large", s)
		}
		if ferr != nil || f != f || f < 0 {
			return 0, fmt.Errorf("count %q is not a non-negative number", s)
		}
		return int64(f + 0.5), nil
	}
	if c < 0 {
		return 0, fmt.Errorf("count %q is negative", s)
	}
	if c > 1<<62 {
		return 0, fmt.Errorf("count %q is too large", s)
	}
	return c, nil
}

func short(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}
