package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/presencehq/presence/presence"
)

func (e *env) admin(method, target, body string) (int, string) {
	e.t.Helper()
	rec := e.do(method, target, strings.NewReader(body), "Authorization", "Bearer "+testAdminToken, "Content-Type", "application/json")
	return rec.Code, rec.Body.String()
}

func TestAdminPrefixLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	doc := `{ "rules": [ {"match": "/site/online", "config": {"public": true}},
	  {"match": "/topic/[0-9]+", "config": {"allowed_group_ids": ["staff"], "timeout": 30}} ],
	  "callback": {"url": "http://app.internal/presence-config"} }`
	code, body := e.admin("PUT", "/admin/prefixes/site", doc)
	if code != http.StatusOK {
		t.Fatalf("put: %d %s", code, body)
	}
	parsed, err := presence.ParsePrefixDocument([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	canonical := string(parsed.Bytes())
	if stored, _ := e.prefixes.Get("site"); string(stored) != canonical {
		t.Fatalf("stored %s, want canonical %s", stored, canonical)
	}
	if strings.TrimSpace(body) != canonical {
		t.Fatalf("put answered %s", body)
	}
	if code, body = e.admin("GET", "/admin/prefixes/site", ""); code != http.StatusOK || strings.TrimSpace(body) != canonical {
		t.Fatalf("get: %d %s", code, body)
	}
	code, body = e.admin("GET", "/admin/prefixes", "")
	var list struct {
		Prefixes map[string]json.RawMessage `json:"prefixes"`
	}
	if err := json.Unmarshal([]byte(body), &list); code != http.StatusOK || err != nil || string(list.Prefixes["site"]) != canonical || len(list.Prefixes) != 1 {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, _ = e.admin("DELETE", "/admin/prefixes/site", ""); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	if code, _ = e.admin("DELETE", "/admin/prefixes/site", ""); code != http.StatusNotFound {
		t.Fatalf("second delete: %d", code)
	}
	if code, body = e.admin("GET", "/admin/prefixes", ""); code != http.StatusOK || strings.TrimSpace(body) != `{"prefixes":{}}` {
		t.Fatalf("empty list: %d %s", code, body)
	}
}

func TestAdminBadDocumentChangesNothing(t *testing.T) {
	e := newEnv(t, nil)
	good := `{"rules":[{"match":"/p/.*","config":{"public":true}}]}`
	if code, body := e.admin("PUT", "/admin/prefixes/p", good); code != http.StatusOK {
		t.Fatalf("put: %d %s", code, body)
	}
	before, _ := e.prefixes.Get("p")
	for _, bad := range []string{
		`{"rules":[{"match":"(unclosed","config":{}}]}`,
		`{"rules":[],"colour":"blue"}`,
		`{"rules":[{"match":"x","config":{"public":true,"timeout":99999}}]}`,
		`{"rules":[{"match":"x","config":{"count_only":"yes"}}]}`,
		`{"callback":{"url":"ftp://x","cache_seconds":5}}`,
		`{"callback":{"url":"http://x","cache_seconds":601}}`,
		`{"rules":[]} {"rules":[]}`,
		``,
	} {
		code, body := e.admin("PUT", "/admin/prefixes/p", bad)
		if code != http.StatusBadRequest {
			t.Fatalf("%s: status %d", bad, code)
		}
		var eb errorBody
		if err := json.Unmarshal([]byte(body), &eb); err != nil || len(eb.Errors) != 1 || eb.Errors[0] == "" {
			t.Fatalf("%s: body %s", bad, body)
		}
		if after, _ := e.prefixes.Get("p"); string(after) != string(before) {
			t.Fatalf("%s changed the stored document", bad)
		}
	}
	if code, _ := e.admin("PUT", "/admin/prefixes/bad%20prefix", good); code != http.StatusBadRequest {
		t.Fatalf("bad prefix: %d", code)
	}
	if len(e.prefixes.List()) != 1 {
		t.Fatal("a bad prefix was stored")
	}
}

func TestAdminRegexMessageReachesCaller(t *testing.T) {
	e := newEnv(t, nil)
	_, body := e.admin("PUT", "/admin/prefixes/p", `{"rules":[{"match":"(","config":{}}]}`)
	if !strings.Contains(body, "rules[0].match") {
		t.Fatalf("error does not name the field: %s", body)
	}
}

func TestAdminNotLeaderIs503(t *testing.T) {
	e := newEnv(t, nil)
	e.prefixes.err = fmt.Errorf("raft: no leader: %w", presence.ErrUnavailable)
	code, body := e.admin("PUT", "/admin/prefixes/p", `{"rules":[]}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "errors") {
		t.Fatalf("put: %d %s", code, body)
	}
	if code, _ = e.admin("DELETE", "/admin/prefixes/p", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("delete: %d", code)
	}
}

func TestAdminCluster(t *testing.T) {
	e := newEnv(t, nil)
	code, body := e.admin("GET", "/admin/cluster", "")
	want := `{"members":[{"name":"n1","http":"127.0.0.1:8080","state":"alive"}],"raft":{"leader":"n1","servers":["n1","n2"],"voters":["n1"]}}`
	if code != http.StatusOK || strings.TrimSpace(body) != want {
		t.Fatalf("%d %s", code, body)
	}
	code, body = e.admin("GET", "/admin/owner?channel=/a/b", "")
	if want := `{"channel":"/a/b","owner":"n1","replicas":["n2"]}`; code != http.StatusOK || strings.TrimSpace(body) != want {
		t.Fatalf("%d %s", code, body)
	}
}

func TestAdminAuthRequiredEverywhere(t *testing.T) {
	e := newEnv(t, nil)
	for _, rt := range [][2]string{
		{"GET", "/admin/prefixes"}, {"GET", "/admin/prefixes/p"}, {"PUT", "/admin/prefixes/p"},
		{"DELETE", "/admin/prefixes/p"}, {"GET", "/admin/cluster"}, {"GET", "/admin/owner?channel=/a/b"},
	} {
		for _, auth := range []string{"", "Bearer wrong", "Bearer " + testAdminToken + "x", testAdminToken} {
			rec := e.do(rt[0], rt[1], strings.NewReader(`{"rules":[]}`), "Authorization", auth)
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("%s %s with %q: status %d", rt[0], rt[1], auth, rec.Code)
			}
			errorsOf(t, rec)
		}
	}
	if len(e.prefixes.List()) != 0 {
		t.Fatal("an unauthenticated PUT stored a document")
	}
}

func TestAdminReadsNeverShowAWebhookSecret(t *testing.T) {
	e := newEnv(t, nil)
	const doc = `{"rules":[{"match":"/hook/.+","config":{"public":true}}],` +
		`"webhook":{"url":"https://app.example/presence-hook","secret":"s3cr3t-value","events":["occupied","vacated"]}}`
	const shown = `{"rules":[{"match":"/hook/.+","config":{"public":true}}],` +
		`"webhook":{"url":"https://app.example/presence-hook","secret":"***","events":["occupied","vacated"]}}`
	code, body := e.admin("PUT", "/admin/prefixes/hook", doc)
	if code != http.StatusOK || strings.TrimSpace(body) != shown {
		t.Fatalf("put: %d %s, want %s", code, body, shown)
	}
	if stored, _ := e.prefixes.Get("hook"); !strings.Contains(string(stored), `"secret":"s3cr3t-value"`) {
		t.Fatalf("stored %s without the secret", stored)
	}
	if code, body = e.admin("GET", "/admin/prefixes/hook", ""); code != http.StatusOK || strings.TrimSpace(body) != shown {
		t.Fatalf("get: %d %s", code, body)
	}
	if code, body = e.admin("GET", "/admin/prefixes", ""); code != http.StatusOK || strings.Contains(body, "s3cr3t") || !strings.Contains(body, `"secret":"***"`) {
		t.Fatalf("list: %d %s", code, body)
	}

	// What a read shows, changed and written back, keeps the secret.
	changed := strings.Replace(shown, `["occupied","vacated"]`, `["entering_users"]`, 1)
	if code, body = e.admin("PUT", "/admin/prefixes/hook", changed); code != http.StatusOK || strings.TrimSpace(body) != changed {
		t.Fatalf("put back: %d %s", code, body)
	}
	stored, _ := e.prefixes.Get("hook")
	if !strings.Contains(string(stored), `"secret":"s3cr3t-value"`) || !strings.Contains(string(stored), `"events":["entering_users"]`) {
		t.Fatalf("stored %s: want the new events with the kept secret", stored)
	}
	// With no webhook stored there is no secret to keep.
	code, body = e.admin("PUT", "/admin/prefixes/other", shown)
	if code != http.StatusBadRequest || !strings.Contains(body, `webhook.secret: \"***\" keeps the stored secret`) {
		t.Fatalf("keeping a secret that is not stored: %d %s", code, body)
	}
	if _, ok := e.prefixes.Get("other"); ok {
		t.Fatal("a refused document was stored")
	}
	// A bad webhook is a 400 naming the field, and changes nothing.
	code, body = e.admin("PUT", "/admin/prefixes/hook", `{"webhook":{"url":"https://a/","secret":"k","events":["joined"]}}`)
	if code != http.StatusBadRequest || !strings.Contains(body, `webhook.events[0]: unknown event`) {
		t.Fatalf("bad events: %d %s", code, body)
	}
	if again, _ := e.prefixes.Get("hook"); string(again) != string(stored) {
		t.Fatal("a refused document changed the stored one")
	}
}
