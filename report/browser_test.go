package report

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/google/pprof/profile"
)

const chromium = "/usr/bin/chromium"

// The report opens in a real headless Chromium with no console errors, every
// graph on screen is drawn, and a per-target graph inside a closed <details>
// is drawn when it is opened.
func TestReportInChromium(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("no Chromium at %s (.ci/run installs it): %v", chromium, err)
	}
	healthy := map[string]int64{"main.handle": 60, "main.encode": 30, `<img src=x onerror=alert(1)>`: 10}
	sick := map[string]int64{"main.handle": 20, "main.encode": 10, "main.retryStorm": 70}
	dir, m := writeBundle(t, map[string]*profile.Profile{
		"worker-1": cpuProfile(healthy), "worker-2": cpuProfile(sick), "worker-3": cpuProfile(healthy),
	}, map[string]string{"role": "worker"})
	if err := Write(dir, m); err != nil {
		t.Fatal(err)
	}

	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	defer acancel()
	var mu sync.Mutex
	var problems []string
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == "error" || ev.Type == "warning" {
				problems = append(problems, "console "+string(ev.Type))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+ev.ExceptionDetails.Text)
		}
	}))
	defer bcancel()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second) // only stops a hung browser
	defer cancel()

	// drawn counts canvases with at least one painted pixel.
	const drawn = `(() => { let n = 0; for (const c of document.querySelectorAll('div.pcf canvas')) {
		if (!c.width || !c.height) continue;
		const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
		for (let i = 3; i < d.length; i += 4) if (d[i]) { n++; break; } } return n; })()`
	url := "file://" + filepath.Join(dir, "report.html")
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible("#status")); err != nil {
		t.Fatal(err)
	}
	before, err := chromedp.Run(ctx, chromedp.Evaluate[int](drawn))
	if err != nil {
		t.Fatal(err)
	}
	if before < 1 {
		t.Errorf("no flame graph drawn on load")
	}
	// Open every per-target and outlier graph; each must draw.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.querySelectorAll('details').forEach(d => d.open = true)`),
		chromedp.Sleep(500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	total, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('div.pcf canvas').length`))
	if err != nil {
		t.Fatal(err)
	}
	after, err := chromedp.Run(ctx, chromedp.Evaluate[int](drawn))
	if err != nil {
		t.Fatal(err)
	}
	// 1 merged + 3 per target + 3 outlier diffs.
	if total != 7 || after != total {
		t.Errorf("%d of %d graphs drawn after opening every section (before: %d), want 7 of 7", after, total, before)
	}
	imgs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('img').length`))
	if err != nil || imgs != 0 {
		t.Errorf("%d <img> elements: a frame name became markup (%v)", imgs, err)
	}
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('outliers').innerText`))
	if err != nil || !strings.Contains(text, "worker-2") || !strings.Contains(text, "main.retryStorm") {
		t.Errorf("outlier section: %q (%v)", text, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser reported: %s", p)
	}
}
