package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/formats"
	"github.com/profcap/profcap/pyroscope"
	"github.com/profcap/profcap/targets"
)

const pushExamples = `
Examples:
  # A local Pyroscope, no auth
  profcap push ./profcap-20261128T010554Z-orchestration-1 --server http://127.0.0.1:4040

  # Grafana Cloud: user and token from the environment, never on the command line
  export PROFCAP_PYROSCOPE_USER=123456
  export PROFCAP_PYROSCOPE_PASSWORD=glc_...
  profcap push ./capture --server https://profiles-prod-001.grafana.net

  # Bearer token from a file, a multi-tenant Pyroscope
  profcap push ./capture --server https://pyroscope.internal --token-file /run/secrets/pyroscope --tenant team-a

  # Query every profile back and compare its totals with the bundle's;
  # send again what the server no longer holds (a restart without its data)
  profcap push ./capture --server http://127.0.0.1:4040 --verify

  # What would be sent, without contacting anything
  profcap push ./capture --dry-run

A push that fails part-way says which profiles did not go; run the same
command again and only those are sent (pushed.json in the bundle records
what went where, and what was verified). --force sends everything again.
`

// Inputs written pyroscope:URL (profcap flame, diff, convert) are queries
// of a Pyroscope server.
func init() { formats.Schemes[pyroscope.Scheme] = pyroscope.OpenQuery }

func runPush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("push", pflag.ContinueOnError)
	server := fs.String("server", os.Getenv(pyroscope.EnvServer), "Pyroscope base URL, e.g. http://127.0.0.1:4040 (default $"+pyroscope.EnvServer+")")
	tokenEnv := fs.String("token-env", pyroscope.EnvToken, "environment variable holding a bearer token")
	tokenFile := fs.String("token-file", "", "file holding a bearer token")
	user := fs.String("user", "", "basic auth user name (default $"+pyroscope.EnvUser+")")
	passwordEnv := fs.String("password-env", pyroscope.EnvPassword, "environment variable holding the basic auth password")
	passwordFile := fs.String("password-file", "", "file holding the basic auth password")
	tenant := fs.String("tenant", "", "tenant sent as X-Scope-OrgID (default $"+pyroscope.EnvTenant+")")
	caFile := fs.String("ca-file", "", "PEM CA certificates to verify the server with")
	insecure := fs.Bool("insecure-skip-verify", false, "do not verify the server's certificate")
	force := fs.Bool("force", false, "send profiles pushed.json says already went to this server")
	dryRun := fs.Bool("dry-run", false, "show what would be sent, without contacting the server")
	verify := fs.Bool("verify", false, "query the server back and compare each profile's totals with the bundle's; what it already holds is not sent, what it no longer holds is sent again")
	concurrency := fs.Int("concurrency", pyroscope.DefaultConcurrency, "profiles in flight at once")
	timeout := fs.Duration("timeout", pyroscope.DefaultTimeout, "longest single request")
	quiet := fs.Bool("quiet", false, "print only errors and the summary")
	if done, err := parseArgs(fs, args, stdout, func(w io.Writer) {
		fmt.Fprintf(w, "Usage: profcap push BUNDLE [--server URL] [flags]\n\nSend every target's profiles of a bundle to Grafana Pyroscope (the merged ones are\nleft out: they would count every sample twice). See docs/pyroscope.md.\n\nFlags:\n%s%s", fs.FlagUsages(), pushExamples)
	}); done || err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("push takes one bundle directory (got %d arguments); see profcap push --help", fs.NArg())
	}
	dir := fs.Arg(0)
	if *server == "" && !*dryRun {
		return usageError("--server is required (or set %s)", pyroscope.EnvServer)
	}
	if *server != "" {
		if err := pyroscope.ValidateServer(*server); err != nil {
			return usageError("--server: %v", err)
		}
	}
	if *concurrency < 1 {
		return usageError("--concurrency must be at least 1")
	}
	if *timeout <= 0 {
		return usageError("--timeout must be positive")
	}
	// An environment variable named explicitly must be set; the defaults
	// are optional (no credentials).
	for _, f := range []struct{ flag, env string }{{"token-env", *tokenEnv}, {"password-env", *passwordEnv}} {
		if fs.Changed(f.flag) && os.Getenv(f.env) == "" {
			return usageError("--%s: environment variable %s is not set", f.flag, f.env)
		}
	}
	src := pyroscope.CredentialSource{
		TokenEnv: *tokenEnv, TokenFile: *tokenFile,
		Username: *user, UsernameEnv: pyroscope.EnvUser,
		PasswordEnv: *passwordEnv, PasswordFile: *passwordFile,
		Tenant: *tenant, TenantEnv: pyroscope.EnvTenant,
	}
	if *tokenFile != "" {
		src.TokenEnv = ""
	}
	if *passwordFile != "" {
		src.PasswordEnv = ""
	}
	creds, err := src.Resolve()
	if err != nil {
		return fmt.Errorf("pyroscope credentials: %w", err)
	}
	if u, err := url.Parse(*server); err == nil && u.User != nil {
		fmt.Fprintf(stderr, "profcap: warning: credentials in --server show in the process list and shell history; prefer %s/%s\n", pyroscope.EnvUser, pyroscope.EnvPassword)
	}

	m, err := bundle.Read(dir)
	if err != nil {
		return err
	}
	opts := pyroscope.Options{
		Server:      *server,
		Credentials: creds,
		Force:       *force,
		DryRun:      *dryRun,
		Verify:      *verify && !*dryRun,
		Concurrency: *concurrency,
		Timeout:     *timeout,
		UserAgent:   "profcap/" + strings.Fields(versionInfo() + " devel")[0],
	}
	if *caFile != "" || *insecure {
		t := &targets.Target{Name: "pyroscope", TLS: &targets.TLS{CAFile: *caFile, InsecureSkipVerify: *insecure}}
		hc, err := t.HTTPClient(nil)
		if err != nil {
			return err
		}
		opts.HTTPClient = hc
	}
	if *dryRun {
		opts.Progress = func(r pyroscope.Result) { printDryRun(stdout, r) }
	} else if !*quiet {
		opts.Progress = func(r pyroscope.Result) { printPushed(stdout, r) }
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := pyroscope.Push(ctx, dir, opts)
	if rep == nil {
		return err
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(stderr, "profcap: note: %s\n", n)
	}
	if rep.StateErr != nil {
		fmt.Fprintf(stderr, "profcap: warning: could not record what was pushed (%v); a re-run will send those profiles again\n", rep.StateErr)
	}
	summary(stdout, m, rep, *dryRun)
	return err
}

