package flame

import (
	"github.com/profcap/profcap/internal/pprofutil"

	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

const chromium = "/usr/bin/chromium"

// browser starts a real headless Chromium with a fresh profile and collects
// console errors, exceptions, log errors and dialogs (an alert would mean a
// frame name ran as script).
type browser struct {
	ctx     context.Context
	mu      sync.Mutex
	errs    []string
	dialogs []string
}

func newBrowser(t *testing.T) *browser { return newBrowserTB(t) }

func newBrowserTB(t testing.TB) *browser {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("no Chromium at %s: %v", chromium, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(acancel)
	b := &browser{}
	var bctx context.Context
	listen := func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if typ := string(ev.Type); typ == "error" || typ == "warning" || typ == "assert" {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				b.errs = append(b.errs, "console "+typ+": "+strings.Join(parts, " "))
			}
		case *runtime.EventExceptionThrown:
			msg := ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
			b.errs = append(b.errs, "exception: "+msg)
		case *log.EventEntryAdded:
			if lv := string(ev.Entry.Level); lv == "error" || lv == "warning" {
				b.errs = append(b.errs, "log "+lv+": "+ev.Entry.Text+" "+ev.Entry.URL)
			}
		case *page.EventJavascriptDialogOpening:
			b.dialogs = append(b.dialogs, ev.Message)
			// Commands may not run inside a listener.
			go chromedp.Do(bctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := cdp.Call(ctx, tg, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{})
				return err
			}))
		}
	}
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithListener(listen))
	t.Cleanup(bcancel)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	b.ctx = bctx
	return b
}

func (b *browser) check(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errs {
		if strings.Contains(e, "favicon") {
			continue
		}
		t.Errorf("browser reported: %s", e)
	}
	for _, d := range b.dialogs {
		t.Errorf("a dialog opened (markup in a name ran as script?): %q", d)
	}
}

// eval runs js in the page. A generous per-call bound only stops a hung
// browser; nothing is timed.
func eval[T any](t *testing.T, b *browser, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

func (b *browser) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

type rect struct{ X, Y, W, H float64 }

// frameRect returns where graph id drew the frame named name, relative to
// its canvas, or W 0 when it is not drawn.
func (b *browser) frameRect(t *testing.T, id, name string) rect {
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
func outermostTotal(tr *Tree, name string) int64 {
	var sum int64
	var walk func(n *Node)
	walk = func(n *Node) {
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
func matchShare(tr *Tree, re string) string {
	rx := regexp.MustCompile(re)
	var sum int64
	var walk func(n *Node)
	walk = func(n *Node) {
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

func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Chromium")
	}
	evil := mustTree(t, readProfile(t, "evil.folded"), Options{Title: `</script><img src=x onerror=alert("title")>`})
	cpu := mustTree(t, readProfile(t, "cpu.pb.gz"), Options{Title: "cpu"})
	heap := mustTree(t, readProfile(t, "heap.pb.gz"), Options{SampleIndex: "alloc_space"})
	dir := t.TempDir()

	// One page hosting several graphs, the way report.html embeds them.
	var multi bytes.Buffer
	multi.WriteString("<!DOCTYPE html><html><head><meta charset=utf-8><title>multi</title>")
	multi.WriteString(string(PageHead()))
	multi.WriteString("</head><body>")
	for _, g := range []struct {
		id string
		t  *Tree
	}{{"evil", evil}, {"cpu", cpu}} {
		h, err := Embed(g.id, g.t, Options{})
		if err != nil {
			t.Fatal(err)
		}
		multi.WriteString(string(h))
	}
	multi.WriteString("</body></html>")
	multiPath := filepath.Join(dir, "multi.html")
	os.WriteFile(multiPath, multi.Bytes(), 0o644)

	// A standalone page.
	var single bytes.Buffer
	if err := WriteHTML(&single, heap, Options{}); err != nil {
		t.Fatal(err)
	}
	singlePath := filepath.Join(dir, "single.html")
	os.WriteFile(singlePath, single.Bytes(), 0o644)

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
		want := "main.hash\ntotal: " + strings.Replace(pprofutil.FormatValue(n.Total[cpu.Selected], "nanoseconds"), ".00 ", ".00 ", 1)
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
			os.WriteFile(filepath.Join(dir, "cpu-canvas.png"), buf, 0o644)
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
		if err := WriteSVG(&svg, evil, Options{}); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "evil.svg")
		os.WriteFile(path, svg.Bytes(), 0o644)
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
		dt, err := NewDiffTree(base, cur, Options{Title: "diff"})
		if err != nil {
			t.Fatal(err)
		}
		var page bytes.Buffer
		if err := WriteHTML(&page, dt, Options{}); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "diff.html")
		os.WriteFile(path, page.Bytes(), 0o644)
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
		inuse := mustTree(t, readProfile(t, "heap.pb.gz"), Options{SampleIndex: "inuse_space"})
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
	_, tr := load100k(b)
	dir := b.TempDir()
	path := filepath.Join(dir, "big.html")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := WriteHTML(f, tr, Options{}); err != nil {
		b.Fatal(err)
	}
	f.Close()
	br := newBrowserTB(b)
	var load, search, zoom, draw time.Duration
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
		search += time.Duration(ms[0] * 1e6)
		zoom += time.Duration(ms[1] * 1e6)
		draw += time.Duration(ms[2] * 1e6)
	}
	n := float64(b.N)
	b.ReportMetric(float64(load.Milliseconds())/n, "load-ms")
	b.ReportMetric(float64(search.Microseconds())/1e3/n, "search-ms")
	b.ReportMetric(float64(zoom.Microseconds())/1e3/n, "zoom-ms")
	b.ReportMetric(float64(draw.Microseconds())/1e3/n, "redraw-ms")
}
