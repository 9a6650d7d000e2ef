package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/presencehq/presence/docs"
)

// openAPIHandler serves the OpenAPI description of this API
// (docs/openapi.json, embedded in the binary) at /openapi.json. Like the
// browser client, any origin may read it, so API tools on other pages can
// load it; it describes the API and holds no secret.
func openAPIHandler() http.Handler {
	doc := docs.OpenAPI()
	sum := sha256.Sum256(doc)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", docs.OpenAPIMediaType)
		h.Set("X-Content-Type-Options", "nosniff")
		// The URL carries no version: clients revalidate, and the ETag makes
		// that a 304.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", etag)
		h.Set("Access-Control-Allow-Origin", "*")
		http.ServeContent(w, r, "openapi.json", time.Time{}, bytes.NewReader(doc))
	})
}
