package pprofutil

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"github.com/google/pprof/profile"
)

// DefaultMaxInflated bounds a profile's size once decompressed. Real
// profiles of busy services are a few MiB (a 30 s Go CPU profile of a
// large service: 2–10 MiB); the bound leaves room for big ones while a
// 1 MiB gzip bomb (which inflates a thousandfold) is refused before it can
// take the host's memory.
const DefaultMaxInflated = 256 << 20

// TooLargeError says a profile was larger than a limit.
type TooLargeError struct {
	What  string // "decompressed profile"
	Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s larger than the %s limit", e.What, FormatBytes(e.Limit))
}

// FormatBytes renders n as "4 MiB", "512 KiB" or "12 bytes".
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// parsing admits one parse at a time: the memory a capture needs for
// profiles is then that of the largest one, not of every target's at once
// (parsing is CPU-bound: running several side by side is no faster on the
// machines profcap runs on while it captures).
var parsing = make(chan struct{}, 1)

// Parse parses a pprof profile, gzipped or not, refusing one that
// decompresses to more than maxInflated bytes (0: DefaultMaxInflated)
// before it holds more than that in memory.
func Parse(data []byte, maxInflated int64) (*profile.Profile, error) {
	p, _, err := ParseLimited(data, maxInflated, Limits{})
	return p, err
}

// ParseLimited is Parse for a profile from outside that may be larger
// than profcap keeps: one with more samples than l.MaxSamples is cut on
// the wire, before it is parsed, so its cost is that of the cut profile
// (Bound then cuts what is left the same way). The notes say what was cut
// and are also in the profile's comments.
func ParseLimited(data []byte, maxInflated int64, l Limits) (*profile.Profile, []string, error) {
	if maxInflated <= 0 {
		maxInflated = DefaultMaxInflated
	}
	parsing <- struct{}{}
	defer func() { <-parsing }()
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
		raw, err := inflate(data, maxInflated)
		if err != nil {
			return nil, nil, err
		}
		data = raw
	} else if int64(len(data)) > maxInflated {
		return nil, nil, &TooLargeError{What: "profile", Limit: maxInflated}
	}
	data, notes, err := cutWire(data, l)
	if err != nil {
		return nil, nil, err
	}
	p, err := profile.ParseUncompressed(data)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range notes {
		p.Comments = append(p.Comments, CutPrefix+n)
	}
	return p, notes, nil
}

// inflate decompresses gzip data in two passes: the first only counts
// (a stream past the limit then costs no memory at all, however many
// targets send one), the second fills a buffer of exactly that size.
func inflate(data []byte, limit int64) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decompressing profile: %w", err)
	}
	n, err := io.Copy(io.Discard, io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing profile: %w", err)
	}
	if n > limit {
		return nil, &TooLargeError{What: "decompressed profile", Limit: limit}
	}
	if err := zr.Reset(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("decompressing profile: %w", err)
	}
	out := make([]byte, n)
	if _, err := io.ReadFull(zr, out); err != nil {
		return nil, fmt.Errorf("decompressing profile: %w", err)
	}
	return out, nil
}

// IsTooLarge reports whether err says a limit was passed.
func IsTooLarge(err error) bool {
	var t *TooLargeError
	return errors.As(err, &t)
}
