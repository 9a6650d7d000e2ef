package server_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/presencehq/presence/docs"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/server"
)

// The OpenAPI document's examples describe a dev node, whose "demo" prefix
// document lives here; the api tests replay them over a copy of it, so
// this test keeps the copy, the examples and the dev node in step.
func TestOpenAPIExamplesShowTheDevNodesDemoPrefix(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(docs.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	var get struct {
		Responses map[string]struct {
			Content map[string]struct {
				Examples map[string]struct {
					Value json.RawMessage `json:"value"`
				} `json:"examples"`
			} `json:"content"`
		} `json:"responses"`
	}
	if err := json.Unmarshal(doc.Paths["/admin/prefixes/{prefix}"]["get"], &get); err != nil {
		t.Fatalf("docs/openapi.json: GET /admin/prefixes/{prefix}: %v", err)
	}
	shown := get.Responses["200"].Content["application/json"].Examples["default"].Value
	if shown == nil {
		t.Fatal(`docs/openapi.json: no example "default" of GET /admin/prefixes/{prefix}`)
	}
	parsed, err := presence.ParsePrefixDocument(shown)
	if err != nil {
		t.Fatalf("docs/openapi.json: the demo document example: %v", err)
	}
	demo, err := presence.ParsePrefixDocument([]byte(server.DemoPrefixDocument))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(parsed.Bytes(), demo.Bytes()) {
		t.Fatalf("docs/openapi.json shows the demo prefix as %s; a dev node stores %s (update the examples and api's exampleDemoDocument)", parsed.Bytes(), demo.Bytes())
	}
}

// The examples of the server-side endpoints authenticate with a dev node's
// well-known tokens, which the document names.
func TestOpenAPINamesTheDevNodesTokens(t *testing.T) {
	var doc struct {
		Info struct {
			Description string `json:"description"`
		} `json:"info"`
	}
	if err := json.Unmarshal(docs.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, token := range []string{server.DevAdminToken, server.DevServiceToken} {
		if !strings.Contains(doc.Info.Description, "`"+token+"`") {
			t.Errorf("docs/openapi.json's description does not name the dev node's token %q (update it and api's example tokens)", token)
		}
	}
}
