// Package web serves the browser client of the presence service and its demo page, both
// embedded in the binary.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"time"
)

//go:embed presence-client.js presence-client.d.ts demo/index.html demo/app.js demo/style.css
var files embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	name        string
	body        []byte
	contentType string
	etag        string
}

// Content types by extension; .d.ts is served as text so a browser shows it instead of
// downloading it.
var contentTypes = map[string]string{
	".js":   "text/javascript; charset=utf-8",
	".ts":   "text/plain; charset=utf-8",
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

func mustAsset(file, name string) asset {
	body, err := fs.ReadFile(files, file)
	if err != nil {
		// Unreachable: go:embed fails the build when a listed file is missing.
		panic(err)
	}
	sum := sha256.Sum256(body)
	return asset{
		name:        name,
		body:        body,
		contentType: contentTypes[path.Ext(file)],
		etag:        `"` + hex.EncodeToString(sum[:8]) + `"`,
	}
}

// assetHandler serves a fixed set of files by URL path and answers 404 for anything else.
type assetHandler struct {
	byPath map[string]asset
	// cors allows modules on other origins to import the file.
	cors bool
}

func (h assetHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a, ok := h.byPath[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("X-Content-Type-Options", "nosniff")
	// The URLs carry no version, so browsers revalidate every time; the ETag makes that a 304.
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", a.etag)
	if h.cors {
		hdr.Set("Access-Control-Allow-Origin", "*")
	}
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}

func clientAssets() map[string]asset {
	return map[string]asset{
		"/presence-client.js":   mustAsset("presence-client.js", "presence-client.js"),
		"/presence-client.d.ts": mustAsset("presence-client.d.ts", "presence-client.d.ts"),
	}
}

// ClientHandler serves /presence-client.js (the ES module) and /presence-client.d.ts (its
// types). Any origin may load them. Other paths get 404.
func ClientHandler() http.Handler {
	return assetHandler{byPath: clientAssets(), cors: true}
}

// DemoHandler serves the demo page: index.html at "/", its assets by name, and the client
// module it imports, so the demo works wherever it is mounted at the root. Other paths get 404.
func DemoHandler() http.Handler {
	byPath := clientAssets()
	byPath["/"] = mustAsset("demo/index.html", "index.html")
	byPath["/index.html"] = byPath["/"]
	byPath["/app.js"] = mustAsset("demo/app.js", "app.js")
	byPath["/style.css"] = mustAsset("demo/style.css", "style.css")
	return assetHandler{byPath: byPath}
}