// cannotQuery reports whether err says the server could not be queried
// (record --push then pushes without verifying).
func cannotQuery(err error) bool {
	var qe *pyroscope.QueryError
	return errors.As(err, &qe)
}

func timeRange(it pyroscope.Item) string {
	return fmt.Sprintf("%s..%s (%s)", it.Start.UTC().Format(bundle.TimeFormat), it.End.UTC().Format(bundle.TimeFormat), it.End.Sub(it.Start).Round(time.Millisecond))
}

func printDryRun(w io.Writer, r pyroscope.Result) {
	switch r.Status {
	case pyroscope.StatusSkipped:
		fmt.Fprintf(w, "skip  %s %s: already pushed to this server (--force sends it again)\n", r.Target, r.Kind)
	case pyroscope.StatusFailed:
		fmt.Fprintf(w, "FAIL  %s %s: %v\n", r.Target, r.Kind, r.Err)
	default:
		fmt.Fprintf(w, "push  %s %s %s %s %s %d bytes\n", r.Target, r.Kind, r.Name, r.LabelString(), timeRange(r.Item), r.Bytes)
	}
}

func printPushed(w io.Writer, r pyroscope.Result) {
	switch r.Status {
	case pyroscope.StatusPushed:
		var notes []string
		if r.Tries > 1 {
			notes = append(notes, fmt.Sprintf("after %d tries", r.Tries))
		}
		if r.Resent {
			notes = append(notes, "again: the server no longer held it")
		}
		if r.Verified {
			notes = append(notes, "verified: "+checks(r.Checks))
		}
		fmt.Fprintf(w, "pushed   %s %s (%s, %s)%s\n", r.Target, r.Kind, r.Name, humanSize(int64(r.Bytes)), joinNotes(notes))
	case pyroscope.StatusSkipped:
		note := ""
		if r.Verified {
			note = ", verified: " + checks(r.Checks)
		}
		fmt.Fprintf(w, "skipped  %s %s (already pushed%s)\n", r.Target, r.Kind, note)
	case pyroscope.StatusStored:
		fmt.Fprintf(w, "stored   %s %s (the server already holds it: %s)\n", r.Target, r.Kind, checks(r.Checks))
	case pyroscope.StatusFailed:
		fmt.Fprintf(w, "FAILED   %s %s: %v\n", r.Target, r.Kind, r.Err)
	}
}

