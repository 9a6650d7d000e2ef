package api

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	"github.com/pb33f/libopenapi/orderedmap"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/docs"
)

// These tests hold docs/openapi.json, which the node serves at
// /openapi.json, against the code: the document is valid OpenAPI 3.1, it
// lists exactly the routes the router serves, and every example in it is
// what the handlers really answer.

// replayDeadline bounds the wait for one frame of a replayed stream.
const replayDeadline = 10 * time.Second

func TestOpenAPIIsServedAtOpenAPIJSON(t *testing.T) {
	n := newExampleNode(t)
	onDisk, err := os.ReadFile("../docs/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, docs.OpenAPI()) {
		t.Fatal("the embedded document differs from docs/openapi.json")
	}
	resp := n.get(t, "/openapi.json", nil)
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, onDisk) {
		t.Fatalf("GET /openapi.json: %d, %d bytes; want 200 and docs/openapi.json (%d bytes)", resp.StatusCode, len(body), len(onDisk))
	}
	if ct := resp.Header.Get("Content-Type"); ct != docs.OpenAPIMediaType {
		t.Fatalf("content type %q, want %q", ct, docs.OpenAPIMediaType)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("headers %v", resp.Header)
	}
	etag := resp.Header.Get("ETag")
	if again := n.get(t, "/openapi.json", map[string]string{"If-None-Match": etag}); again.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation with the ETag: %d, want 304", again.StatusCode)
	}
	head, err := http.NewRequest(http.MethodHead, n.srv.URL+"/openapi.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := n.do(head)
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, hr); hr.StatusCode != http.StatusOK || len(b) != 0 || hr.Header.Get("Content-Type") != docs.OpenAPIMediaType {
		t.Fatalf("HEAD: %d, %d bytes, %q", hr.StatusCode, len(b), hr.Header.Get("Content-Type"))
	}
}

