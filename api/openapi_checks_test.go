package api

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"
)

// The checks of openapi_test.go must fail, and say where, when the document
// and the code part ways; these tests feed them a router and examples that
// disagree.

func TestRouteCoverageNamesWhatIsMissingWhere(t *testing.T) {
	noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	r := mux.NewRouter()
	r.Handle("/presence/get", noop).Methods(http.MethodGet)
	r.Handle("/server/presence/get", noop).Methods(http.MethodGet)                     // added, not documented
	r.Handle("/admin/prefixes/{prefix}", noop).Methods(http.MethodGet, http.MethodPut) // PUT not documented
	r.Handle("/items/{id:[0-9]{1,3}}", noop)                                           // every method, not documented
	r.PathPrefix("/").Handler(noop).Methods(http.MethodGet)                            // a catch-all, documented as "/"
	documented := []documentedOperation{
		{method: "GET", path: "/presence/get", sample: "/presence/get"},
		{method: "GET", path: "/admin/prefixes/{name}", sample: "/admin/prefixes/demo"}, // another variable name: same route
		{method: "DELETE", path: "/presence/get", sample: "/presence/get"},              // documented, never served
		{method: "GET", path: "/", sample: "/"},
		{method: "GET", path: "/app.js", sample: "/app.js"},      // served by the catch-all
		{method: "GET", path: "/gone.css", sample: "/gone.css"},  // the catch-all answers 404
		{method: "POST", path: "/gone.css", sample: "/gone.css"}, // no route for POST at all
	}
	serve := func(method, path string) int {
		if path == "/gone.css" {
			return http.StatusNotFound
		}
		return http.StatusOK
	}
	got := routeCoverage(r, documented, serve)
	want := []string{
		`GET /server/presence/get is served by api's router (api/api.go) but missing from docs/openapi.json: add paths["/server/presence/get"].get`,
		`PUT /admin/prefixes/{prefix} is served by api's router (api/api.go) but missing from docs/openapi.json: add paths["/admin/prefixes/{prefix}"].put`,
		`/items/{id:[0-9]{1,3}} (any method) is served by api's router (api/api.go) but missing from docs/openapi.json: add paths["/items/{id:[0-9]{1,3}}"] with the methods it serves`,
		`DELETE /presence/get is documented in docs/openapi.json but api's router serves no such route: register it in api/api.go or remove paths["/presence/get"].delete`,
		`GET /gone.css is documented in docs/openapi.json but only the catch-all route "/" matches it, and it answers 404: serve the file or remove paths["/gone.css"].get`,
		`POST /gone.css is documented in docs/openapi.json but api's router serves no such route: register it in api/api.go or remove paths["/gone.css"].post`,
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("problems:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestNormalisePath(t *testing.T) {
	for in, want := range map[string]string{
		"/admin/prefixes/{prefix}": "/admin/prefixes/{}",
		"/items/{id:[0-9]{1,3}}/x": "/items/{}/x",
		"/a/{b}/{c:.+}":            "/a/{}/{}",
		"/presence/get":            "/presence/get",
	} {
		if got := normalisePath(in); got != want {
			t.Errorf("normalisePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDiffJSONComparesAllButVariableValues(t *testing.T) {
	decode := func(s string) any {
		v, err := decodeJSON([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	example := decode(`{"/a": {"count": 1, "last_message_id": 17, "users": [{"id": "7"}]}, "/b": null}`)
	variable := map[string]bool{"/~1a/last_message_id": true}
	if d := diffJSON(example, decode(`{"/b": null, "/a": {"users": [{"id": "7"}], "last_message_id": 1893553445000001, "count": 1}}`), variable, ""); d != nil {
		t.Fatalf("equal but for a variable id: %v", d)
	}
	for answer, want := range map[string]string{
		`{"/a": {"count": 2, "last_message_id": 17, "users": [{"id": "7"}]}, "/b": null}`:          `/~1a/count: got 2, documented 1`,
		`{"/a": {"count": 1, "last_message_id": "17", "users": [{"id": "7"}]}, "/b": null}`:        `/~1a/last_message_id: a string, documented as a number (a variable value)`,
		`{"/a": {"count": 1, "last_message_id": 17, "users": []}, "/b": null}`:                     `/~1a/users: got [], documented [{"id":"7"}]`,
		`{"/a": {"count": 1, "last_message_id": 17, "users": [{"id": "7"}]}}`:                      `/~1b: missing from the answer`,
		`{"/a": {"count": 1, "last_message_id": 17, "users": [{"id": "7"}]}, "/b": null, "/c": 1}`: `/~1c: in the answer (1) but not in the example`,
		`[]`: `the body: got [], documented {"/a":{"count":1,"last_message_id":17,"users":[{"id":"7"}]},"/b":null}`,
	} {
		if got := diffJSON(example, decode(answer), variable, ""); !slices.Equal(got, []string{want}) {
			t.Errorf("answer %s: differences %q, want %q", answer, got, want)
		}
	}
	// 64-bit ids compare exactly, not as float64.
	if d := diffJSON(decode(`1893553445000001`), decode(`1893553445000002`), nil, ""); len(d) != 1 {
		t.Errorf("ids one apart: %v", d)
	}
}

func TestStreamExamplesCompareFrameByFrame(t *testing.T) {
	want, err := parseSSEExample(": connected\n\nid: X\nevent: message\ndata: {\"channel\":\"/a\",\"message_id\":5,\"data\":{\"count_delta\":1}}\n\n")
	if err != nil || len(want) != 2 {
		t.Fatalf("%v %v", want, err)
	}
	frame := func(s string) sseFrame {
		f, err := parseSSEFrame(s)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if d := diffSSEFrame(want[0], frame(": connected\n"), nil); d != nil {
		t.Fatalf("same comment: %v", d)
	}
	if d := diffSSEFrame(want[0], frame(": keepalive\n"), nil); len(d) != 1 {
		t.Fatalf("another comment: %v", d)
	}
	vars := []string{"/message_id"}
	if d := diffSSEFrame(want[1], frame("id: Y\nevent: message\ndata: {\"channel\":\"/a\",\"message_id\":99,\"data\":{\"count_delta\":1}}\n"), vars); d != nil {
		t.Fatalf("same event, other cursor and id: %v", d)
	}
	got := diffSSEFrame(want[1], frame("event: resync\ndata: {\"channel\":\"/a\",\"message_id\":99,\"data\":{\"count_delta\":-1}}\n"), vars)
	wantDiffs := []string{`event "resync", documented "message"`, "no id (cursor)", "data /data/count_delta: got -1, documented 1"}
	if !slices.Equal(got, wantDiffs) {
		t.Fatalf("differences %q, want %q", got, wantDiffs)
	}
	if _, err := parseSSEExample("event: message\ndata: {}"); err == nil {
		t.Fatal("a stream example without its final blank line was accepted")
	}
}

func TestMissingLinesKeepsTheExcerptsOrder(t *testing.T) {
	body := "# TYPE a gauge\na 1\n# TYPE b gauge\nb 2\n"
	if m := missingLines("# TYPE a gauge\nb 2\n", body); m != nil {
		t.Fatalf("lines in order: missing %q", m)
	}
	if m := missingLines("b 2\n# TYPE a gauge\n", body); !slices.Equal(m, []string{"# TYPE a gauge"}) {
		t.Fatalf("lines out of order: missing %q", m)
	}
	if m := missingLines("a 2\n", body); !slices.Equal(m, []string{"a 2"}) {
		t.Fatalf("another value: missing %q", m)
	}
}
