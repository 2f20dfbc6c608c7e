package pyroscope

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
)

// Check compares one profile type of one profile: the total of its
// values in the bundle (as pushed) and what the server gives back for the
// profile's series.
type Check struct {
	Type   string // profile type id
	Bundle int64
	Server int64
}

// VerifyError says that the server does not hold a profile as it was
// sent.
type VerifyError struct {
	Server string
	Checks []Check
	// Before is set when it was found before sending: the server holds
	// something else under the profile's labels, and the profile was not
	// sent again (the server would add the two).
	Before bool
}

func (e *VerifyError) Error() string {
	var diffs []string
	none := true
	for _, c := range e.Checks {
		if c.Server != 0 {
			none = false
		}
		if c.Server != c.Bundle {
			diffs = append(diffs, fmt.Sprintf("%s %d of %d", c.Type, c.Server, c.Bundle))
		}
	}
	if e.Before {
		return fmt.Sprintf("%s already holds other totals under this profile's labels (%s): not sent again, the server would add them up; --force sends it anyway", e.Server, strings.Join(diffs, ", "))
	}
	if none {
		return fmt.Sprintf("accepted, but %s does not hold it (it gives back nothing for its series)", e.Server)
	}
	return fmt.Sprintf("accepted, but %s holds other totals: %s", e.Server, strings.Join(diffs, ", "))
}

type holding int

const (
	holdsAll  holding = iota // every total equal
	holdsNone                // nothing of it
	holdsSome                // something else
)

func holds(cs []Check) holding {
	all, none := true, true
	for _, c := range cs {
		if c.Server != c.Bundle {
			all = false
		}
		if c.Server != 0 {
			none = false
		}
	}
	switch {
	case all:
		return holdsAll
	case none:
		return holdsNone
	}
	return holdsSome
}

// empty reports whether the profile has nothing to find (every total 0:
// the server stores no profile without samples).
func empty(cs []Check) bool {
	for _, c := range cs {
		if c.Bundle != 0 {
			return false
		}
	}
	return true
}

// verifyGroupBy are the labels that tell the profiles of one capture apart.
var verifyGroupBy = []string{LabelTarget, LabelKind}

// check queries what the server holds of the capture's items: per item,
// one Check per profile type of its payload. totals are the payloads'
// totals (computed here when nil; items without are not checked). With
// wait > 0 it queries again until every item is held whole or wait has
// passed: what the server accepted may show in queries a moment later.
func (p *pusher) check(ctx context.Context, dir, capture string, items []Item, totals [][]Total, wait time.Duration) ([][]Check, error) {
	if totals == nil {
		totals = make([][]Total, len(items))
		for i, it := range items {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if pr, err := Prepare(dir, it); err == nil {
				totals[i] = pr.Totals
			} // else the push reports it
		}
	}
	var pending []int
	var start, end time.Time
	for i, ts := range totals {
		if ts == nil {
			continue
		}
		pending = append(pending, i)
		if start.IsZero() || items[i].Start.Before(start) {
			start = items[i].Start
		}
		if items[i].End.After(end) {
			end = items[i].End
		}
	}
	out := make([][]Check, len(items))
	if len(pending) == 0 {
		return out, nil
	}
	// A margin either side: profiles are filed at their start, and
	// Pyroscope rounds query ranges to its step.
	start, end = start.Add(-time.Minute), end.Add(time.Minute)
	deadline := time.Now().Add(wait)
	backoff := 250 * time.Millisecond
	for {
		types := map[string]bool{}
		for _, i := range pending {
			for _, t := range totals[i] {
				types[t.Type] = true
			}
		}
		got, err := p.storedTotals(ctx, capture, types, start, end)
		if err != nil {
			return nil, err
		}
		var still []int
		for _, i := range pending {
			k := items[i].Target + "\x00" + items[i].Kind
			cs := make([]Check, len(totals[i]))
			for j, t := range totals[i] {
				cs[j] = Check{Type: t.Type, Bundle: t.Value, Server: int64(math.Round(got[t.Type][k]))}
			}
			out[i] = cs
			if holds(cs) != holdsAll {
				still = append(still, i)
			}
		}
		pending = still
		left := time.Until(deadline)
		if len(pending) == 0 || left <= 0 {
			return out, nil
		}
		t := time.NewTimer(min(backoff, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, context.Cause(ctx)
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// storedTotals asks the server, per profile type, for the totals of the
// capture's series grouped by target and kind: one query per profile type
// (a few in flight at once), whatever the number of targets.
func (p *pusher) storedTotals(ctx context.Context, capture string, types map[string]bool, start, end time.Time) (map[string]map[string]float64, error) {
	selector := Selector(map[string]string{LabelCapture: capture})
	var (
		mu       sync.Mutex
		out      = map[string]map[string]float64{}
		firstErr error
		wg       sync.WaitGroup
		sem      = make(chan struct{}, p.concurrency)
	)
	for typeID := range types {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			got, err := p.query.Totals(ctx, typeID, selector, verifyGroupBy, start, end)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			out[typeID] = got
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("verify: %w", firstErr)
	}
	return out, nil
}
