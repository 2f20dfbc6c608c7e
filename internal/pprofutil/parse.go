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

// Parse parses a pprof profile, gzipped or not, refusing one that
// decompresses to more than maxInflated bytes (0: DefaultMaxInflated)
// before it holds more than that in memory.
func Parse(data []byte, maxInflated int64) (*profile.Profile, error) {
	if maxInflated <= 0 {
		maxInflated = DefaultMaxInflated
	}
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("decompressing profile: %w", err)
		}
		var buf bytes.Buffer
		n, err := io.Copy(&buf, io.LimitReader(zr, maxInflated+1))
		if err != nil {
			return nil, fmt.Errorf("decompressing profile: %w", err)
		}
		if n > maxInflated {
			return nil, &TooLargeError{What: "decompressed profile", Limit: maxInflated}
		}
		data = buf.Bytes()
	} else if int64(len(data)) > maxInflated {
		return nil, &TooLargeError{What: "profile", Limit: maxInflated}
	}
	p, err := profile.ParseUncompressed(data)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// IsTooLarge reports whether err says a limit was passed.
func IsTooLarge(err error) bool {
	var t *TooLargeError
	return errors.As(err, &t)
}
