// Package profiletest holds what the importers' tests share: a stable text
// dump of a profile for golden files, in the manner of pprof's
// testdata/*.string files.
package profiletest

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/internal/golden"
)

// String returns p.String() with its one machine-dependent part made
// stable: Profile.String prints the Time line in the local time zone; here it
// is printed in UTC (RFC 3339). Everything else String prints is already in
// the profile's own order, with labels sorted.
func String(p *profile.Profile) string {
	s := p.String()
	if p.TimeNanos != 0 {
		local := fmt.Sprintf("Time: %v\n", time.Unix(0, p.TimeNanos))
		utc := "Time: " + time.Unix(0, p.TimeNanos).UTC().Format(time.RFC3339Nano) + "\n"
		s = strings.Replace(s, local, utc, 1)
	}
	return s
}

// Golden requires p to be valid and its dump to equal
// testdata/golden/NAME.string; go test -update rewrites the file.
func Golden(t testing.TB, name string, p *profile.Profile) {
	t.Helper()
	if err := p.CheckValid(); err != nil {
		t.Fatalf("%s: invalid profile: %v", name, err)
	}
	golden.Check(t, filepath.Join("testdata", "golden", name+".string"), String(p))
}
