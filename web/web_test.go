package web

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func serve(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestHandlersServeTheirFiles(t *testing.T) {
	tests := []struct {
		name        string
		h           http.Handler
		path        string
		status      int
		contentType string
		contains    string
	}{
		{"client module", ClientHandler(), "/presence-client.js", 200, "text/javascript; charset=utf-8", "export class PresenceClient"},
		{"client types", ClientHandler(), "/presence-client.d.ts", 200, "text/plain; charset=utf-8", "export class PresenceClient"},
		{"client other path", ClientHandler(), "/app.js", 404, "", ""},
		{"client root", ClientHandler(), "/", 404, "", ""},
		{"demo root", DemoHandler(), "/", 200, "text/html; charset=utf-8", `<script type="module" src="/app.js">`},
		{"demo app", DemoHandler(), "/app.js", 200, "text/javascript; charset=utf-8", `from "/presence-client.js"`},
		{"demo style", DemoHandler(), "/style.css", 200, "text/css; charset=utf-8", ".avatar"},
		{"demo client module", DemoHandler(), "/presence-client.js", 200, "text/javascript; charset=utf-8", "export class PresenceClient"},
		{"demo unknown", DemoHandler(), "/nope", 404, "", ""},
		{"demo by embed path", DemoHandler(), "/demo/app.js", 404, "", ""},
		{"demo traversal", DemoHandler(), "/../web.go", 404, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(t, tc.h, http.MethodGet, tc.path, nil)
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d", rec.Code, tc.status)
			}
			if tc.status != 200 {
				return
			}
			if got := rec.Header().Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type = %q, want %q", got, tc.contentType)
			}
			if got := rec.Header().Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control = %q, want no-cache", got)
			}
			if rec.Header().Get("ETag") == "" {
				t.Error("no ETag")
			}
			if !strings.Contains(rec.Body.String(), tc.contains) {
				t.Errorf("body does not contain %q", tc.contains)
			}
		})
	}
}

func TestRevalidationAnswers304(t *testing.T) {
	h := ClientHandler()
	first := serve(t, h, http.MethodGet, "/presence-client.js", nil)
	etag := first.Header().Get("ETag")
	again := serve(t, h, http.MethodGet, "/presence-client.js", map[string]string{"If-None-Match": etag})
	if again.Code != http.StatusNotModified {
		t.Fatalf("status = %d, want 304", again.Code)
	}
	if again.Body.Len() != 0 {
		t.Errorf("304 with a body of %d bytes", again.Body.Len())
	}
}

func TestClientModuleIsImportableCrossOrigin(t *testing.T) {
	rec := serve(t, ClientHandler(), http.MethodGet, "/presence-client.js", nil)
	if got := rec.Header().Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin = %q, want *", got)
	}
	if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
	}
}

func TestMethods(t *testing.T) {
	h := DemoHandler()
	head := serve(t, h, http.MethodHead, "/", nil)
	if head.Code != 200 || head.Body.Len() != 0 {
		t.Errorf("HEAD: status %d, %d body bytes; want 200 and none", head.Code, head.Body.Len())
	}
	post := serve(t, h, http.MethodPost, "/", nil)
	if post.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d, want 405", post.Code)
	}
	if got := post.Header().Get("Allow"); got != "GET, HEAD" {
		t.Errorf("Allow = %q", got)
	}
}

// Every local asset the page references must be served by the demo handler.
func TestDemoPageReferencesOnlyServedAssets(t *testing.T) {
	h := DemoHandler()
	page := serve(t, h, http.MethodGet, "/", nil).Body.String()
	refs := regexp.MustCompile(`(?:src|href)="(/[^"#]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 2 {
		t.Fatalf("found %d local references in index.html, want the script and the stylesheet", len(refs))
	}
	for _, m := range refs {
		if rec := serve(t, h, http.MethodGet, m[1], nil); rec.Code != 200 {
			t.Errorf("%s referenced by index.html: status %d", m[1], rec.Code)
		}
	}
}
