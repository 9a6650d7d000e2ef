// Package e2e holds the end-to-end tests of the presence service: the real
// presence-node binary (one node, or three joined on loopback) driven through
// the real browser client in headless Chromium with chromedp.
//
// The tests are behind the build tag "browser", so a plain `go test ./...`
// compiles only this file. Run them with scripts/browser-test.sh, or with
//
//	go test -tags browser -count=1 -v ./e2e/...
//
// Environment:
//
//	E2E_NODES   cluster size, 3 by default; 1 runs every single-node scenario
//	            (both users on one node) and skips the failover test
//	ARTIFACTS   directory for screenshots, node logs (<cluster>/<node>.log)
//	            and browser consoles, /tmp/presence-e2e-artifacts by default
//
// The nodes are started, signalled and stopped by chaos/proc, as in the
// process chaos tests.
//
// The tests skip, saying why, when no Chromium binary is on PATH (chromium,
// chromium-browser or google-chrome).
package e2e
