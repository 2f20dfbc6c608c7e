package golden

import (
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	a := "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\nten\n"
	b := "one\ntwo\nthree\nFOUR\nfive\nsix\nseven\neight\nnine\nten\neleven\n"
	got := Diff("want", "got", a, b)
	want := `--- want
+++ got
@@ -1,10 +1,11 @@
 one
 two
 three
-four
+FOUR
 five
 six
 seven
 eight
 nine
 ten
+eleven
`
	if got != want {
		t.Errorf("diff:\n%s\nwant:\n%s", got, want)
	}
	if Diff("a", "b", a, a) != "" {
		t.Error("equal inputs must give no diff")
	}
	far := strings.Repeat("x\n", 20)
	d := Diff("a", "b", "A\n"+far+"B\n", "a\n"+far+"b\n")
	if strings.Count(d, "@@") != 4 {
		t.Errorf("two distant changes should give two hunks:\n%s", d)
	}
}

func TestCheckAgainstFile(t *testing.T) {
	if Updating() {
		t.Skip("nothing to compare while rewriting")
	}
	Check(t, "testdata/hello.txt", "hello\n")
}
