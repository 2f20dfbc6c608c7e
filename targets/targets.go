// Package targets resolves what a capture attaches to: a targets file
// (profcap.yaml), a .pids/ directory as the reference cluster's scripts
// write it, or ad-hoc --url and --pid flags.
package targets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Target is one service to profile.
type Target struct {
	Name         string            `yaml:"name"`
	Pprof        string            `yaml:"pprof,omitempty"`         // pprof base URL, e.g. http://127.0.0.1:6060/debug/pprof
	PID          int               `yaml:"pid,omitempty"`           // process to profile with perf/samply
	PIDFile      string            `yaml:"pidfile,omitempty"`       // file holding the PID (relative to the targets file)
	TokioConsole string            `yaml:"tokio_console,omitempty"` // console-subscriber gRPC address, host:port
	Labels       map[string]string `yaml:"labels,omitempty"`
	Auth         *Auth             `yaml:"auth,omitempty"`
	TLS          *TLS              `yaml:"tls,omitempty"`

	// TokioTaskdump is a tokio task-dump URL (text, as the reference
	// service's /debug/tokio/dump), e.g. http://127.0.0.1:8080/debug/tokio/dump.
	TokioTaskdump string `yaml:"tokio_taskdump,omitempty"`

	// Source says where the target came from, for messages.
	Source string `yaml:"-"`
}

// Config is a parsed targets file.
type Config struct {
	// Defaults apply to every target that does not set its own.
	Defaults Defaults `yaml:"defaults,omitempty"`
	Targets  []Target `yaml:"targets"`
	Path     string   `yaml:"-"`
}

// Defaults are settings shared by every target of a targets file.
type Defaults struct {
	Auth   *Auth             `yaml:"auth,omitempty"`
	TLS    *TLS              `yaml:"tls,omitempty"`
	Labels map[string]string `yaml:"labels,omitempty"`
}

// DefaultConfig is the targets file read when --config is not given.
const DefaultConfig = "profcap.yaml"

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidName reports whether name may be used as a target name: it becomes a
// directory name inside the bundle, so it is restricted to a safe alphabet.
func ValidName(name string) bool { return nameRE.MatchString(name) && name != "." && name != ".." }

// SafeName maps any string onto a valid target name, so that no name can
// leave the bundle directory (e.g. "../../x" becomes "x").
func SafeName(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.Trim(b.String(), "._")
	if len(s) > 128 {
		s = s[:128]
	}
	if s == "" {
		s = "target"
	}
	return s
}

// Load reads a targets file.
func Load(file string) (*Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	cfg.Path = file
	dir := filepath.Dir(file)
	for i := range cfg.Targets {
		t := &cfg.Targets[i]
		t.Source = file
		if t.PIDFile != "" && !filepath.IsAbs(t.PIDFile) {
			t.PIDFile = filepath.Join(dir, t.PIDFile)
		}
		rel := func(p *string) {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(dir, *p)
			}
		}
		if t.Auth != nil {
			a := *t.Auth
			rel(&a.BearerTokenFile)
			rel(&a.PasswordFile)
			t.Auth = &a
		}
		if t.TLS != nil {
			c := *t.TLS
			rel(&c.CAFile)
			rel(&c.CertFile)
			rel(&c.KeyFile)
			t.TLS = &c
		}
	}
	return cfg, nil
}

