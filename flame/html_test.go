package flame

import (
	"bytes"
	"html/template"
	"strings"
	"testing"
)

// shellCSP is the policy every page profcap writes carries: no fetch of
// any kind, inline style and script only.
const shellCSP = `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">`

func TestWritePageShell(t *testing.T) {
	var b bytes.Buffer
	err := WritePage(&b, Page{Title: `<b>"t"</b>`, Style: "main{margin:0}", Body: template.HTML(`<main id="x">body</main>`)})
	if err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">",
		`<meta name="viewport" content="width=device-width, initial-scale=1">`,
		shellCSP,
		"<title>&lt;b&gt;&#34;t&#34;&lt;/b&gt;</title>",
		string(PageHead()),
		"<style>\nmain{margin:0}\n</style>\n</head>",
		"<body>\n<main id=\"x\">body</main></body>\n</html>\n",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	// The page's own style comes after the graphs', so it can override them.
	if strings.Index(page, "main{margin:0}") < strings.Index(page, string(PageHead())) {
		t.Error("the page's style comes before the graphs' style")
	}
	b.Reset()
	if err := WritePage(&b, Page{Title: "x"}); err != nil || strings.Count(b.String(), "<style>") != 1 {
		t.Errorf("a page without a style of its own: %v, %d <style> elements", err, strings.Count(b.String(), "<style>"))
	}
}

func TestWriteHTMLPageSections(t *testing.T) {
	p := foldedProfile(t, "main;work 3\nmain;idle 1\n")
	secs := []Section{
		{Name: "cpu", Tree: mustTree(t, p, Options{}), Options: Options{Title: "cpu — b1"}},
		{Name: "<heap>", Tree: mustTree(t, p, Options{}), Options: Options{Title: "heap — b1"}},
	}
	var b bytes.Buffer
	if err := WriteHTMLPage(&b, "graphs & more", secs); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		shellCSP,
		"<title>graphs &amp; more</title>",
		"<h1>graphs &amp; more</h1>",
		`<nav><a href="#g0-sec">cpu</a><a href="#g1-sec">&lt;heap&gt;</a></nav>`,
		`<section id="g0-sec"><h2>cpu</h2>`,
		`<section id="g1-sec"><h2>&lt;heap&gt;</h2>`,
		`<div class="pcf" data-pcf="g0"></div>`,
		`<div class="pcf" data-pcf="g1"></div>`,
		`"title":"heap — b1"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if n := strings.Count(page, "<script>"); n != 1 {
		t.Errorf("%d copies of the viewer's script, want 1", n)
	}
	if err := WriteHTMLPage(&b, "x", []Section{{Name: "cpu"}}); err == nil {
		t.Error("a section without a tree was written")
	}
}

// TestWriteHTMLUsesTheShell: the one-graph page is the shell around one graph.
func TestWriteHTMLUsesTheShell(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHTML(&b, mustTree(t, foldedProfile(t, "a;b 1\n"), Options{}), Options{Title: "one"}); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if !strings.Contains(page, shellCSP) || !strings.Contains(page, "<title>one</title>") || !strings.Contains(page, `<div class="pcf" data-pcf="flame"></div>`) {
		t.Errorf("page:\n%.600s", page)
	}
}
