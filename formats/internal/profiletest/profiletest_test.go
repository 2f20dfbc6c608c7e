package profiletest

import (
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// The dump does not depend on the machine's time zone.
func TestStringIsUTC(t *testing.T) {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}},
		TimeNanos:  time.Date(2022, 12, 19, 14, 9, 21, 578_000_000, time.UTC).UnixNano(),
	}
	old := time.Local
	defer func() { time.Local = old }()
	var dumps []string
	for _, zone := range []string{"UTC", "America/New_York", "Asia/Kolkata"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			loc = time.FixedZone(zone, 5*3600+1800)
		}
		time.Local = loc
		dumps = append(dumps, String(p))
	}
	for _, d := range dumps {
		if !strings.Contains(d, "Time: 2022-12-19T14:09:21.578Z\n") || d != dumps[0] {
			t.Errorf("dump depends on the time zone or lacks the UTC time:\n%s", strings.Join(dumps, "\n---\n"))
			break
		}
	}
}
