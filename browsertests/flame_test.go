package browsertests

import (
	"bytes"
	"fmt"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/flame"
	"github.com/profcap/profcap/formats/folded"
	"github.com/profcap/profcap/internal/pprofutil"
)

// flameTestdata holds the flame package's fixtures (see its README).
var flameTestdata = filepath.Join("..", "flame", "testdata")

func readProfile(t testing.TB, name string) *profile.Profile {
	t.Helper()
	f, err := os.Open(filepath.Join(flameTestdata, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var p *profile.Profile
	if strings.HasSuffix(name, ".folded") {
		p, err = folded.Parse(f)
	} else {
		p, err = profile.Parse(f)
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

func foldedProfile(t testing.TB, s string) *profile.Profile {
	t.Helper()
	p, err := folded.Parse(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustTree(t testing.TB, p *profile.Profile, opt flame.Options) *flame.Tree {
	t.Helper()
	tr, err := flame.NewTree(p, opt)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// find follows the path of frame names down from n.
func find(n *flame.Node, path ...string) *flame.Node {
	for _, name := range path {
		var next *flame.Node
		for _, c := range n.Children {
			if c.Name == name {
				next = c
				break
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

type rect struct{ X, Y, W, H float64 }

// frameRect returns where graph id drew the frame named name, relative to
// its canvas, or W 0 when it is not drawn.
func (b *browser) frameRect(t testing.TB, id, name string) rect {
	t.Helper()
	js := fmt.Sprintf(`(function(){var g=document.querySelector('[data-pcf=%q]').pcfGraph,r=g.frameRect(%q);
		return r?{X:r.x,Y:r.y,W:r.w,H:r.h}:{X:0,Y:0,W:0,H:0};})()`, id, name)
	return eval[rect](t, b, js)
}

// click clicks the middle of a frame, like a user would.
func (b *browser) click(t *testing.T, id, name string) {
	t.Helper()
	r := b.frameRect(t, id, name)
	if r.W == 0 {
		t.Fatalf("graph %s: frame %q not drawn", id, name)
	}
	// Scroll the frame into the viewport, then click it in viewport coordinates.
	c := eval[rect](t, b, fmt.Sprintf(`(function(){var c=document.querySelector('[data-pcf=%q] canvas');
		window.scrollTo(0, c.getBoundingClientRect().top+window.scrollY+%f-200);
		var r=c.getBoundingClientRect();return {X:r.left,Y:r.top,W:r.width,H:r.height};})()`, id, r.Y))
	b.do(t, chromedp.MouseClickXY(c.X+r.X+r.W/2, c.Y+r.Y+r.H/2))
}

// hover moves the mouse over a frame and returns the tooltip's text.
func (b *browser) hover(t *testing.T, id, name string) string {
	t.Helper()
	r := b.frameRect(t, id, name)
	if r.W == 0 {
		t.Fatalf("graph %s: frame %q not drawn", id, name)
	}
	c := eval[rect](t, b, fmt.Sprintf(`(function(){var c=document.querySelector('[data-pcf=%q] canvas');
		window.scrollTo(0, c.getBoundingClientRect().top+window.scrollY+%f-200);
		var r=c.getBoundingClientRect();return {X:r.left,Y:r.top,W:r.width,H:r.height};})()`, id, r.Y))
	b.do(t, chromedp.MouseEvent(chromedp.MouseMoved, c.X+r.X+r.W/2, c.Y+r.Y+r.H/2))
	return b.text(t, fmt.Sprintf(`[data-pcf=%q] .pcf-tip`, id))
}

func (b *browser) attr(t *testing.T, id, name string) string {
	t.Helper()
	return eval[string](t, b, fmt.Sprintf(`document.querySelector('[data-pcf=%q]').getAttribute(%q)||''`, id, name))
}

func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	return eval[string](t, b, fmt.Sprintf(`document.querySelector(%q).textContent`, sel))
}

// search types re into graph id's search box.
func (b *browser) search(t *testing.T, id, re string) {
	t.Helper()
	sel := chromedp.CSS(fmt.Sprintf(`[data-pcf=%q] input.pcf-search`, id))
	eval[bool](t, b, fmt.Sprintf(`(function(){var e=document.querySelector(%q);e.value='';return e.dispatchEvent(new Event('input'));})()`, string(sel)))
	if re != "" {
		b.do(t, chromedp.SendKeys(sel, re))
	}
}

// outermostTotal sums the totals of name's outermost occurrences.
func outermostTotal(tr *flame.Tree, name string) int64 {
	var sum int64
	var walk func(n *flame.Node)
	walk = func(n *flame.Node) {
		if n.Name == name {
			sum += n.Total[tr.Selected]
			return
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(tr.Root)
	return sum
}

// matchShare computes, in Go, the share the page must report for re: the
// total of matching frames without a matching ancestor, over the root.
func matchShare(tr *flame.Tree, re string) string {
	rx := regexp.MustCompile(re)
	var sum int64
	var walk func(n *flame.Node)
	walk = func(n *flame.Node) {
		if rx.MatchString(n.Name) {
			sum += n.Total[tr.Selected]
			return
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	for _, c := range tr.Root.Children {
		walk(c)
	}
	return fmt.Sprintf("%.2f%%", 100*float64(sum)/float64(tr.Total(tr.Selected)))
}

func TestFlameInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Chromium")
	}
	evil := mustTree(t, readProfile(t, "evil.folded"), flame.Options{Title: `</script><img src=x onerror=alert("title")>`})
	cpu := mustTree(t, readProfile(t, "cpu.pb.gz"), flame.Options{Title: "cpu"})
	heap := mustTree(t, readProfile(t, "heap.pb.gz"), flame.Options{SampleIndex: "alloc_space"})
	dir := t.TempDir()

	// One page hosting several graphs, the way report.html embeds them.
	var multi bytes.Buffer
	multi.WriteString("<!DOCTYPE html><html><head><meta charset=utf-8><title>multi</title>")
	multi.WriteString(string(flame.PageHead()))
	multi.WriteString("</head><body>")
	for _, g := range []struct {
		id string
		t  *flame.Tree
	}{{"evil", evil}, {"cpu", cpu}} {
		h, err := flame.Embed(g.id, g.t, flame.Options{})
		if err != nil {
			t.Fatal(err)
		}
		multi.WriteString(string(h))
	}
	multi.WriteString("</body></html>")
	multiPath := writeFile(t, dir, "multi.html", multi.Bytes())

	// A standalone page.
	var single bytes.Buffer
	if err := flame.WriteHTML(&single, heap, flame.Options{}); err != nil {
		t.Fatal(err)
	}
	singlePath := writeFile(t, dir, "single.html", single.Bytes())

	b := newBrowser(t)
	b.do(t, chromedp.Navigate("file://"+multiPath))
	defer b.check(t)
	if n := eval[int](t, b, `document.querySelectorAll('canvas.pcf-canvas').length`); n != 2 {
		t.Fatalf("%d canvases, want 2; page text: %s", n, eval[string](t, b, `document.body.innerText.slice(0,300)`))
	}
	graphs := eval[int](t, b, `Array.from(document.querySelectorAll('div.pcf')).filter(function(d){return d.pcfGraph && d.querySelector('canvas').height>0}).length`)
	if graphs != 2 {
		t.Fatalf("%d graphs initialised and drawn, want 2", graphs)
	}

	t.Run("names stay text", func(t *testing.T) {
		imgs := eval[int](t, b, `document.querySelectorAll('img').length`)
		if imgs != 0 {
			t.Errorf("%d <img> elements on the page: a name was parsed as markup", imgs)
		}
		if got := b.text(t, `[data-pcf=evil] .pcf-title`); got != evil.Title {
			t.Errorf("title shown as %q, want %q", got, evil.Title)
		}
		name := "</script><img src=x onerror=alert(1)>"
		b.click(t, "evil", name)
		if got := b.attr(t, "evil", "data-focus"); got != name {
			t.Errorf("focus %q, want %q", got, name)
		}
		if crumbs := b.text(t, `[data-pcf=evil] .pcf-crumbs`); !strings.Contains(crumbs, name) {
			t.Errorf("breadcrumb %q lacks the name as text", crumbs)
		}
		b.search(t, "evil", "onerror")
		if got, want := b.attr(t, "evil", "data-match"), "30.00%"; got != want {
			t.Errorf("evil search share %q, want %q", got, want)
		}
	})

	t.Run("tooltip", func(t *testing.T) {
		tip := b.hover(t, "cpu", "main.hash")
		n := find(cpu.Root, "runtime.main", "main.main", "main.hash")
		want := "main.hash\ntotal: " + pprofutil.FormatValue(n.Total[cpu.Selected], "nanoseconds")
		if !strings.HasPrefix(tip, want) || !strings.Contains(tip, "% of all") || !strings.Contains(tip, "self: ") {
			t.Errorf("tooltip %q, want it to start %q", tip, want)
		}
		b.do(t, chromedp.Click(chromedp.CSS(`[data-pcf=evil] button.pcf-reset`)))
		tip = b.hover(t, "evil", `a<b>&"quoted" 'single'`)
		if !strings.HasPrefix(tip, `a<b>&"quoted" 'single'`+"\ntotal: 20 (20.00% of all)") {
			t.Errorf("evil tooltip %q", tip)
		}
	})

	t.Run("click zooms", func(t *testing.T) {
		before := b.frameRect(t, "cpu", "main.build")
		b.click(t, "cpu", "main.build")
		if got := b.attr(t, "cpu", "data-focus"); got != "main.build" {
			t.Fatalf("focus after click %q, want main.build", got)
		}
		after := b.frameRect(t, "cpu", "main.build")
		width := eval[float64](t, b, `document.querySelector('[data-pcf=cpu] canvas').clientWidth`)
		if after.W < width-1 || after.W <= before.W {
			t.Errorf("zoomed frame is %.1f px wide (was %.1f), want the full %.1f", after.W, before.W, width)
		}
		crumbs := b.text(t, `[data-pcf=cpu] .pcf-crumbs`)
		if !strings.Contains(crumbs, "runtime.main") || !strings.HasSuffix(crumbs, "main.build") {
			t.Errorf("breadcrumb %q, want a path ending in main.build", crumbs)
		}
		// Callers of the selected function.
		b.do(t, chromedp.Click(chromedp.CSS(`[data-pcf=cpu] button.pcf-callers`)))
		if crumbs := b.text(t, `[data-pcf=cpu] .pcf-crumbs`); !strings.HasPrefix(crumbs, "Callers of main.build") {
			t.Errorf("callers view breadcrumb %q", crumbs)
		}
		if r := b.frameRect(t, "cpu", "main.main"); r.W < width-1 {
			t.Errorf("callers view: main.main (sole caller) is %.1f px wide, want full width", r.W)
		}
		b.do(t, chromedp.Click(chromedp.CSS(`[data-pcf=cpu] button.pcf-reset`)))
		if got := b.attr(t, "cpu", "data-focus"); got != "all" {
			t.Errorf("focus after reset %q, want all", got)
		}
		// Callees of runtime.mallocgc, merged over its call sites: as wide
		// as all its occurrences together.
		b.click(t, "cpu", "runtime.mallocgc")
		b.do(t, chromedp.Click(chromedp.CSS(`[data-pcf=cpu] button.pcf-callees`)))
		if crumbs := b.text(t, `[data-pcf=cpu] .pcf-crumbs`); !strings.HasPrefix(crumbs, "Callees of runtime.mallocgc") {
			t.Errorf("callees view breadcrumb %q", crumbs)
		}
		tip := b.hover(t, "cpu", "runtime.mallocgc")
		if want := "total: " + pprofutil.FormatValue(outermostTotal(cpu, "runtime.mallocgc"), "nanoseconds"); !strings.Contains(tip, want) {
			t.Errorf("callees root tooltip %q lacks %q", tip, want)
		}
		b.do(t, chromedp.Click(chromedp.CSS(`[data-pcf=cpu] button.pcf-reset`)))
		if got := b.attr(t, "cpu", "data-focus"); got != "all" {
			t.Errorf("focus after reset %q, want all", got)
		}
	})

	t.Run("search", func(t *testing.T) {
		for _, re := range []string{`^crypto/sha256\.`, `main\.build`, `mallocgc`} {
			b.search(t, "cpu", re)
			if got, want := b.attr(t, "cpu", "data-match"), matchShare(cpu, re); got != want {
				t.Errorf("search %q: page reports %s, want %s", re, got, want)
			}
			status := b.text(t, `[data-pcf=cpu] .pcf-status`)
			if !strings.HasPrefix(status, "Matched: ") || !strings.Contains(status, "of total") {
				t.Errorf("status %q", status)
			}
		}
		// Matching frames are painted in the highlight colour.
		r := b.frameRect(t, "cpu", "runtime.mallocgc")
		js := fmt.Sprintf(`(function(){var c=document.querySelector('[data-pcf=cpu] canvas'),d=window.devicePixelRatio||1,
			p=c.getContext('2d').getImageData(Math.floor((%f+1)*d),Math.floor((%f+4)*d),1,1).data;return p[0]===230&&p[1]===0&&p[2]===230;})()`,
			r.X, r.Y)
		if !eval[bool](t, b, js) {
			t.Error("a matching frame is not highlighted")
		}
		b.search(t, "cpu", "(")
		if status := b.text(t, `[data-pcf=cpu] .pcf-status`); !strings.Contains(status, "invalid regular expression") {
			t.Errorf("bad regexp status %q", status)
		}
		b.search(t, "cpu", "")
	})

	t.Run("screenshot", func(t *testing.T) {
		buf, err := chromedp.Run(b.ctx, chromedp.Screenshot(chromedp.CSS(`[data-pcf=cpu] canvas`)))
		if err != nil {
			t.Fatal(err)
		}
		if dir := os.Getenv("FLAME_SCREENSHOT_DIR"); dir != "" {
			writeFile(t, dir, "cpu-canvas.png", buf)
		}
		img, err := png.Decode(bytes.NewReader(buf))
		if err != nil {
			t.Fatal(err)
		}
		colours := map[uint32]int{}
		bd := img.Bounds()
		for y := bd.Min.Y; y < bd.Max.Y; y += 2 {
			for x := bd.Min.X; x < bd.Max.X; x += 2 {
				r, g, bl, _ := img.At(x, y).RGBA()
				colours[r>>8<<16|g>>8<<8|bl>>8]++
			}
		}
		if len(colours) < 10 {
			t.Errorf("screenshot has %d colours: blank?", len(colours))
		}
	})

	t.Run("svg", func(t *testing.T) {
		var svg bytes.Buffer
		if err := flame.WriteSVG(&svg, evil, flame.Options{}); err != nil {
			t.Fatal(err)
		}
		path := writeFile(t, dir, "evil.svg", svg.Bytes())
		b.do(t, chromedp.Navigate("file://"+path))
		if n := eval[int](t, b, `document.querySelectorAll('rect').length`); n < 5 {
			t.Errorf("SVG shows %d rects", n)
		}
		if n := eval[int](t, b, `document.getElementsByTagName('img').length+document.getElementsByTagName('script').length`); n != 0 {
			t.Errorf("SVG has %d img/script elements from names", n)
		}
		if !eval[bool](t, b, `Array.from(document.querySelectorAll('title')).some(function(e){return e.textContent.indexOf('</script><img src=x onerror=alert(1)>')===0})`) {
			t.Error("the evil name is not a tooltip's text")
		}
	})

	t.Run("diff page", func(t *testing.T) {
		base := readProfile(t, "evil.folded")
		cur := foldedProfile(t, "main;normal;compute 90\nmain;a<b>&\"quoted\" 'single';x 10\n")
		dt, err := flame.NewDiffTree(base, cur, flame.Options{Title: "diff"})
		if err != nil {
			t.Fatal(err)
		}
		var page bytes.Buffer
		if err := flame.WriteHTML(&page, dt, flame.Options{}); err != nil {
			t.Fatal(err)
		}
		path := writeFile(t, dir, "diff.html", page.Bytes())
		b.do(t, chromedp.Navigate("file://"+path))
		tip := b.hover(t, "flame", "compute")
		for _, want := range []string{"base total: 50 (50.00%) → new 90 (90.00%)", "self share change: +40.00 percentage points"} {
			if !strings.Contains(tip, want) {
				t.Errorf("diff tooltip %q lacks %q", tip, want)
			}
		}
	})

	t.Run("standalone page", func(t *testing.T) {
		b.do(t, chromedp.Navigate("file://"+singlePath), chromedp.WaitVisible(chromedp.CSS("canvas.pcf-canvas")))
		sel := eval[string](t, b, `document.querySelector('select.pcf-type').selectedOptions[0].textContent`)
		if sel != "alloc_space (bytes)" {
			t.Errorf("sample type shown %q, want alloc_space (bytes)", sel)
		}
		b.search(t, "flame", "main\\.")
		if got, want := b.attr(t, "flame", "data-match"), matchShare(heap, "main\\."); got != want {
			t.Errorf("heap search share %s, want %s", got, want)
		}
		// Switching the sample type re-lays out without re-rendering.
		eval[bool](t, b, `(function(){var s=document.querySelector('select.pcf-type');s.value='3';return s.dispatchEvent(new Event('change'));})()`)
		if r := b.frameRect(t, "flame", "all"); r.Y == 0 {
			t.Errorf("root drawn at the top before the icicle toggle")
		}
		b.do(t, chromedp.Click(chromedp.CSS(`button.pcf-icicle`)))
		if r := b.frameRect(t, "flame", "all"); r.Y != 0 || r.W == 0 {
			t.Errorf("icicle: root at %+v, want the top row", r)
		}
		inuse := mustTree(t, readProfile(t, "heap.pb.gz"), flame.Options{SampleIndex: "inuse_space"})
		if got, want := b.attr(t, "flame", "data-match"), matchShare(inuse, "main\\."); got != want {
			t.Errorf("inuse_space search share %s, want %s", got, want)
		}
	})
}

// BenchmarkHTMLBrowser100k opens the page of a profile with 1,000,000
// samples in 100,000 distinct stacks in headless Chromium and reports how
// long loading (parse, lay out, first draw), a search over every frame, a
// zoom and a sample-type-independent redraw take.
func BenchmarkHTMLBrowser100k(b *testing.B) {
	p, err := folded.Parse(strings.NewReader(genFolded(100_000, 1_000_000)))
	if err != nil {
		b.Fatal(err)
	}
	tr, err := flame.NewTree(p, flame.Options{})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	path := filepath.Join(dir, "big.html")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := flame.WriteHTML(f, tr, flame.Options{}); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	br := newBrowser(b)
	var load, search, zoom, draw time.Duration
	var heap, heapTotal float64
	for b.Loop() {
		start := time.Now()
		if err := chromedp.Do(br.ctx, chromedp.Navigate("file://"+path)); err != nil {
			b.Fatal(err)
		}
		ms, err := chromedp.Run(br.ctx, chromedp.Evaluate[[]float64](`(function(){
			var g=document.querySelector('[data-pcf=flame]').pcfGraph, t0=performance.now();
			g.setSearch('Method1[0-9]$'); var t1=performance.now();
			var i=g.rows[3][0]; g.zoom(i); var t2=performance.now();
			g.showAll(); g.draw(); var t3=performance.now();
			return [t1-t0,t2-t1,t3-t2];})()`))
		if err != nil {
			b.Fatal(err)
		}
		load += time.Since(start)
		// The page's JavaScript heap after the load, a search, a zoom
		// and a redraw (the isolate's, as DevTools shows it).
		hu, err := chromedp.Call(br.ctx, cdpruntime.GetHeapUsage, cdp.Empty{})
		if err != nil {
			b.Fatal(err)
		}
		heap += hu.UsedSize
		heapTotal += hu.TotalSize
		search += time.Duration(ms[0] * 1e6)
		zoom += time.Duration(ms[1] * 1e6)
		draw += time.Duration(ms[2] * 1e6)
	}
	n := float64(b.N)
	b.ReportMetric(float64(load.Milliseconds())/n, "load-ms")
	b.ReportMetric(float64(search.Microseconds())/1e3/n, "search-ms")
	b.ReportMetric(float64(zoom.Microseconds())/1e3/n, "zoom-ms")
	b.ReportMetric(float64(draw.Microseconds())/1e3/n, "redraw-ms")
	b.ReportMetric(heap/n/(1<<20), "js-heap-used-MiB")
	b.ReportMetric(heapTotal/n/(1<<20), "js-heap-total-MiB")
	if st, err := os.Stat(path); err == nil {
		b.ReportMetric(float64(st.Size())/(1<<20), "page-MiB")
	}
}

// genFolded is flame/bench_test.go's generator, copied (a benchmark helper
// is no API of flame's): folded stacks with n distinct stacks and about
// total samples, 8 to 40 frames deep from 5,000 function names, with shared
// prefixes the way real programs have them. Same seed, so the page opened
// here holds the input BenchmarkWriteHTML100k renders there.
func genFolded(n int, total int) string {
	r := rand.New(rand.NewPCG(1, 2))
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("github.com/example/svc%d/pkg%d.(*Type%d).Method%d", i%7, i%53, i%211, i)
	}
	seen := make(map[string]bool, n)
	var b strings.Builder
	per := total / n
	var stack []string
	for len(seen) < n {
		depth := 8 + r.IntN(33)
		stack = stack[:0]
		for d := 0; d < depth; d++ {
			// Low depths pick from few names, so prefixes are shared.
			pool := 3 + d*d*8
			if pool > len(names) {
				pool = len(names)
			}
			stack = append(stack, names[r.IntN(pool)])
		}
		s := strings.Join(stack, ";")
		if seen[s] {
			continue
		}
		seen[s] = true
		fmt.Fprintf(&b, "%s %d\n", s, 1+r.IntN(2*per))
	}
	return b.String()
}
