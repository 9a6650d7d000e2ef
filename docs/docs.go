// Package docs embeds the machine-readable documents of this directory, so
// that the binary serves the very file the repository shows: openapi.json,
// the OpenAPI 3.1 description of a node's HTTP API.
package docs

import (
	_ "embed"
	"slices"
)

//go:embed openapi.json
var openAPI []byte

// OpenAPIMediaType is the registered media type of an OpenAPI document in
// JSON, with the version of the specification it follows.
const OpenAPIMediaType = "application/vnd.oai.openapi+json;version=3.1"

// OpenAPI returns a copy of the OpenAPI 3.1 document of the HTTP API
// (docs/openapi.json).
func OpenAPI() []byte { return slices.Clone(openAPI) }
