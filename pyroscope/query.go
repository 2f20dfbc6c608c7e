package pyroscope

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
	querierv1 "github.com/grafana/pyroscope/api/gen/proto/go/querier/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/querier/v1/querierv1connect"
	typesv1 "github.com/grafana/pyroscope/api/gen/proto/go/types/v1"
)

// ClientOptions configure a Client.
type ClientOptions struct {
	Server      string // base URL, as Options.Server
	Credentials Credentials
	HTTPClient  *http.Client
	UserAgent   string
	Tries       int // attempts per request; 0 means DefaultTries
	MinBackoff  time.Duration
	MaxBackoff  time.Duration
	Timeout     time.Duration // one request; 0 means DefaultTimeout
}

// Client reads from a Pyroscope server through its query API
// (querier.v1.QuerierService over connect, on the HTTP port), the API
// Grafana's Pyroscope data source uses.
type Client struct {
	*conn
	q querierv1connect.QuerierServiceClient
}

// NewClient returns a client of the server in opts; it contacts nothing yet.
func NewClient(opts ClientOptions) (*Client, error) {
	c, err := newConn(connOptions(opts))
	if err != nil {
		return nil, err
	}
	return newClient(c), nil
}

func newClient(c *conn) *Client {
	return &Client{conn: c, q: querierv1connect.NewQuerierServiceClient(c.hc, c.server)}
}

// Server returns the server's base URL, without credentials.
func (c *Client) Server() string { return c.server }

// Info asks the server for its build and start time (either may be
// unknown).
func (c *Client) Info(ctx context.Context) ServerInfo { return c.info(ctx) }

// QueryError is a query the server did not answer: with an *AuthError
// inside, the credentials may push but not read.
type QueryError struct {
	Server string
	What   string // the query
	Err    error
}

func (e *QueryError) Error() string {
	return fmt.Sprintf("querying %s (%s): %v", e.Server, e.What, e.Err)
}
func (e *QueryError) Unwrap() error { return e.Err }

func (c *Client) call(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	_, err := c.retry(ctx, "/querier.v1.QuerierService (the query API)", fn)
	if err != nil && ctx.Err() == nil {
		return &QueryError{Server: c.server, What: what, Err: err}
	}
	return err
}

// Totals returns the sum of the values of profile type typeID in the
// series matching selector with a profile in [start, end], one sum per
// combination of the groupBy labels' values (joined with "\x00" in the
// order of groupBy; "" without groupBy).
func (c *Client) Totals(ctx context.Context, typeID, selector string, groupBy []string, start, end time.Time) (map[string]float64, error) {
	if !end.After(start) {
		end = start.Add(time.Millisecond)
	}
	// A step as long as the range: one point per series, or a few when
	// the step's alignment cuts the range (they are added). A longer step
	// gives none at all (Pyroscope v1.21).
	step := max(1, math.Floor(end.Sub(start).Seconds()))
	req := &querierv1.SelectSeriesRequest{
		ProfileTypeID: typeID,
		LabelSelector: selector,
		Start:         start.UnixMilli(),
		End:           end.UnixMilli(),
		GroupBy:       groupBy,
		Step:          step,
	}
	var resp *connect.Response[querierv1.SelectSeriesResponse]
	err := c.call(ctx, "SelectSeries "+typeID+" "+selector, func(ctx context.Context) (err error) {
		resp, err = c.q.SelectSeries(ctx, connect.NewRequest(req))
		return err
	})
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, s := range resp.Msg.Series {
		vals := make([]string, len(groupBy))
		for i, g := range groupBy {
			for _, l := range s.Labels {
				if l.Name == g {
					vals[i] = l.Value
				}
			}
		}
		k := strings.Join(vals, "\x00")
		for _, p := range s.Points {
			out[k] += p.Value
		}
	}
	return out, nil
}

// MergeProfile returns the profiles of type typeID in the series matching
// selector in [start, end], merged by the server into one pprof profile
// with that one sample type (nil when nothing matched).
func (c *Client) MergeProfile(ctx context.Context, typeID, selector string, start, end time.Time) (*profile.Profile, error) {
	req := &querierv1.SelectMergeProfileRequest{
		ProfileTypeID: typeID,
		LabelSelector: selector,
		Start:         start.UnixMilli(),
		End:           end.UnixMilli(),
	}
	var data []byte
	err := c.call(ctx, "SelectMergeProfile "+typeID+" "+selector, func(ctx context.Context) error {
		resp, err := c.q.SelectMergeProfile(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		data, err = resp.Msg.MarshalVT()
		return err
	})
	if err != nil {
		return nil, err
	}
	p, err := profile.ParseUncompressed(data)
	if err != nil {
		return nil, fmt.Errorf("%s: SelectMergeProfile %s: %w", c.server, typeID, err)
	}
	if len(p.Sample) == 0 {
		return nil, nil
	}
	return p, nil
}

// ProfileTypes lists the profile type ids the server holds data for in
// [start, end], sorted.
func (c *Client) ProfileTypes(ctx context.Context, start, end time.Time) ([]string, error) {
	req := &querierv1.ProfileTypesRequest{Start: start.UnixMilli(), End: end.UnixMilli()}
	var resp *connect.Response[querierv1.ProfileTypesResponse]
	err := c.call(ctx, "ProfileTypes", func(ctx context.Context) (err error) {
		resp, err = c.q.ProfileTypes(ctx, connect.NewRequest(req))
		return err
	})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, pt := range resp.Msg.ProfileTypes {
		ids = append(ids, pt.ID)
	}
	sort.Strings(ids)
	return ids, nil
}

// Series lists the label sets of the series matching selector (and
// profile type typeID, when not empty) in [start, end].
func (c *Client) Series(ctx context.Context, typeID, selector string, start, end time.Time) ([]map[string]string, error) {
	matcher := selector
	if typeID != "" {
		matcher = addMatcher(selector, "__profile_type__", typeID)
	}
	req := &querierv1.SeriesRequest{Matchers: []string{matcher}, Start: start.UnixMilli(), End: end.UnixMilli()}
	var resp *connect.Response[querierv1.SeriesResponse]
	err := c.call(ctx, "Series "+matcher, func(ctx context.Context) (err error) {
		resp, err = c.q.Series(ctx, connect.NewRequest(req))
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []map[string]string
	for _, ls := range resp.Msg.LabelsSet {
		out = append(out, labelMap(ls.Labels))
	}
	return out, nil
}

func labelMap(ls []*typesv1.LabelPair) map[string]string {
	m := make(map[string]string, len(ls))
	for _, l := range ls {
		m[l.Name] = l.Value
	}
	return m
}

// Selector formats label matchers as a Pyroscope selector,
// {a="1", b="2"}, sorted by name.
func Selector(labels map[string]string) string {
	names := make([]string, 0, len(labels))
	for n := range labels {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%q", n, labels[n])
	}
	b.WriteByte('}')
	return b.String()
}

// addMatcher adds name="value" to a selector.
func addMatcher(selector, name, value string) string {
	s := strings.TrimSpace(selector)
	m := fmt.Sprintf("%s=%q", name, value)
	if s == "" || s == "{}" {
		return "{" + m + "}"
	}
	return strings.TrimSuffix(s, "}") + ", " + m + "}"
}
