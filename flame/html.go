package flame

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strconv"
)

//go:embed assets/flame.js
var flameJS string

//go:embed assets/flame.css
var flameCSS string

// PageHead returns the <style> and <script> a page needs once to host any
// number of graphs made by Embed. The script initialises every graph on the
// page when the document has loaded (or at once if it already has);
// window.profcapFlame.init() initialises graphs added later.
func PageHead() template.HTML {
	return template.HTML("<style>\n" + flameCSS + "</style>\n<script>\n" + flameJS + "</script>\n")
}

// validID reports whether id can name a graph: 1 to 200 characters, no
// control characters or spaces (HTML ids may not hold spaces).
func validID(id string) bool {
	if id == "" || len(id) > 200 {
		return false
	}
	for _, r := range id {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// Embed returns one graph: a container and its data as JSON in a
// <script type="application/json">. The JSON is HTML-escaped (<, >, & as
// \u003c, \u003e, \u0026), so no frame name can close the script element.
// id must be unique on the page, 1 to 200 characters without spaces or
// control characters; it is escaped here, so target names may be used.
func Embed(id string, t *Tree, opt Options) (template.HTML, error) {
	if !validID(id) {
		return "", fmt.Errorf("graph id %q: want 1 to 200 characters without spaces or control characters", id)
	}
	if t == nil {
		return "", fmt.Errorf("no tree")
	}
	var b bytes.Buffer
	eid := template.HTMLEscapeString(id)
	fmt.Fprintf(&b, "<div class=\"pcf\" data-pcf=\"%s\"></div>\n<script type=\"application/json\" id=\"%s-data\">", eid, eid)
	if err := writeJSON(&b, t, opt); err != nil {
		return "", err
	}
	b.WriteString("</script>\n")
	return template.HTML(b.String()), nil
}

// writeJSON writes the tree for the viewer: a name table, a language per
// name and the nodes in preorder, each as nameIndex, childCount, one total
// per sample type and, for a diff, one base total per sample type.
func writeJSON(w *bytes.Buffer, t *Tree, opt Options) error {
	names := []string{}
	shorts := []string{} // "" where the short name is the name
	langs := []int{}     // not []Lang: a []uint8 would marshal as base64
	idx := map[string]int{}
	var nums []byte
	var walk func(n *Node)
	walk = func(n *Node) {
		k, ok := idx[n.Name]
		if !ok {
			k = len(names)
			idx[n.Name] = k
			names = append(names, n.Name)
			short := ShortName(n.Name)
			if short == n.Name {
				short = ""
			}
			shorts = append(shorts, short)
			langs = append(langs, int(n.Lang))
		}
		nums = strconv.AppendInt(nums, int64(k), 10)
		nums = append(nums, ',')
		nums = strconv.AppendInt(nums, int64(len(n.Children)), 10)
		for _, v := range n.Total {
			nums = append(nums, ',')
			nums = strconv.AppendInt(nums, v, 10)
		}
		if t.Diff {
			for _, v := range n.Base {
				nums = append(nums, ',')
				nums = strconv.AppendInt(nums, v, 10)
			}
		}
		nums = append(nums, ',')
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(t.Root)
	nums = nums[:len(nums)-1]
	head := struct {
		Title    string      `json:"title"`
		Types    []ValueType `json:"types"`
		Sel      int         `json:"sel"`
		Diff     bool        `json:"diff"`
		Reverse  bool        `json:"reverse"`
		Icicle   bool        `json:"icicle"`
		MinWidth float64     `json:"minWidth"`
		Names    []string    `json:"names"`
		Shorts   []string    `json:"shorts"`
		Langs    []int       `json:"langs"`
		Idle     int         `json:"idle"` // name index of IdleFrame, or -1
		ShowIdle bool        `json:"showIdle"`
	}{t.Title, t.SampleTypes, t.Selected, t.Diff, opt.Reverse, opt.Icicle, opt.MinWidth, names, shorts, langs, -1, t.ShowIdle || opt.ShowIdle}
	if k, ok := idx[IdleFrame]; ok && t.Idle != nil {
		head.Idle = k
	}
	if opt.Title != "" {
		head.Title = opt.Title
	}
	// json.Marshal escapes <, >, & and U+2028/9, which keeps the data inert
	// inside <script>.
	hb, err := json.Marshal(head)
	if err != nil {
		return err
	}
	w.Write(hb[:len(hb)-1])
	w.WriteString(`,"nodes":[`)
	w.Write(nums)
	w.WriteString("]}")
	return nil
}

// shellTmpl is the frame of every HTML page profcap writes (flame graphs,
// diffs, report.html): one self-contained document. Its
// Content-Security-Policy forbids every fetch (network and file), so a page
// opened from a bundle cannot leak what it shows and works offline; only
// inline style and script run, and images only from data: URLs.
var shellTmpl = lazyTemplate("shell", `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>{{.Title}}</title>
{{.Head}}{{with .Style}}<style>
{{.}}
</style>
{{end}}</head>
<body>
{{.Body}}</body>
</html>
`)

// Page is one standalone page in profcap's page shell.
type Page struct {
	Title string
	// Style is the page's own style sheet, after the graphs' (PageHead);
	// it may be empty.
	Style template.CSS
	// Body is the content of <body>; any number of graphs made by Embed
	// may be in it.
	Body template.HTML
}

// WritePage writes p as a self-contained HTML document: the shell every
// page profcap writes shares, with the style and script of the graphs
// (PageHead) in its head. The page loads nothing from the network (its
// Content-Security-Policy forbids it).
func WritePage(w io.Writer, p Page) error {
	return shellTmpl.get().Execute(w, struct {
		Page
		Head template.HTML
	}{p, PageHead()})
}

// WriteHTML writes a standalone page with one interactive graph.
func WriteHTML(w io.Writer, t *Tree, opt Options) error {
	g, err := Embed("flame", t, opt)
	if err != nil {
		return err
	}
	title := t.Title
	if opt.Title != "" {
		title = opt.Title
	}
	return WritePage(w, Page{Title: title, Style: "body{margin:8px 12px}", Body: g})
}

// A Section is one graph of a page that holds several (WriteHTMLPage).
type Section struct {
	// Name heads the section and names it in the page's links, e.g. the
	// kind of profile.
	Name    string
	Tree    *Tree
	Options Options
}

var sectionsTmpl = lazyTemplate("sections", `<h1>{{.Title}}</h1>
<nav>{{range .Graphs}}<a href="#{{.ID}}-sec">{{.Name}}</a>{{end}}</nav>
{{range .Graphs}}<section id="{{.ID}}-sec"><h2>{{.Name}}</h2>
{{.HTML}}</section>
{{end}}`)

const sectionsStyle = "body{margin:8px 12px;font-family:system-ui,sans-serif}h1{font-size:18px}h2{font-size:16px}nav a{margin-right:1em}"

// WriteHTMLPage writes a standalone page titled title with one interactive
// graph per section, under its own heading, and links to every section at
// the top.
func WriteHTMLPage(w io.Writer, title string, secs []Section) error {
	type graph struct {
		ID, Name string
		HTML     template.HTML
	}
	gs := make([]graph, 0, len(secs))
	for i, s := range secs {
		id := fmt.Sprintf("g%d", i)
		h, err := Embed(id, s.Tree, s.Options)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		gs = append(gs, graph{ID: id, Name: s.Name, HTML: h})
	}
	var body bytes.Buffer
	if err := sectionsTmpl.get().Execute(&body, struct {
		Title  string
		Graphs []graph
	}{title, gs}); err != nil {
		return err
	}
	return WritePage(w, Page{Title: title, Style: sectionsStyle, Body: template.HTML(body.String())})
}