func joinNotes(notes []string) string {
	if len(notes) == 0 {
		return ""
	}
	return " " + strings.Join(notes, "; ")
}

// checks shows the totals a verification compared, main type first:
// "process_cpu:cpu:nanoseconds:cpu:nanoseconds 1030000000 = server, 1 more".
func checks(cs []pyroscope.Check) string {
	if len(cs) == 0 {
		return "nothing to compare (no samples)"
	}
	c := cs[len(cs)-1]
	s := fmt.Sprintf("%s %d = server", c.Type, c.Bundle)
	if len(cs) > 1 {
		s += fmt.Sprintf(", and %d more type(s)", len(cs)-1)
	}
	return s
}

// summary prints the counts and the Grafana query that finds the capture.
func summary(w io.Writer, m *bundle.Manifest, rep *pyroscope.Report, dryRun bool) {
	if len(rep.Results) == 0 {
		fmt.Fprintf(w, "nothing to push: no target profile of %s has status ok or partial\n", m.ID)
		return
	}
	verb, n := "pushed", rep.Count(pyroscope.StatusPushed)
	if dryRun {
		verb, n = "would push", rep.Count(pyroscope.StatusDryRun)
	}
	dest := ""
	if rep.Server != "" {
		dest = " to " + rep.Server
		if rep.Tenant != "" {
			dest += " (tenant " + rep.Tenant + ")"
		}
	}
	fmt.Fprintf(w, "%s %d of %d profiles%s", verb, n, len(rep.Results), dest)
	if s := rep.Count(pyroscope.StatusSkipped) + rep.Count(pyroscope.StatusStored); s > 0 {
		fmt.Fprintf(w, ", %d already there", s)
	}
	if n := rep.Resent(); n > 0 {
		fmt.Fprintf(w, ", %d sent again (the server no longer held them)", n)
	}
	if n := rep.Verified(); n > 0 {
		fmt.Fprintf(w, ", %d verified (the server's totals equal the bundle's)", n)
	}
	if f := rep.Count(pyroscope.StatusFailed) + rep.Count(pyroscope.StatusNotTried); f > 0 {
		fmt.Fprintf(w, ", %d did not go", f)
	}
	fmt.Fprintln(w)
	services := map[string]bool{}
	for _, r := range rep.Results {
		for _, l := range r.Labels {
			if l.Name == pyroscope.LabelServiceName {
				services[l.Value] = true
			}
		}
	}
	if len(services) == 0 || (!dryRun && rep.Count(pyroscope.StatusPushed)+rep.Count(pyroscope.StatusSkipped)+rep.Count(pyroscope.StatusStored) == 0) {
		return
	}
	var names []string
	for s := range services {
		names = append(names, s)
	}
	sort.Strings(names)
	sel := fmt.Sprintf(`{%s=%q, %s=%q}`, pyroscope.LabelServiceName, names[0], pyroscope.LabelCapture, m.ID)
	fmt.Fprintf(w, "query in Grafana: %s (services: %s), time range %s to %s\n", sel, strings.Join(names, ", "), m.Window.Start, m.Window.End)
}