// Parse parses and validates the YAML of a targets file.
func Parse(data []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty targets file: expected a 'targets:' list")
		}
		return nil, fmt.Errorf("not a valid targets file: %v", err)
	}
	if err := cfg.Defaults.Auth.validate(); err != nil {
		return nil, fmt.Errorf("defaults: %v", err)
	}
	if err := cfg.Defaults.TLS.validate(); err != nil {
		return nil, fmt.Errorf("defaults: %v", err)
	}
	seen := map[string]bool{}
	for i := range cfg.Targets {
		t := &cfg.Targets[i]
		if t.Auth == nil {
			t.Auth = cfg.Defaults.Auth
		}
		if t.TLS == nil {
			t.TLS = cfg.Defaults.TLS
		}
		for k, v := range cfg.Defaults.Labels {
			if _, ok := t.Labels[k]; !ok {
				if t.Labels == nil {
					t.Labels = map[string]string{}
				}
				t.Labels[k] = v
			}
		}
		if t.Name == "" {
			return nil, fmt.Errorf("targets[%d]: missing name", i)
		}
		if !ValidName(t.Name) {
			return nil, fmt.Errorf("targets[%d]: invalid name %q: use letters, digits, '.', '_' and '-'", i, t.Name)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("targets[%d]: duplicate name %q", i, t.Name)
		}
		seen[t.Name] = true
		if t.Pprof == "" && t.PID == 0 && t.PIDFile == "" && t.TokioConsole == "" && t.TokioTaskdump == "" {
			return nil, fmt.Errorf("target %q: nothing to attach to: give pprof, pid, pidfile, tokio_console or tokio_taskdump", t.Name)
		}
		if t.PID < 0 {
			return nil, fmt.Errorf("target %q: invalid pid %d", t.Name, t.PID)
		}
		if t.Pprof != "" {
			if err := checkURL(t.Pprof); err != nil {
				return nil, fmt.Errorf("target %q: pprof: %v", t.Name, err)
			}
		}
		if t.TokioTaskdump != "" {
			if err := checkURL(t.TokioTaskdump); err != nil {
				return nil, fmt.Errorf("target %q: tokio_taskdump: %v", t.Name, err)
			}
		}
		for k := range t.Labels {
			if k == "" || k == "target" {
				return nil, fmt.Errorf("target %q: label name %q is reserved", t.Name, k)
			}
		}
		if err := t.Auth.validate(); err != nil {
			return nil, fmt.Errorf("target %q: %v", t.Name, err)
		}
		if err := t.TLS.validate(); err != nil {
			return nil, fmt.Errorf("target %q: %v", t.Name, err)
		}
	}
	return &cfg, nil
}

func checkURL(u string) error {
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return fmt.Errorf("%q is not an http(s) URL", u)
	}
	return nil
}

// FromPidsDir lists the targets named by NAME.pid files in dir (the .pids/
// layout of the reference cluster). It returns nil, nil if dir does not exist.
func FromPidsDir(dir string) ([]Target, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ts []Target
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".pid")
		if !ok || e.IsDir() || !ValidName(name) {
			continue
		}
		ts = append(ts, Target{Name: name, PIDFile: filepath.Join(dir, e.Name()), Source: dir})
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	return ts, nil
}

// ResolvePID returns the target's PID, reading its PID file if it has one.
// It returns 0, nil for a target with neither.
func (t *Target) ResolvePID() (int, error) {
	if t.PID != 0 {
		return t.PID, nil
	}
	if t.PIDFile == "" {
		return 0, nil
	}
	data, err := os.ReadFile(t.PIDFile)
	if err != nil {
		return 0, fmt.Errorf("reading pid file: %w", err)
	}
	s := strings.TrimSpace(string(data))
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: %q is not a process id", t.PIDFile, truncate(s, 40))
	}
	return pid, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// HasPID reports whether the target names a process (by pid or pid file).
func (t *Target) HasPID() bool { return t.PID != 0 || t.PIDFile != "" }

// Select returns the targets whose names match any of the shell-style
// patterns, in the order of all. Every pattern must match something.
func Select(all []Target, patterns []string) ([]Target, error) {
	if len(patterns) == 0 {
		return all, nil
	}
	picked := make([]bool, len(all))
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("bad --target pattern %q: %v", p, err)
		}
		n := 0
		for i, t := range all {
			if ok, _ := path.Match(p, t.Name); ok {
				picked[i] = true
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("no target matches %q (known: %s)", p, names(all))
		}
	}
	var out []Target
	for i, t := range all {
		if picked[i] {
			out = append(out, t)
		}
	}
	return out, nil
}

func names(ts []Target) string {
	if len(ts) == 0 {
		return "none"
	}
	var ns []string
	for _, t := range ts {
		ns = append(ns, t.Name)
	}
	if len(ns) > 12 {
		ns = append(ns[:12], fmt.Sprintf("and %d more", len(ns)-12))
	}
	return strings.Join(ns, ", ")
}