func TestOpenAPIDocumentIsValidOpenAPI31(t *testing.T) {
	doc, err := libopenapi.NewDocument(docs.OpenAPI())
	if err != nil {
		t.Fatalf("%s: %v", openAPIFile, err)
	}
	if v := doc.GetVersion(); !strings.HasPrefix(v, "3.1.") {
		t.Fatalf("%s: openapi %q, want 3.1.x", openAPIFile, v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("%s: %v", openAPIFile, errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("%s is not valid OpenAPI 3.1:\n%s", openAPIFile, validationErrors(verrs))
	}
	d := loadOpenAPI(t)
	checkOperationIDs(t, d)
	checkExamplesPair(t, d)
	checkResponseExamplesFitSchemas(t, d, v)
}

// checkOperationIDs wants one unique operationId per operation: x-replay's
// "then" names examples by it.
func checkOperationIDs(t *testing.T, d *oaDoc) {
	t.Helper()
	seen := map[string]string{}
	for _, o := range d.operations(t) {
		id := o.id()
		if id == "" {
			t.Errorf("%s: %s has no operationId", openAPIFile, o)
			continue
		}
		if prev, dup := seen[id]; dup {
			t.Errorf("%s: operationId %q of %s is also %s's", openAPIFile, id, o, prev)
		}
		seen[id] = o.String()
	}
}

// checkExamplesPair wants every request-side example to be answered by a
// response example of the same name (else it is never replayed), and every
// x-replay to make sense.
func checkExamplesPair(t *testing.T, d *oaDoc) {
	t.Helper()
	refs := exampleRefs(t, d)
	answeredOnPath := map[string]map[string]bool{} // path-level parameters serve every method
	answered := map[*oaOperation]map[string]bool{}
	ops := d.operations(t)
	for _, o := range ops {
		answered[o] = map[string]bool{}
		if answeredOnPath[o.path] == nil {
			answeredOnPath[o.path] = map[string]bool{}
		}
		for _, e := range d.responseExamples(t, o) {
			answered[o][e.name] = true
			answeredOnPath[o.path][e.name] = true
			checkReplay(t, e, refs)
		}
	}
	for _, o := range ops {
		for _, p := range o.params {
			names := answered[o]
			if d.pathLevel(o, p) {
				names = answeredOnPath[o.path]
			}
			for _, name := range paramExampleNames(p) {
				if !names[name] && !(p["in"] == "path" && name == "default") {
					t.Errorf("%s: %s: example %q of parameter %q has no response example of that name", openAPIFile, o, name, p["name"])
				}
			}
		}
		raw, ok := o.op["requestBody"]
		if !ok {
			continue
		}
		rb, err := d.resolve(raw)
		if err != nil {
			t.Fatal(err)
		}
		content, _ := rb["content"].(map[string]any)
		for _, mt := range slices.Sorted(maps.Keys(content)) {
			examples, _ := content[mt].(map[string]any)["examples"].(map[string]any)
			for _, name := range slices.Sorted(maps.Keys(examples)) {
				if !answered[o][name] {
					t.Errorf("%s: %s: request body example %q (%s) has no response example of that name", openAPIFile, o, name, mt)
				}
			}
		}
	}
}

// checkReplay checks one example's x-replay.
func checkReplay(t *testing.T, e *oaExample, refs map[string]*oaExample) {
	t.Helper()
	r := e.replay
	if _, known := exampleUsers[r.Auth]; !known && !strings.Contains(r.Auth, " ") && !slices.Contains([]string{"", "none", "admin", "service"}, r.Auth) {
		t.Errorf("%s: %s: x-replay auth %q: use none, admin, service, a user (%v) or a literal Authorization value", openAPIFile, e, r.Auth, slices.Sorted(maps.Keys(exampleUsers)))
	}
	if !slices.Contains([]string{"", "not-ready", "user-streams-full"}, r.State) {
		t.Errorf("%s: %s: x-replay state %q: use not-ready or user-streams-full", openAPIFile, e, r.State)
	}
	if r.Then != "" {
		if _, ok := refs[r.Then]; !ok {
			t.Errorf("%s: %s: x-replay then %q names no example (operationId/name)", openAPIFile, e, r.Then)
		}
		if e.mediaType != "text/event-stream" {
			t.Errorf("%s: %s: x-replay then is for streams", openAPIFile, e)
		}
	}
	for _, p := range r.Variable {
		if !variableExists(e, p) {
			t.Errorf("%s: %s: x-replay variable %q points at nothing in the example", openAPIFile, e, p)
		}
	}
}

// variableExists reports whether a variable pointer names a value of the
// example (of some event's data, for a stream).
func variableExists(e *oaExample, ptr string) bool {
	if e.mediaType != "text/event-stream" {
		_, ok := lookupPointer(e.value, ptr)
		return ok
	}
	text, _ := e.value.(string)
	frames, err := parseSSEExample(text)
	if err != nil {
		return false
	}
	for _, f := range frames {
		if data, err := decodeJSON([]byte(f.data)); err == nil {
			if _, ok := lookupPointer(data, ptr); ok {
				return true
			}
		}
	}
	return false
}

// exampleRefs indexes response examples by "operationId/name"; a name
// answered under several statuses is ambiguous, so it is left out.
func exampleRefs(t *testing.T, d *oaDoc) map[string]*oaExample {
	t.Helper()
	refs := map[string]*oaExample{}
	ambiguous := map[string]bool{}
	for _, o := range d.operations(t) {
		for _, e := range d.responseExamples(t, o) {
			key := o.id() + "/" + e.name
			if _, dup := refs[key]; dup {
				ambiguous[key] = true
			}
			refs[key] = e
		}
	}
	for key := range ambiguous {
		delete(refs, key)
	}
	return refs
}

// checkResponseExamplesFitSchemas validates every JSON response example
// against its response's schema, as if a handler had answered it.
func checkResponseExamplesFitSchemas(t *testing.T, d *oaDoc, v validator.Validator) {
	t.Helper()
	for _, o := range d.operations(t) {
		for _, e := range d.responseExamples(t, o) {
			if !isJSONMediaType(e.mediaType) {
				continue
			}
			path := o.path
			for _, p := range o.params {
				if p["in"] == "path" {
					path = strings.ReplaceAll(path, fmt.Sprint("{", p["name"], "}"), "x")
				}
			}
			req := httptest.NewRequest(o.method, path, nil)
			header := http.Header{"Content-Type": {e.mediaType}}
			headers, _ := e.response["headers"].(map[string]any)
			for name := range headers {
				header.Set(name, "1") // a value every documented header schema takes
			}
			resp := &http.Response{StatusCode: e.status, Header: header,
				Body: io.NopCloser(strings.NewReader(compact(e.value))), Request: req}
			if ok, verrs := v.ValidateHttpResponse(req, resp); !ok {
				t.Errorf("%s: %s does not fit its schema:\n%s", openAPIFile, e, validationErrors(verrs))
			}
		}
	}
}

func isJSONMediaType(mt string) bool {
	base, _, _ := mime.ParseMediaType(mt)
	return base == "application/json" || strings.HasSuffix(base, "+json")
}

func TestOpenAPIMatchesTheRoutes(t *testing.T) {
	d := loadOpenAPI(t)
	var documented []documentedOperation
	for _, o := range d.operations(t) {
		documented = append(documented, documentedOperation{method: o.method, path: o.path, sample: d.samplePath(t, o)})
	}
	n := newExampleNode(t)
	serve := func(method, path string) int {
		req, err := http.NewRequest(method, n.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := n.do(req)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		return resp.StatusCode
	}
	for _, problem := range routeCoverage(exampleRouter(t), documented, serve) {
		t.Error(problem)
	}
}

// exampleRouter builds the router of an example node, which registers
// every route a node can have (the browser client, the dev routes, the
// demo).
func exampleRouter(t *testing.T) *mux.Router {
	t.Helper()
	cfg := exampleNodeConfig(&fakeService{}, newFakePrefixes(), &exampleCluster{}, clock.NewFake(testStart), prometheus.NewRegistry())
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg = cfg.withDefaults()
	s := &server{cfg: cfg, log: cfg.Logger}
	return s.routes()
}

// samplePath fills an operation's path parameters with their examples,
// giving a path the router can match.
func (d *oaDoc) samplePath(t *testing.T, o *oaOperation) string {
	t.Helper()
	path := o.path
	for _, p := range o.params {
		if p["in"] != "path" {
			continue
		}
		v, ok, err := d.paramExample(p, "default")
		if err != nil || !ok {
			t.Fatalf("%s: %s: path parameter %q needs an example named \"default\"", openAPIFile, o, p["name"])
		}
		path = strings.ReplaceAll(path, fmt.Sprint("{", p["name"], "}"), fmt.Sprint(v))
	}
	return path
}

func TestOpenAPIExamplesMatchTheHandlers(t *testing.T) {
	d := loadOpenAPI(t)
	doc, err := libopenapi.NewDocument(docs.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	r := &replayer{doc: d, validator: v, refs: exampleRefs(t, d), schemas: model.Model.Components.Schemas}
	replayed := 0
	for _, o := range d.operations(t) {
		for _, e := range d.responseExamples(t, o) {
			replayed++
			t.Run(fmt.Sprintf("%s_%d_%s", o, e.status, e.name), func(t *testing.T) { r.replay(t, e) })
		}
	}
	if replayed == 0 {
		t.Fatalf("%s has no example to replay", openAPIFile)
	}
}

// replayer sends each example's request to a fresh example node and holds
// the answer against the example.
type replayer struct {
	doc       *oaDoc
	validator validator.Validator
	refs      map[string]*oaExample
	schemas   *orderedmap.Map[string, *base.SchemaProxy] // components.schemas, for stream data
}

func (r *replayer) replay(t *testing.T, e *oaExample) {
	n := newExampleNode(t)
	switch e.replay.State {
	case "not-ready":
		n.cluster.notReady = true
	case "user-streams-full":
		n.fillStreams("sam")
	}
	build := func() *http.Request {
		t.Helper()
		auth := e.replay.Auth
		if auth == "" {
			auth = defaultAuth(e.op)
		}
		req, err := r.doc.request(n, e.op, e.name, auth)
		if err != nil {
			t.Fatalf("%s: %s: %v", openAPIFile, e, err)
		}
		return req
	}
	if e.status < 300 {
		// Error examples send bad input on purpose; the others must send
		// what the document allows.
		if ok, verrs := r.validator.ValidateHttpRequestSync(build()); !ok {
			t.Errorf("%s: the request of %s does not fit the document:\n%s", openAPIFile, e, validationErrors(verrs))
		}
	}
	if e.mediaType == "text/event-stream" {
		r.replayStream(t, n, e, build())
		return
	}
	req := build()
	resp, err := n.do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	r.checkAnswerHead(t, e, resp)
	if !isJSONMediaType(e.mediaType) {
		text, _ := e.value.(string)
		if missing := missingLines(text, string(body)); len(missing) > 0 {
			t.Errorf("%s: %s: the answer lacks the documented lines %q", openAPIFile, e, missing)
		}
		return
	}
	got, err := decodeJSON(body)
	if err != nil {
		t.Fatalf("%s: the answer %q is not JSON: %v", e, body, err)
	}
	vars := map[string]bool{}
	for _, p := range e.replay.Variable {
		vars[p] = true
	}
	if diffs := diffJSON(e.value, got, vars, ""); len(diffs) > 0 {
		t.Errorf("%s: %s differs from the real answer %s:\n  %s", openAPIFile, e, bytes.TrimSpace(body), strings.Join(diffs, "\n  "))
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if ok, verrs := r.validator.ValidateHttpResponse(build(), resp); !ok {
		t.Errorf("%s: the real answer of %s does not fit the schema:\n%s", openAPIFile, e, validationErrors(verrs))
	}
}

// checkAnswerHead compares status, media type and required headers.
func (r *replayer) checkAnswerHead(t *testing.T, e *oaExample, resp *http.Response) {
	t.Helper()
	if resp.StatusCode != e.status {
		t.Fatalf("%s: %s: the handler answered %d", openAPIFile, e, resp.StatusCode)
	}
	gotType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	wantType, _, _ := mime.ParseMediaType(e.mediaType)
	if gotType != wantType {
		t.Errorf("%s: %s: the answer's Content-Type is %q", openAPIFile, e, resp.Header.Get("Content-Type"))
	}
	headers, _ := e.response["headers"].(map[string]any)
	for _, name := range slices.Sorted(maps.Keys(headers)) {
		h, err := r.doc.resolve(headers[name])
		if err != nil {
			t.Fatalf("%s: %s: header %s: %v", openAPIFile, e, name, err)
		}
		if h["required"] == true && resp.Header.Get(name) == "" {
			t.Errorf("%s: %s: the answer lacks the required header %s", openAPIFile, e, name)
		}
	}
}

// replayStream opens the stream, sends x-replay's then request once the
// frames before the first documented message arrived, and compares the
// first frames with the example's.
func (r *replayer) replayStream(t *testing.T, n *exampleNode, e *oaExample, req *http.Request) {
	text, _ := e.value.(string)
	want, err := parseSSEExample(text)
	if err != nil {
		t.Fatalf("%s: %s: %v", openAPIFile, e, err)
	}
	thenAt := -1
	if e.replay.Then != "" {
		thenAt = slices.IndexFunc(want, func(f sseFrame) bool { return f.event == "message" })
		if thenAt < 0 {
			t.Fatalf("%s: %s: x-replay then, but no message frame to wait for", openAPIFile, e)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := n.do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r.checkAnswerHead(t, e, resp)
	frames := make(chan string, 16)
	go func() {
		defer close(frames)
		br := bufio.NewReader(resp.Body)
		var frame strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line != "\n" {
				frame.WriteString(line)
				continue
			}
			frames <- frame.String()
			frame.Reset()
		}
	}()
	events := r.eventSchemas(t, e)
	for i, w := range want {
		if i == thenAt {
			r.sendThen(t, n, e)
		}
		var raw string
		select {
		case f, open := <-frames:
			if !open {
				t.Fatalf("%s: %s: the stream ended after %d of %d frames", openAPIFile, e, i, len(want))
			}
			raw = f
		case <-time.After(replayDeadline):
			t.Fatalf("%s: %s: frame %d (%s) did not come within %v", openAPIFile, e, i, w, replayDeadline)
		}
		got, err := parseSSEFrame(raw)
		if err != nil {
			t.Fatalf("%s: frame %q: %v", e, raw, err)
		}
		if diffs := diffSSEFrame(w, got, e.replay.Variable); len(diffs) > 0 {
			t.Errorf("%s: %s: frame %d differs from the real %q:\n  %s", openAPIFile, e, i, raw, strings.Join(diffs, "\n  "))
		}
		if got.comment != "" {
			continue
		}
		schema, ok := events[got.event]
		if !ok {
			t.Errorf("%s: %s: event %q is not listed in x-events", openAPIFile, e, got.event)
			continue
		}
		if ok, verrs := schema_validation.NewSchemaValidator().ValidateSchemaBytes(schema, []byte(got.data)); !ok {
			t.Errorf("%s: %s: the data of event %q does not fit its schema:\n%s", openAPIFile, e, got.event, validationErrors(verrs))
		}
	}
}

// eventSchemas resolves a stream's x-events: event name to the schema of
// its data.
func (r *replayer) eventSchemas(t *testing.T, e *oaExample) map[string]*base.Schema {
	t.Helper()
	events, _ := e.media["x-events"].(map[string]any)
	if len(events) == 0 {
		t.Fatalf("%s: %s: a text/event-stream answer lists its events and their data schemas in x-events", openAPIFile, e)
	}
	out := map[string]*base.Schema{}
	for name, raw := range events {
		ref, _ := raw.(map[string]any)["$ref"].(string)
		schemaName, ok := strings.CutPrefix(ref, "#/components/schemas/")
		proxy := r.schemas.GetOrZero(schemaName)
		if !ok || proxy == nil {
			t.Fatalf("%s: %s: x-events %q must be a $ref to #/components/schemas/...", openAPIFile, e, name)
		}
		out[name] = proxy.Schema()
	}
	return out
}

// sendThen replays the request of the example x-replay's then names.
func (r *replayer) sendThen(t *testing.T, n *exampleNode, e *oaExample) {
	t.Helper()
	then := r.refs[e.replay.Then]
	auth := then.replay.Auth
	if auth == "" {
		auth = defaultAuth(then.op)
	}
	req, err := r.doc.request(n, then.op, then.name, auth)
	if err != nil {
		t.Fatalf("%s: %s: then %s: %v", openAPIFile, e, e.replay.Then, err)
	}
	resp, err := n.do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != then.status {
		t.Fatalf("%s: %s: then %s answered %d %s, documented %d", openAPIFile, e, e.replay.Then, resp.StatusCode, body, then.status)
	}
}

// validationErrors prints a validator's findings, one per line.
func validationErrors(errs []*liberrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "  %s: %s\n", e.Message, e.Reason)
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "    %s: %s\n", f.FieldPath, f.Reason)
		}
	}
	return b.String()
}

// get sends a GET with headers to the node.
func (n *exampleNode) get(t *testing.T, path string, headers map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := n.do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// readAll reads and closes a response body.
func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
