package browsertests

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/profcap/profcap/internal/testreq"
)

// browser starts a real headless Chromium with a fresh profile and collects
// console errors, exceptions, log errors and dialogs (an alert would mean a
// frame name ran as script).
type browser struct {
	ctx     context.Context
	mu      sync.Mutex
	errs    []string
	dialogs []string
}

// newBrowser starts the browser. A missing Chromium skips the test on a
// developer's machine and fails it under CI=true (testreq).
func newBrowser(t testing.TB) *browser {
	t.Helper()
	chromium := testreq.Command(t, "chromium")
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

func (b *browser) check(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errs {
		if strings.Contains(e, "favicon") {
			continue
		}
		// The tests' own pixel probes (getImageData on the page's canvases)
		// make Chromium suggest willReadFrequently; flame.js never reads
		// pixels back, so this is about the test, not the page.
		if strings.Contains(e, "Multiple readback operations using getImageData") {
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
func eval[T any](t testing.TB, b *browser, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

func (b *browser) do(t testing.TB, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls the JavaScript condition cond until it holds, for at most
// 30 s (a bound that only stops a hung page; nothing is timed), and reports
// whether it held.
func waitFor(t testing.TB, b *browser, cond string) bool {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if eval[bool](t, b, cond) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
