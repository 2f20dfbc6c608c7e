package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/profcap/profcap/bundle"
)

// Did-you-mean for commands, flags and kinds: a typo names its nearest
// correct spelling instead of leaving the user to read the help.

// didYouMean is `; did you mean "x"?` for the candidate nearest to s, or ""
// when none is near (an edit distance of at most a third of its length,
// at least 1; or s is a prefix of exactly one candidate).
func didYouMean(s string, candidates []string) string {
	if n := nearestName(s, candidates); n != "" {
		return fmt.Sprintf("; did you mean %q?", n)
	}
	return ""
}

func nearestName(s string, candidates []string) string {
	best, bd := "", max(1, len(s)/3)+1
	var prefixed []string
	for _, c := range candidates {
		if c == s {
			return ""
		}
		if s != "" && strings.HasPrefix(c, s) {
			prefixed = append(prefixed, c)
		}
		if d := levenshtein(strings.ToLower(s), strings.ToLower(c)); d < bd {
			best, bd = c, d
		}
	}
	if best == "" && len(prefixed) == 1 {
		return prefixed[0]
	}
	return best
}

// levenshtein is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of neighbours cost one edit each.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			c := 1
			if ra[i-1] == rb[j-1] {
				c = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+c)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// commandNames lists the commands a user may type.
func commandNames() []string {
	var ns []string
	for n, c := range commands {
		if !c.hidden {
			ns = append(ns, n)
		}
	}
	sort.Strings(ns)
	return ns
}

// flagSuggestion is the did-you-mean for pflag's "unknown flag: --x" error.
func flagSuggestion(fs *pflag.FlagSet, err error) string {
	msg := err.Error()
	name, ok := strings.CutPrefix(msg, "unknown flag: --")
	if !ok {
		return ""
	}
	if i := strings.IndexByte(name, '='); i >= 0 {
		name = name[:i]
	}
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			names = append(names, f.Name)
		}
	})
	if n := nearestName(name, names); n != "" {
		return fmt.Sprintf("; did you mean --%s?", n)
	}
	return ""
}

// kindNames lists the kinds.
func kindNames() []string {
	var ks []string
	for _, k := range bundle.AllKinds {
		ks = append(ks, string(k))
	}
	return ks
}

// parseKinds parses kind names (each possibly comma-separated), naming
// the nearest kind for one that does not exist.
func parseKinds(flag string, names []string) ([]bundle.Kind, error) {
	var out []bundle.Kind
	for _, n := range names {
		for _, part := range strings.Split(n, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			k, ok := bundle.ParseKind(part)
			if !ok {
				return nil, fmt.Errorf("%s: unknown kind %q%s (known: %s)", flag, part, didYouMean(part, kindNames()), strings.Join(kindNames(), ","))
			}
			out = append(out, k)
		}
	}
	return out, nil
}