// Selection says which targets a command attaches to: what the --config,
// --target, --all, --url and --pid flags of record and targets give.
type Selection struct {
	// Config is the targets file; DefaultConfig when empty.
	Config string
	// ConfigExplicit is set when the user named Config (--config): then a
	// missing or broken file is an error, never a reason to look elsewhere.
	ConfigExplicit bool
	// Names are target names or shell patterns ('worker-*'); every one must
	// match a target of the file or the .pids/ directory.
	Names []string
	// All picks every target of the file or the .pids/ directory.
	All bool
	// URLs and PIDs are ad-hoc targets: pprof base URLs and process ids.
	URLs []string
	PIDs []int
	// Require makes an empty or ambiguous selection an error: a file of
	// several targets needs Names or All, and no target at all is an error
	// saying how to name one (record). Without it every target of the file
	// is taken (targets lists them).
	Require bool
	// PidsDir is where NAME.pid files name targets when there is no targets
	// file; ".pids" (of the working directory) when empty.
	PidsDir string
}

// UsageError is a selection the user has to change (a bad --url or --pid, a
// pattern that matches nothing, a missing --config file): a command-line
// mistake, not a failure of the machine.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usageErrorf(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// Resolve returns the selected targets and where they came from (the
// targets file, ".pids/" or "flags"). With no targets file (and none named)
// the .pids/ directory names them. Ad-hoc targets come after the picked
// ones; a name used twice gets a -2, -3 ... suffix. Mistakes in the
// selection are *UsageError; a targets file that cannot be read or parsed
// is returned as is.
func Resolve(sel Selection) ([]Target, string, error) {
	config := sel.Config
	if config == "" {
		config = DefaultConfig
	}
	pidsDir := sel.PidsDir
	if pidsDir == "" {
		pidsDir = ".pids"
	}
	var adhoc []Target
	for _, u := range sel.URLs {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return nil, "", usageErrorf("--url %q: not an http(s) URL", u)
		}
		adhoc = append(adhoc, Target{Name: SafeName(pu.Host), Pprof: u, Source: "--url"})
	}
	for _, pid := range sel.PIDs {
		if pid <= 0 {
			return nil, "", usageErrorf("--pid %d: not a process id", pid)
		}
		adhoc = append(adhoc, Target{Name: fmt.Sprintf("pid-%d", pid), PID: pid, Source: "--pid"})
	}

	var pool []Target
	source := ""
	cfg, err := Load(config)
	switch {
	case err == nil:
		pool, source = cfg.Targets, config
	case errors.Is(err, os.ErrNotExist) && !sel.ConfigExplicit:
		// No targets file: the reference cluster's .pids/ layout.
		ts, perr := FromPidsDir(pidsDir)
		if perr != nil {
			return nil, "", perr
		}
		if ts != nil {
			pool, source = ts, pidsDir+"/"
		}
	case errors.Is(err, os.ErrNotExist):
		return nil, "", usageErrorf("targets file %s does not exist", config)
	default:
		// A broken default file does not stop ad-hoc targets.
		if len(adhoc) == 0 || sel.ConfigExplicit {
			return nil, "", err
		}
	}

	var picked []Target
	switch {
	case sel.All:
		picked = pool
	case len(sel.Names) > 0:
		if len(pool) == 0 {
			return nil, "", usageErrorf("--target needs a targets file (%s) or a %s/ directory here; use --url or --pid for ad-hoc targets", config, pidsDir)
		}
		picked, err = Select(pool, sel.Names)
		if err != nil {
			return nil, "", &UsageError{Err: err}
		}
	case len(adhoc) == 0 && len(pool) == 1:
		picked = pool
	case len(adhoc) == 0 && len(pool) > 1 && sel.Require:
		return nil, "", usageErrorf("%d targets in %s: pick some with --target NAME (globs allowed) or --all", len(pool), source)
	case len(adhoc) == 0 && !sel.Require:
		picked = pool
	}
	all := append(picked, adhoc...)
	// Ad-hoc names must not collide with each other or with file targets.
	seen := map[string]int{}
	for i := range all {
		n := all[i].Name
		if seen[n] > 0 {
			all[i].Name = fmt.Sprintf("%s-%d", n, seen[n]+1)
		}
		seen[n]++
	}
	if len(all) == 0 {
		if sel.Require {
			return nil, "", usageErrorf("no targets: give --target NAME with a %s or %s/ here, or --url URL, or --pid PID", DefaultConfig, pidsDir)
		}
		return nil, "", usageErrorf("no targets: no %s or %s/ here; give --config FILE, --url or --pid", DefaultConfig, pidsDir)
	}
	if source == "" {
		source = "flags"
	}
	return all, source, nil
}
