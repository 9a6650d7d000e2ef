package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/presencehq/presence/docs"
)

// This file reads docs/openapi.json as plain JSON for the tests that hold
// it against the router and the handlers: its operations, the examples of
// each answer and the requests those examples pair with.

// openAPIFile names the document in failure messages.
const openAPIFile = "docs/openapi.json"

// oaMethods are the operation keys of an OpenAPI path item, in the order
// failures list them.
var oaMethods = []string{"get", "head", "post", "put", "patch", "delete", "options", "trace"}

// oaDoc is the decoded document; numbers stay json.Number so that 64-bit
// ids compare exactly.
type oaDoc struct {
	root map[string]any
}

func loadOpenAPI(t *testing.T) *oaDoc {
	t.Helper()
	v, err := decodeJSON(docs.OpenAPI())
	if err != nil {
		t.Fatalf("%s: %v", openAPIFile, err)
	}
	root, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s is not a JSON object", openAPIFile)
	}
	return &oaDoc{root: root}
}

// decodeJSON decodes one JSON value keeping numbers exact.
func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("data after the JSON value")
	}
	return v, nil
}

// resolve follows a local "$ref" (and refs to refs); other values are
// returned as they are.
func (d *oaDoc) resolve(v any) (map[string]any, error) {
	for range 16 {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("expected an object, got %T", v)
		}
		ref, isRef := m["$ref"].(string)
		if !isRef {
			return m, nil
		}
		target, err := d.pointer(ref)
		if err != nil {
			return nil, err
		}
		v = target
	}
	return nil, fmt.Errorf("$ref chain too long")
}

// pointer returns the value a local reference "#/a/b" names.
func (d *oaDoc) pointer(ref string) (any, error) {
	frag, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, fmt.Errorf("$ref %q is not local", ref)
	}
	v, ok := lookupPointer(d.root, frag)
	if !ok {
		return nil, fmt.Errorf("$ref %q resolves to nothing", ref)
	}
	return v, nil
}

