package termsafe

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"main.work":                 "main.work",
		"日本語::関数":                   "日本語::関数",
		"\x1b]0;pwned\x07title":     `\x1b]0;pwned\x07title`,
		"a\x1b[2Jb":                 `a\x1b[2Jb`,
		"line\rover":                `line\rover`,
		"two\nlines\t!":             `two\nlines\t!`,
		"c1 \u009b31m csi":          `c1 \u009b31m csi`,
		"bidi \u202egnp.exe":        `bidi \u202egnp.exe`,
		"isolate \u2066x\u2069":     `isolate \u2066x\u2069`,
		"del\x7f":                   `del\x7f`,
		"bad \xff\xfe utf8":         `bad \xff\xfe utf8`,
		"<script>alert(1)</script>": "<script>alert(1)</script>", // HTML escaping is the page's job
	} {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Lines("a\x1b[1m\nb\u009b"); got != "a\\x1b[1m\nb\\u009b" {
		t.Errorf("Lines: %q", got)
	}
}

func TestCut(t *testing.T) {
	long := strings.Repeat("x", 5000)
	got := Cut(long, 100)
	if !strings.HasPrefix(got, strings.Repeat("x", 100)+"…") || !strings.Contains(got, "4900 more bytes") {
		t.Errorf("Cut: %q", got)
	}
	if Cut("short\x1b", 100) != `short\x1b` {
		t.Error("Cut must escape")
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"\x1b[2J", "\u009b", "\u202e", "\xff", "plain", "a\nb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := String(s)
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out of %q", s)
		}
		for _, r := range out {
			if needs(r) {
				t.Fatalf("control %U left in %q (from %q)", r, out, s)
			}
		}
	})
}

func TestJSON(t *testing.T) {
	in := []byte(`{"name":"a` + "\u009b\u202e\x7f" + `b","n":1}`)
	got := string(JSON(in))
	if got != `{"name":"a\u009b\u202e\u007fb","n":1}` {
		t.Errorf("JSON: %s", got)
	}
}

func TestMessage(t *testing.T) {
	got := Message("--profiles: unknown kind \""+strings.Repeat("y", 5000)+"\"\nsecond \x1b line", 200)
	if len(got) > 400 || !strings.Contains(got, "more bytes") || !strings.Contains(got, "\nsecond \\x1b line") {
		t.Errorf("Message: %q", got)
	}
}
