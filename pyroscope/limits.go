package pyroscope

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// LimitError is a refusal by one of the server's limits: the ingestion
// window, the size of a profile, the number of samples or labels, the
// push rate, the number of series. Its message is the same for every
// profile it refuses (the server's own names labels and timestamps), so a
// push that meets it reports it once, naming the server setting that
// allows such profiles.
type LimitError struct {
	HTTPError        // the server's answer, message included
	Limit     string // what is limited: "ingestion window", "profile size", ...
	Setting   string // the server setting that allows it, flag and YAML key
	Hint      string // what else helps
	Value     string // the server's limit, when its message says it ("4194304", "4.0 MiB")
	quote     bool   // the server's message is the same for every profile: quote it
}

func (e *LimitError) Error() string {
	s := fmt.Sprintf("%s refuses it: %s", e.Server, e.Limit)
	if e.Value != "" {
		s += " (" + e.Value + ")"
	}
	if e.quote {
		s += "; " + e.HTTPError.Error()
	} else {
		s += fmt.Sprintf(", HTTP %d", e.Status)
	}
	s += "; the server setting that allows it is " + e.Setting
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

// Unwrap gives the server's answer.
func (e *LimitError) Unwrap() error { return &e.HTTPError }

// limitRule matches one limit's refusal in the server's message
// (pkg/validation/validate.go and the distributor's rate limiter in
// Pyroscope v1.6 to v1.21).
type limitRule struct {
	match   *regexp.Regexp
	limit   string
	setting string
	hint    string
}

var limitRules = []limitRule{
	{regexp.MustCompile(`outside of ingestion window`), "", "", ""}, // older or newer: see limitFor
	{regexp.MustCompile(`exceeds the size limit \(max_profile_size_byte.*limit: (\d+)\)`), "a profile larger than its size limit",
		"-validation.max-profile-size-bytes (limits: max_profile_size_bytes)", "the limit counts the uncompressed pprof"},
	{regexp.MustCompile(`exceeds the samples count limit \(max_profile_stacktrace_samples.*limit: (\d+)\)`), "a profile with more samples than its limit",
		"-validation.max-profile-stacktrace-samples (limits: max_profile_stacktrace_samples)", "a shorter capture has fewer distinct stacks"},
	{regexp.MustCompile(`exceeds the sample labels limit \(max_profile_stacktrace_sample_labels.*limit: (\d+)\)`), "a sample with more labels than its limit",
		"-validation.max-profile-stacktrace-sample-labels (limits: max_profile_stacktrace_sample_labels)", ""},
	{regexp.MustCompile(`has \d+ label names; limit (\d+)`), "a series with more labels than its limit (target labels, sample labels and profcap's own 6)",
		"-validation.max-label-names-per-series (limits: max_label_names_per_series)", "fewer labels on the target in the targets file"},
	{regexp.MustCompile(`label name too long`), "a label name longer than its limit",
		"-validation.max-length-label-name (limits: max_label_name_length)", ""},
	{regexp.MustCompile(`label value too long`), "a label value longer than its limit",
		"-validation.max-length-label-value (limits: max_label_value_length)", ""},
	{regexp.MustCompile(`push rate limit \(([^)]*)\) exceeded`), "pushes faster than its per-tenant rate limit",
		"-distributor.ingestion-rate-limit-mb and -distributor.ingestion-burst-size-mb (limits: ingestion_rate_mb, ingestion_burst_size_mb)",
		"push again with --concurrency 1; a profile larger than the burst size never passes"},
	{regexp.MustCompile(`(?i)maximum active series limit exceeded \((\d+/\d+)\)`), "more series than its per-tenant limit",
		"-ingester.max-global-series-per-tenant (limits: max_global_series_per_tenant)", "sample labels (task ids) each make a series"},
}

// settingOlder and settingNewer are the settings of the ingestion window.
const (
	settingOlder = "-validation.reject-older-than (limits: reject_older_than; 0 turns it off; 1h by default)"
	settingNewer = "-validation.reject-newer-than (limits: reject_newer_than; 10m by default)"
)

// limitFor returns the LimitError for a refusal of the profile starting at
// start, or nil when the message names no known limit.
func limitFor(he *HTTPError, start time.Time) *LimitError {
	if he.Status != http.StatusBadRequest && he.Status != http.StatusTooManyRequests && he.Status != http.StatusRequestEntityTooLarge {
		return nil
	}
	if he.Status == http.StatusRequestEntityTooLarge {
		return &LimitError{HTTPError: *he, Limit: "a request this large (a proxy in front of it, or its HTTP server)",
			Setting: "the proxy's body size limit (nginx: client_max_body_size)", quote: true}
	}
	for i, r := range limitRules {
		m := r.match.FindStringSubmatch(he.Message)
		if m == nil {
			continue
		}
		le := &LimitError{HTTPError: *he, Limit: r.limit, Setting: r.setting, Hint: r.hint}
		if len(m) > 1 {
			le.Value = m[1]
		}
		if i == 0 {
			if start.Before(time.Now()) {
				le.Limit = "profiles older than its ingestion window"
				le.Setting = settingOlder
				le.Hint = "push captures soon after they are taken (record --push)"
			} else {
				le.Limit = "profiles newer than its ingestion window (this machine's clock is ahead of the server's)"
				le.Setting = settingNewer
				le.Hint = "check the clocks"
			}
		}
		return le
	}
	return nil
}

// tooOld reports whether err is a refusal for being older than the
// ingestion window: every profile at least as old is refused too.
func tooOld(err error) bool {
	var le *LimitError
	return errors.As(err, &le) && strings.HasPrefix(le.Limit, "profiles older")
}
