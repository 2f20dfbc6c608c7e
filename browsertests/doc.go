// Package browsertests runs profcap's pages (flame graphs, the report) in a
// real headless Chromium. It is its own module, as pprof's browsertests is,
// so that the main module does not require chromedp. Run it with
//
//	cd browsertests && go test ./...
//
// A missing Chromium skips the tests on a developer's machine and fails
// them when CI=true (internal/testreq).
package browsertests
