package pyroscope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/profcap/profcap/bundle"
)

// StateFile is the push state inside a bundle: which profiles went to
// which server, so that a re-run sends only what did not go.
const StateFile = "pushed.json"

// StateSchema identifies the state file format.
const StateSchema = "profcap.pushed/v1"

// State is the content of pushed.json.
type State struct {
	Schema       string         `json:"schema"`
	Destinations []*Destination `json:"destinations"`
}

// Destination is one server (and tenant) the bundle was pushed to. Server
// is the base URL without credentials, query or fragment.
type Destination struct {
	Server string `json:"server"`
	Tenant string `json:"tenant,omitempty"`
	// ServerInfo is the server as last seen (build, start time): a server
	// that differs may not hold what this one accepted.
	ServerInfo *ServerInfo     `json:"server_info,omitempty"`
	Profiles   []PushedProfile `json:"profiles"`
}

// PushedProfile is one profile the server accepted.
type PushedProfile struct {
	ID     string `json:"id"`
	Target string `json:"target"`
	Kind   string `json:"kind"`
	Pushed string `json:"pushed"` // RFC 3339; when it was accepted (or, if it was found already stored, first seen there)
	// Verified is when the server was last queried and gave back the
	// profile's totals, Totals those totals by profile type id (the
	// bundle's, which the server's equalled). Both are empty when it was
	// never verified.
	Verified string           `json:"verified,omitempty"`
	Totals   map[string]int64 `json:"totals,omitempty"`
}

// ReadState reads the bundle's push state; a bundle never pushed has an
// empty one.
func ReadState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return &State{Schema: StateSchema}, nil
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %v", filepath.Join(dir, StateFile), err)
	}
	if s.Schema != StateSchema {
		return nil, fmt.Errorf("%s: unknown schema %q (want %q)", filepath.Join(dir, StateFile), s.Schema, StateSchema)
	}
	return &s, nil
}

// destination returns the entry for server and tenant, adding it if create.
func (s *State) destination(server, tenant string, create bool) *Destination {
	for _, d := range s.Destinations {
		if d.Server == server && d.Tenant == tenant {
			return d
		}
	}
	if !create {
		return nil
	}
	d := &Destination{Server: server, Tenant: tenant}
	s.Destinations = append(s.Destinations, d)
	return d
}

// Pushed reports whether the profile id went to server and tenant.
func (s *State) Pushed(server, tenant, id string) bool {
	return s.find(server, tenant, id) != nil
}

// find returns the record of profile id at server and tenant, or nil.
func (s *State) find(server, tenant, id string) *PushedProfile {
	d := s.destination(server, tenant, false)
	if d == nil {
		return nil
	}
	for i := range d.Profiles {
		if d.Profiles[i].ID == id {
			return &d.Profiles[i]
		}
	}
	return nil
}

// forget removes the record of profile id at server and tenant.
func (s *State) forget(server, tenant, id string) {
	d := s.destination(server, tenant, false)
	if d == nil {
		return
	}
	d.Profiles = slices.DeleteFunc(d.Profiles, func(p PushedProfile) bool { return p.ID == id })
}

func (s *State) record(server, tenant string, p PushedProfile) {
	d := s.destination(server, tenant, true)
	for i, q := range d.Profiles {
		if q.ID == p.ID {
			d.Profiles[i] = p
			return
		}
	}
	d.Profiles = append(d.Profiles, p)
}

// write writes the state atomically (temporary file, then rename) with the
// bundle's file mode.
func (s *State) write(dir string) error {
	for _, d := range s.Destinations {
		sort.SliceStable(d.Profiles, func(i, j int) bool { return d.Profiles[i].ID < d.Profiles[j].ID })
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return err
	}
	return bundle.WriteAtomic(filepath.Join(dir, StateFile), func(w io.Writer) error {
		_, err := w.Write(buf.Bytes())
		return err
	})
}

// RedactURL returns the server URL as profcap records and prints it:
// without user information (credentials), query or fragment, and without a
// trailing slash.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	u.RawQuery, u.ForceQuery = "", false
	u.Fragment, u.RawFragment = "", ""
	return strings.TrimRight(u.String(), "/")
}

// ValidateServer checks a server base URL without contacting it.
func ValidateServer(raw string) error {
	_, _, err := parseServer(raw)
	return err
}

// parseServer checks a server base URL and splits off credentials given in
// it (https://user:password@host), which are used as basic auth.
func parseServer(raw string) (base string, user *url.Userinfo, err error) {
	if raw == "" {
		return "", nil, errors.New("no Pyroscope server URL")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", nil, fmt.Errorf("invalid server URL %s: %v", RedactURL(raw), errors.Unwrap(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", nil, fmt.Errorf("server URL %s: want http:// or https://", RedactURL(raw))
	}
	if u.Host == "" {
		return "", nil, fmt.Errorf("server URL %s has no host", RedactURL(raw))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", nil, fmt.Errorf("server URL %s: give the base URL, without query or fragment", RedactURL(raw))
	}
	user = u.User
	u.User = nil
	return strings.TrimRight(u.String(), "/"), user, nil
}
