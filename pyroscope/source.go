package pyroscope

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// Scheme is the input scheme of a Pyroscope query: profcap diff and flame
// read "pyroscope:URL" as the profile the server gives for the query in
// URL (ParseQuery).
const Scheme = "pyroscope"

// Query is a Pyroscope query read as a profile: the server's merge of the
// profiles of one kind (or profile type) in the series matching the
// labels over a time range.
type Query struct {
	Server string // base URL (credentials in it are used as basic auth)
	Tenant string // X-Scope-OrgID; empty: $PROFCAP_PYROSCOPE_TENANT
	Kind   string // profcap kind, when given
	// Types are the profile type ids fetched, merged into one profile with
	// one sample type each: the kind's (KindSampleTypes), or the one
	// given as type=; Types[Main] is the profile's default.
	Types []string
	Main  int
	// Labels are the label matchers (name=value), names as Pyroscope
	// stores them (SanitizeLabelName).
	Labels   map[string]string
	From, To time.Time
}

// queryAliases are the query parameters that name profcap's labels.
var queryAliases = map[string]string{
	"service": LabelServiceName,
	"target":  LabelTarget,
	"capture": LabelCapture,
}

// ParseQuery reads the REF of an input pyroscope:REF, a URL whose query
// parameters say what to fetch:
//
//	http://127.0.0.1:4040?service=orchestration-1&kind=cpu&from=-1h&to=now
//
// service= (service_name), kind= (a profcap kind: cpu, heap, ...) or
// type= (a profile type id, e.g. goroutine:goroutine:count:goroutine:count
// for Alloy's scrapes), from= and to= (now, -1h, now-24h, RFC 3339 or Unix
// seconds or milliseconds; default the last hour), tenant=, target=
// (profcap_target), capture= (profcap_capture), and any other NAME=VALUE as
// a label matcher. now is what "now" means.
func ParseQuery(ref string, now time.Time) (*Query, error) {
	u, err := url.Parse(ref)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("pyroscope: want pyroscope:http://HOST:PORT?service=NAME&kind=KIND (got %q)", RedactURL(ref))
	}
	params := u.Query()
	u.RawQuery, u.Fragment = "", ""
	q := &Query{Server: strings.TrimRight(u.String(), "/"), Labels: map[string]string{}}
	from, to := "-1h", "now"
	names := make([]string, 0, len(params))
	for n := range params {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		vs := params[n]
		v := vs[len(vs)-1]
		if len(vs) > 1 {
			return nil, fmt.Errorf("pyroscope: %s= given %d times", n, len(vs))
		}
		switch n {
		case "kind":
			q.Kind = v
		case "type":
			if strings.Count(v, ":") != 4 {
				return nil, fmt.Errorf("pyroscope: type=%q is not a profile type id (NAME:TYPE:UNIT:PERIOD_TYPE:PERIOD_UNIT, e.g. %s)", v, DefaultTypeID("cpu"))
			}
			q.Types = []string{v}
		case "from":
			from = v
		case "to", "until":
			to = v
		case "tenant":
			q.Tenant = v
		default:
			name := n
			if a, ok := queryAliases[n]; ok {
				name = a
			}
			q.Labels[SanitizeLabelName(name)] = v
		}
	}
	if q.Kind != "" && q.Types == nil {
		types := KindSampleTypes(q.Kind)
		if types == nil {
			return nil, fmt.Errorf("pyroscope: unknown kind=%q (known: cpu, wall, offcpu, wakeup, async, heap, allocs, goroutine, mutex, block; or give type=PROFILE_TYPE_ID)", q.Kind)
		}
		for _, st := range types {
			q.Types = append(q.Types, ProfileTypeID(MetricName(q.Kind), st, periodTypes[q.Kind]))
		}
		q.Main = mainSampleType(q.Kind)
	}
	if q.Types == nil {
		return nil, errors.New("pyroscope: say what to fetch with kind=KIND (cpu, heap, ...) or type=PROFILE_TYPE_ID")
	}
	if q.From, err = parseQueryTime(from, now); err != nil {
		return nil, fmt.Errorf("pyroscope: from=%s: %w", from, err)
	}
	if q.To, err = parseQueryTime(to, now); err != nil {
		return nil, fmt.Errorf("pyroscope: to=%s: %w", to, err)
	}
	if !q.To.After(q.From) {
		return nil, fmt.Errorf("pyroscope: from=%s is not before to=%s", from, to)
	}
	return q, nil
}

