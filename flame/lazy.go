package flame

import (
	"html/template"
	"regexp"
	"sync"
)

// Every command of profcap imports flame, and compiling its expressions
// and page templates when the program started was a seventh of the start
// of `profcap collapse` (which uses none of them): they compile on first
// use instead.

// lazyRegexp is a regular expression compiled on first use.
type lazyRegexp struct {
	get func() *regexp.Regexp
}

func lazyRE(expr string) *lazyRegexp {
	return &lazyRegexp{get: sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })}
}

func (l *lazyRegexp) MatchString(s string) bool { return l.get().MatchString(s) }

func (l *lazyRegexp) FindStringSubmatch(s string) []string { return l.get().FindStringSubmatch(s) }

func (l *lazyRegexp) ReplaceAllString(src, repl string) string {
	return l.get().ReplaceAllString(src, repl)
}

// lazyTmpl is an HTML template parsed on first use.
type lazyTmpl struct {
	get func() *template.Template
}

func lazyTemplate(name, text string) *lazyTmpl {
	return &lazyTmpl{get: sync.OnceValue(func() *template.Template { return template.Must(template.New(name).Parse(text)) })}
}