// lookupPointer resolves a JSON pointer (RFC 6901) in v.
func lookupPointer(v any, ptr string) (any, bool) {
	if ptr == "" {
		return v, true
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, false
	}
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := v.(type) {
		case map[string]any:
			next, ok := c[tok]
			if !ok {
				return nil, false
			}
			v = next
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			v = c[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// oaOperation is one method of one path.
type oaOperation struct {
	path, method string // method in upper case
	op           map[string]any
	params       []map[string]any // path-level and operation-level, resolved
}

func (o *oaOperation) String() string { return o.method + " " + o.path }

func (o *oaOperation) id() string { s, _ := o.op["operationId"].(string); return s }

// operations lists every operation, sorted by path and method.
func (d *oaDoc) operations(t *testing.T) []*oaOperation {
	t.Helper()
	paths, _ := d.root["paths"].(map[string]any)
	var out []*oaOperation
	for _, path := range slices.Sorted(maps.Keys(paths)) {
		item, err := d.resolve(paths[path])
		if err != nil {
			t.Fatalf("%s: paths[%q]: %v", openAPIFile, path, err)
		}
		for _, method := range oaMethods {
			raw, ok := item[method]
			if !ok {
				continue
			}
			op, _ := raw.(map[string]any)
			o := &oaOperation{path: path, method: strings.ToUpper(method), op: op}
			o.params = d.parameters(t, o, item["parameters"], op["parameters"])
			out = append(out, o)
		}
	}
	return out
}

// parameters merges path-level and operation-level parameters; the
// operation's win on the same name and location, as OpenAPI says.
func (d *oaDoc) parameters(t *testing.T, o *oaOperation, lists ...any) []map[string]any {
	t.Helper()
	byKey := map[string]map[string]any{}
	var order []string
	for _, list := range lists {
		items, _ := list.([]any)
		for _, raw := range items {
			p, err := d.resolve(raw)
			if err != nil {
				t.Fatalf("%s: %s: parameter: %v", openAPIFile, o, err)
			}
			key := fmt.Sprint(p["in"], ":", p["name"])
			if _, seen := byKey[key]; !seen {
				order = append(order, key)
			}
			byKey[key] = p
		}
	}
	out := make([]map[string]any, 0, len(order))
	for _, k := range order {
		out = append(out, byKey[k])
	}
	return out
}

// pathLevel reports whether parameter p of o is declared on its path item,
// for every method, rather than on the operation.
func (d *oaDoc) pathLevel(o *oaOperation, p map[string]any) bool {
	paths, _ := d.root["paths"].(map[string]any)
	item, err := d.resolve(paths[o.path])
	if err != nil {
		return false
	}
	list, _ := item["parameters"].([]any)
	for _, raw := range list {
		if q, err := d.resolve(raw); err == nil && q["in"] == p["in"] && q["name"] == p["name"] {
			ops, _ := o.op["parameters"].([]any)
			for _, own := range ops {
				if r, err := d.resolve(own); err == nil && r["in"] == p["in"] && r["name"] == p["name"] {
					return false
				}
			}
			return true
		}
	}
	return false
}

// oaExample is one named example of one answer of an operation.
type oaExample struct {
	op        *oaOperation
	status    int
	mediaType string
	media     map[string]any // the media type object (schema, x-events)
	response  map[string]any // the response object (headers)
	name      string
	value     any
	replay    oaReplay
}

func (e *oaExample) String() string {
	return fmt.Sprintf("%s %d %s example %q", e.op, e.status, e.mediaType, e.name)
}

// oaReplay is an example's x-replay: how to reproduce it.
type oaReplay struct {
	Auth     string   `json:"auth"`
	Variable []string `json:"variable"`
	Then     string   `json:"then"`
	State    string   `json:"state"`
}

// responseExamples lists every named example of every answer of o, sorted.
func (d *oaDoc) responseExamples(t *testing.T, o *oaOperation) []*oaExample {
	t.Helper()
	responses, _ := o.op["responses"].(map[string]any)
	var out []*oaExample
	for _, code := range slices.Sorted(maps.Keys(responses)) {
		resp, err := d.resolve(responses[code])
		if err != nil {
			t.Fatalf("%s: %s: response %s: %v", openAPIFile, o, code, err)
		}
		status, err := strconv.Atoi(code)
		if err != nil {
			t.Fatalf("%s: %s: response %q: use explicit status codes", openAPIFile, o, code)
		}
		content, _ := resp["content"].(map[string]any)
		for _, mt := range slices.Sorted(maps.Keys(content)) {
			media, _ := content[mt].(map[string]any)
			if _, single := media["example"]; single {
				t.Fatalf("%s: %s: response %s %s: use named examples (\"examples\"), which pair with requests", openAPIFile, o, code, mt)
			}
			examples, _ := media["examples"].(map[string]any)
			for _, name := range slices.Sorted(maps.Keys(examples)) {
				ex, err := d.resolve(examples[name])
				if err != nil {
					t.Fatalf("%s: %s: example %q: %v", openAPIFile, o, name, err)
				}
				e := &oaExample{op: o, status: status, mediaType: mt, media: media, response: resp, name: name, value: ex["value"]}
				if raw, ok := ex["x-replay"]; ok {
					b, _ := json.Marshal(raw)
					dec := json.NewDecoder(bytes.NewReader(b))
					dec.DisallowUnknownFields()
					if err := dec.Decode(&e.replay); err != nil {
						t.Fatalf("%s: %s: x-replay: %v", openAPIFile, e, err)
					}
				}
				out = append(out, e)
			}
		}
	}
	return out
}

// example returns the value of a parameter's or media type's example name.
func (d *oaDoc) example(holder map[string]any, name string) (any, bool, error) {
	examples, _ := holder["examples"].(map[string]any)
	raw, ok := examples[name]
	if !ok {
		return nil, false, nil
	}
	ex, err := d.resolve(raw)
	if err != nil {
		return nil, false, err
	}
	return ex["value"], true, nil
}

// paramExample returns a parameter's example name: from the parameter, or
// from its media type when it has content (where OpenAPI puts them then).
func (d *oaDoc) paramExample(p map[string]any, name string) (any, bool, error) {
	content, _ := p["content"].(map[string]any)
	for _, media := range content {
		m, _ := media.(map[string]any)
		return d.example(m, name)
	}
	return d.example(p, name)
}

// paramExampleNames lists the example names of a parameter.
func paramExampleNames(p map[string]any) []string {
	holder := p
	content, _ := p["content"].(map[string]any)
	for _, media := range content {
		holder, _ = media.(map[string]any)
	}
	examples, _ := holder["examples"].(map[string]any)
	return slices.Sorted(maps.Keys(examples))
}

// defaultAuth is the caller an operation needs: anonymous when its security
// allows it, else the admin or a user.
func defaultAuth(o *oaOperation) string {
	reqs, _ := o.op["security"].([]any)
	auth := "none"
	for _, r := range reqs {
		m, _ := r.(map[string]any)
		switch {
		case len(m) == 0:
			return "none"
		case m["adminToken"] != nil:
			auth = "admin"
		case m["serviceToken"] != nil:
			auth = "service"
		case m["userToken"] != nil:
			auth = "sam"
		}
	}
	return auth
}

// request builds the request example name of o pairs with: its parameters'
// and request body's examples of that name, sent by auth.
func (d *oaDoc) request(n *exampleNode, o *oaOperation, name, auth string) (*http.Request, error) {
	path := o.path
	query := url.Values{}
	header := http.Header{}
	for _, p := range o.params {
		v, ok, err := d.paramExample(p, name)
		if err != nil {
			return nil, err
		}
		in, _ := p["in"].(string)
		pname, _ := p["name"].(string)
		if !ok && in == "path" {
			v, ok, err = d.paramExample(p, "default")
			if err != nil {
				return nil, err
			}
		}
		if !ok {
			if in == "path" {
				return nil, fmt.Errorf("path parameter %q has no example %q nor \"default\"", pname, name)
			}
			continue
		}
		_, asJSON := p["content"]
		values, err := paramValues(v, asJSON)
		if err != nil {
			return nil, fmt.Errorf("parameter %q, example %q: %w", pname, name, err)
		}
		switch in {
		case "path":
			path = strings.ReplaceAll(path, "{"+pname+"}", url.PathEscape(values[0]))
		case "query":
			query[pname] = values
		case "header":
			header.Set(pname, values[0])
		default:
			return nil, fmt.Errorf("parameter %q: %q parameters are not replayed", pname, in)
		}
	}
	body, contentType, err := d.requestBody(o, name)
	if err != nil {
		return nil, err
	}
	target := n.srv.URL + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequest(o.method, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = header
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if a := n.authorization(auth); a != "" {
		req.Header.Set("Authorization", a)
	}
	return req, nil
}

// paramValues serializes a parameter example: JSON for a parameter with
// content, else an array as repeated values (style form, explode) and a
// scalar as itself.
func paramValues(v any, asJSON bool) ([]string, error) {
	if asJSON {
		b, err := json.Marshal(v)
		return []string{string(b)}, err
	}
	switch x := v.(type) {
	case []any:
		out := make([]string, 0, len(x))
		for _, item := range x {
			out = append(out, fmt.Sprint(item))
		}
		return out, nil
	case map[string]any, nil:
		return nil, fmt.Errorf("an object or null needs a parameter with content")
	}
	return []string{fmt.Sprint(v)}, nil
}

// requestBody encodes the request body example name, if the operation has
// one, by its media type.
func (d *oaDoc) requestBody(o *oaOperation, name string) ([]byte, string, error) {
	raw, ok := o.op["requestBody"]
	if !ok {
		return nil, "", nil
	}
	rb, err := d.resolve(raw)
	if err != nil {
		return nil, "", err
	}
	content, _ := rb["content"].(map[string]any)
	var found []string
	for _, mt := range slices.Sorted(maps.Keys(content)) {
		media, _ := content[mt].(map[string]any)
		if _, ok, _ := d.example(media, name); ok {
			found = append(found, mt)
		}
	}
	switch len(found) {
	case 0:
		return nil, "", nil
	case 1:
	default:
		return nil, "", fmt.Errorf("request body example %q exists for %v: name it once", name, found)
	}
	media, _ := content[found[0]].(map[string]any)
	v, _, err := d.example(media, name)
	if err != nil {
		return nil, "", err
	}
	return encodeBody(found[0], v)
}

// encodeBody serializes a request body example as its media type says.
func encodeBody(mediaType string, v any) ([]byte, string, error) {
	switch mediaType {
	case "application/json":
		b, err := json.Marshal(v)
		return b, mediaType, err
	case "application/x-www-form-urlencoded":
		fields, err := formFieldsOf(v)
		if err != nil {
			return nil, "", err
		}
		form := url.Values{}
		for _, f := range fields {
			form.Add(f[0], f[1])
		}
		return []byte(form.Encode()), mediaType, nil
	case "multipart/form-data":
		fields, err := formFieldsOf(v)
		if err != nil {
			return nil, "", err
		}
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		for _, f := range fields {
			if err := w.WriteField(f[0], f[1]); err != nil {
				return nil, "", err
			}
		}
		if err := w.Close(); err != nil {
			return nil, "", err
		}
		return buf.Bytes(), w.FormDataContentType(), nil
	}
	return nil, "", fmt.Errorf("request bodies of %s are not replayed", mediaType)
}

// formFieldsOf flattens an object example into (name, value) pairs in name
// order, an array giving one pair per item.
func formFieldsOf(v any) ([][2]string, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("a form example must be an object")
	}
	var out [][2]string
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		values, err := paramValues(obj[k], false)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", k, err)
		}
		for _, s := range values {
			out = append(out, [2]string{k, s})
		}
	}
	return out, nil
}