// parseQueryTime reads now, now-1h, -1h, RFC 3339, or Unix seconds or
// milliseconds.
func parseQueryTime(s string, now time.Time) (time.Time, error) {
	switch {
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "now-") || strings.HasPrefix(s, "-"):
		d, err := time.ParseDuration(strings.TrimPrefix(strings.TrimPrefix(s, "now"), "-"))
		if err != nil {
			return time.Time{}, err
		}
		return now.Add(-d), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > 1e11 { // milliseconds (a date after 1973)
			return time.UnixMilli(n), nil
		}
		return time.Unix(n, 0), nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

// Selector is the query's label selector.
func (q *Query) Selector() string { return Selector(q.Labels) }

func (q *Query) String() string {
	return fmt.Sprintf("%s %s %s %s..%s", RedactURL(q.Server), q.Selector(), strings.Join(q.Types, ","), q.From.UTC().Format(time.RFC3339), q.To.UTC().Format(time.RFC3339))
}

// OpenQuery is the loader of pyroscope:REF inputs (formats.Schemes): it
// fetches the query's profile with the credentials of
// DefaultCredentialSource (the tenant= parameter wins over
// PROFCAP_PYROSCOPE_TENANT) and returns it with the query as its origin.
func OpenQuery(ctx context.Context, ref string) (*profile.Profile, string, error) {
	q, err := ParseQuery(ref, time.Now())
	if err != nil {
		return nil, "", err
	}
	creds, err := DefaultCredentialSource().Resolve()
	if err != nil {
		return nil, "", fmt.Errorf("pyroscope credentials: %w", err)
	}
	if q.Tenant != "" {
		creds.Tenant = q.Tenant
	}
	c, err := NewClient(ClientOptions{Server: q.Server, Credentials: creds, Tries: 2})
	if err != nil {
		return nil, "", err
	}
	p, err := c.Profile(ctx, q)
	if err != nil {
		return nil, "", err
	}
	return p, Scheme + ":" + q.String(), nil
}

// Profile fetches the query's profile: the server's merge of each of its
// profile types, put together into one profile with one sample type per
// profile type (in the order of q.Types, the last the default), so that it
// compares with a bundle's profile of the kind (with the same default).
func (c *Client) Profile(ctx context.Context, q *Query) (*profile.Profile, error) {
	var ps []*profile.Profile
	found := false
	for _, t := range q.Types {
		p, err := c.MergeProfile(ctx, t, q.Selector(), q.From, q.To)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
		found = found || p != nil
	}
	if !found {
		msg := fmt.Sprintf("%s holds no %s profile matching %s from %s to %s", c.server, q.Types[q.Main], q.Selector(), q.From.UTC().Format(time.RFC3339), q.To.UTC().Format(time.RFC3339))
		if ids, err := c.ProfileTypes(ctx, q.From, q.To); err == nil {
			if len(ids) == 0 {
				msg += " (it holds no profiles at all in that range)"
			} else {
				msg += " (profile types it holds then: " + strings.Join(ids, ", ") + ")"
			}
		}
		return nil, errors.New(msg)
	}
	out := combine(q.Types, ps)
	out.DefaultSampleType = out.SampleType[q.Main].Type
	out.TimeNanos = q.From.UnixNano()
	out.DurationNanos = q.To.Sub(q.From).Nanoseconds()
	out.Comments = append(out.Comments, "pyroscope query: "+q.String())
	if err := out.CheckValid(); err != nil {
		return nil, fmt.Errorf("%s: the profile it gave: %w", c.server, err)
	}
	return out, nil
}

// combine puts profiles of one sample type each (ps[i] of typeIDs[i],
// possibly nil) together into one profile with every sample type, adding
// the values of equal stacks (by function names, files and lines).
func combine(typeIDs []string, ps []*profile.Profile) *profile.Profile {
	out := &profile.Profile{}
	for _, id := range typeIDs {
		parts := strings.Split(id, ":")
		out.SampleType = append(out.SampleType, &profile.ValueType{Type: parts[1], Unit: parts[2]})
		if out.PeriodType == nil {
			out.PeriodType = &profile.ValueType{Type: parts[3], Unit: parts[4]}
		}
	}
	type fnKey struct {
		name, system, file string
		start              int64
	}
	fns := map[fnKey]*profile.Function{}
	locs := map[string]*profile.Location{}
	samples := map[string]*profile.Sample{}
	var order []string
	var key strings.Builder
	for i, p := range ps {
		if p == nil {
			continue
		}
		if out.Period == 0 {
			out.Period = p.Period
		}
		for _, s := range p.Sample {
			if len(s.Value) == 0 || s.Value[0] == 0 {
				continue
			}
			stack := make([]*profile.Location, 0, len(s.Location))
			key.Reset()
			for _, l := range s.Location {
				var lk strings.Builder
				var lines []profile.Line
				for _, ln := range l.Line {
					if ln.Function == nil {
						continue
					}
					fk := fnKey{ln.Function.Name, ln.Function.SystemName, ln.Function.Filename, ln.Function.StartLine}
					f := fns[fk]
					if f == nil {
						f = &profile.Function{ID: uint64(len(out.Function) + 1), Name: fk.name, SystemName: fk.system, Filename: fk.file, StartLine: fk.start}
						fns[fk] = f
						out.Function = append(out.Function, f)
					}
					lines = append(lines, profile.Line{Function: f, Line: ln.Line})
					fmt.Fprintf(&lk, "%d:%d;", f.ID, ln.Line)
				}
				if len(lines) == 0 {
					fmt.Fprintf(&lk, "0x%x;", l.Address)
				}
				loc := locs[lk.String()]
				if loc == nil {
					loc = &profile.Location{ID: uint64(len(out.Location) + 1), Address: l.Address, Line: lines}
					locs[lk.String()] = loc
					out.Location = append(out.Location, loc)
				}
				stack = append(stack, loc)
				fmt.Fprintf(&key, "%d,", loc.ID)
			}
			k := key.String()
			smp := samples[k]
			if smp == nil {
				smp = &profile.Sample{Location: stack, Value: make([]int64, len(typeIDs))}
				samples[k] = smp
				order = append(order, k)
			}
			smp.Value[i] += s.Value[0]
		}
	}
	for _, k := range order {
		out.Sample = append(out.Sample, samples[k])
	}
	return out
}
