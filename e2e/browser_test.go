//go:build browser

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"os"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
)

const (
	// viewWidth and viewHeight are the size of every page, and of docs/demo.png.
	viewWidth, viewHeight = 1200, 800
	// stepTimeout bounds one browser action (navigate, evaluate, screenshot).
	stepTimeout = 15 * time.Second
)

// browser is one headless Chromium process; each user gets a browser
// context of it (separate cookies, storage and connections).
type browser struct {
	ctx         context.Context // has run once, so the process is up
	cancel      context.CancelFunc
	cancelAlloc context.CancelFunc
}

func startBrowser(execPath string) (*browser, error) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath),
		chromedp.WindowSize(viewWidth, viewHeight),
		// The tests run as root in containers, where Chromium's sandbox cannot start.
		chromedp.NoSandbox,
		chromedp.Flag("hide-scrollbars", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	// The first Run starts the process and binds its life to ctx: no timeout here.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		return nil, err
	}
	return &browser{ctx: ctx, cancel: cancel, cancelAlloc: cancelAlloc}, nil
}

func (b *browser) close() {
	b.cancel()
	b.cancelAlloc()
}

// tab is one page of one user.
type tab struct {
	t      *testing.T
	label  string
	ctx    context.Context
	cancel context.CancelFunc
	closed bool
}

// newUser opens a fresh browser context for a user and a tab in it. The
// browser context outlives the tab, so a keepalive request sent while the tab
// closes is not cut off; it is disposed of when the test ends.
func (b *browser) newUser(t *testing.T, label string) *tab {
	t.Helper()
	created, err := chromedp.CallBrowser(b.ctx, target.CreateBrowserContext, target.CreateBrowserContextParams{})
	if err != nil {
		t.Fatalf("creating a browser context for %s: %v", label, err)
	}
	dispose := func() {
		_, _ = chromedp.CallBrowser(b.ctx, target.DisposeBrowserContext,
			target.DisposeBrowserContextParams{BrowserContextID: created.BrowserContextID})
	}
	tabCtx, cancelTab := chromedp.NewContext(b.ctx, chromedp.WithExistingBrowserContext(created.BrowserContextID))
	t.Cleanup(func() {
		cancelTab()
		dispose()
	})
	if err := chromedp.Do(tabCtx, chromedp.EmulateViewport(viewWidth, viewHeight)); err != nil {
		t.Fatalf("opening a tab for %s: %v", label, err)
	}
	// Console subscribes when it returns, so no message of the page is missed.
	go recordConsole(chromedp.Console(tabCtx), artifactPath(t, label+"-console.log"))
	return &tab{t: t, label: label, ctx: tabCtx, cancel: cancelTab}
}

// recordConsole copies the tab's console messages and exceptions to a file
// until the tab closes; failures are easier to read with them.
func recordConsole(messages iter.Seq2[chromedp.ConsoleMessage, error], path string) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	for m, err := range messages {
		if err != nil {
			return
		}
		fmt.Fprintf(f, "%s %s %s:%d %s\n", m.Time.Format("15:04:05.000"), m.Type, m.URL, m.Line+1, m)
	}
}

// do runs actions in the tab with a step timeout.
func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// mustDo runs actions and fails the test on an error.
func (tb *tab) mustDo(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := tb.do(actions...); err != nil {
		tb.t.Fatalf("%s: %s: %v", tb.label, what, err)
	}
}

// eval evaluates a JavaScript expression, awaiting a promise, and decodes
// its JSON value into T.
func eval[T any](tb *tab, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// call runs window.e2e.<method>(args...) in the test page and fails the
// test when it throws.
func (tb *tab) call(method string, args ...any) {
	tb.t.Helper()
	encoded := make([]byte, 0, 64)
	for i, a := range args {
		if i > 0 {
			encoded = append(encoded, ',')
		}
		raw, err := json.Marshal(a)
		if err != nil {
			tb.t.Fatal(err)
		}
		encoded = append(encoded, raw...)
	}
	expr := fmt.Sprintf("window.e2e.%s(%s).then(() => true)", method, encoded)
	if _, err := eval[bool](tb, expr); err != nil {
		tb.t.Fatalf("%s: e2e.%s(%s): %v", tb.label, method, encoded, err)
	}
}

// screenshot saves the visible part of the tab in the artifacts directory
// and returns the PNG.
func (tb *tab) screenshot(name string) []byte {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Logf("%s: screenshot %s: %v", tb.label, name, err)
		return nil
	}
	path := artifactPath(tb.t, tb.label+"-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.t.Logf("writing %s: %v", path, err)
	}
	return png
}

// close closes the tab the way a user closes it: the page gets pagehide.
func (tb *tab) close() {
	if tb.closed {
		return
	}
	tb.closed = true
	tb.cancel()
}
