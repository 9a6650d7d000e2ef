package presence

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

const contractDocument = `{
  "rules": [
    {"match": "/site/online", "config": {"public": true}},
    {"match": "/topic/[0-9]+", "config": {"allowed_group_ids": ["staff"], "timeout": 30}}
  ],
  "callback": {"url": "http://app.internal/presence-config", "cache_seconds": 10}
}`

func mustParseDocument(t testing.TB, data string) *PrefixDocument {
	t.Helper()
	d, err := ParsePrefixDocument([]byte(data))
	if err != nil {
		t.Fatalf("ParsePrefixDocument(%s): %v", data, err)
	}
	return d
}

// sameDocument compares documents by their exported fields (compiled
// expressions are derived from Match).
func sameDocument(a, b *PrefixDocument) bool {
	if len(a.Rules) != len(b.Rules) || !reflect.DeepEqual(a.Callback, b.Callback) || !reflect.DeepEqual(a.Webhook, b.Webhook) {
		return false
	}
	for i := range a.Rules {
		if a.Rules[i].Match != b.Rules[i].Match || !reflect.DeepEqual(a.Rules[i].Config, b.Rules[i].Config) {
			return false
		}
	}
	return true
}

func TestParseContractDocument(t *testing.T) {
	d := mustParseDocument(t, contractDocument)
	want := &PrefixDocument{
		Rules: []Rule{
			{Match: "/site/online", Config: Config{Public: true}},
			{Match: "/topic/[0-9]+", Config: Config{AllowedGroupIDs: []string{"staff"}, Timeout: 30}},
		},
		Callback: &Callback{URL: "http://app.internal/presence-config", CacheSeconds: 10},
	}
	if !sameDocument(d, want) {
		t.Fatalf("parsed %+v, want %+v", d, want)
	}
	const canonical = `{"rules":[{"match":"/site/online","config":{"public":true}},` +
		`{"match":"/topic/[0-9]+","config":{"allowed_group_ids":["staff"],"timeout":30}}],` +
		`"callback":{"url":"http://app.internal/presence-config","cache_seconds":10}}`
	if got := string(d.Bytes()); got != canonical {
		t.Fatalf("Bytes() = %s\nwant        %s", got, canonical)
	}
	again := mustParseDocument(t, canonical)
	if !sameDocument(d, again) || string(again.Bytes()) != canonical {
		t.Fatal("canonical bytes do not round-trip")
	}
}

func TestParseDocumentDefaultsAndEmpty(t *testing.T) {
	cases := []struct {
		in, canonical string
	}{
		{`{}`, `{"rules":[]}`},
		{` {"rules": null, "callback": null} `, `{"rules":[]}`},
		{`{"rules": []}`, `{"rules":[]}`},
		{`{"callback": {"url": "https://x.example/cb"}}`, `{"rules":[],"callback":{"url":"https://x.example/cb","cache_seconds":10}}`},
		{`{"callback": {"url": "https://x.example/cb", "cache_seconds": 0}}`, `{"rules":[],"callback":{"url":"https://x.example/cb","cache_seconds":0}}`},
		{`{"rules": [{"match": "/a/.*", "config": {}}]}`, `{"rules":[{"match":"/a/.*","config":{}}]}`},
		{`{"rules": [{"config": {"allowed_user_ids": null, "public": false}, "match": "/a/<&>"}]}`, `{"rules":[{"match":"/a/<&>","config":{}}]}`},
	}
	for _, c := range cases {
		d := mustParseDocument(t, c.in)
		if got := string(d.Bytes()); got != c.canonical {
			t.Errorf("%s: Bytes() = %s, want %s", c.in, got, c.canonical)
		}
	}
	zero := mustParseDocument(t, `{"callback": {"url": "http://h/", "cache_seconds": 0}}`)
	if zero.Callback.CacheSeconds != 0 {
		t.Errorf("explicit cache_seconds 0 became %d", zero.Callback.CacheSeconds)
	}
	if d := mustParseDocument(t, `{"callback": {"url": "http://h/"}}`); d.Callback.CacheSeconds != DefaultCacheSeconds {
		t.Errorf("absent cache_seconds gave %d, want %d", d.Callback.CacheSeconds, DefaultCacheSeconds)
	}
}

func TestParseDocumentErrors(t *testing.T) {
	rule := func(config string) string {
		return `{"rules": [{"match": "/a/b", "config": {}}, {"match": "/a/.*", "config": ` + config + `}]}`
	}
	manyRules := `{"rules": [` + strings.Repeat(`{"match": "/a/b", "config": {}},`, MaxRules) + `{"match": "/a/b", "config": {}}]}`
	manyIDs := `[` + strings.Repeat(`"u",`, MaxConfigIDs) + `"u"]`
	cases := []struct {
		in, msg string
	}{
		{``, "must be a JSON object"},
		{`   `, "must be a JSON object"},
		{`[]`, "must be a JSON object"},
		{`null`, "must be a JSON object"},
		{`{"rules": []`, "invalid JSON"},
		{`{"rules": [] }{}`, "unexpected data after the object"},
		{`{"rules": [] } x`, "unexpected data after the object"},
		{`{"rules": [] }]`, "unexpected data after the object"},
		{`{"rules": [], "extra": 1}`, `unknown field "extra"`},
		{`{"Rules": []}`, `unknown field "Rules"`},
		{`{"rules": [], "rules": []}`, `duplicate field "rules"`},
		{`{"rules": {}}`, "rules: must be an array of rules"},
		{`{"rules": [1]}`, "rules[0]: must be a JSON object"},
		{`{"rules": [{"match": "/a/b"}]}`, "rules[0].config: required"},
		{`{"rules": [{"config": {}}]}`, "rules[0].match: required"},
		{`{"rules": [{"match": "/a/b", "config": {}, "name": "x"}]}`, `rules[0]: unknown field "name"`},
		{`{"rules": [{"match": "/a/b", "config": {}}, {"match": "/topic/(", "config": {}}]}`, "rules[1].match: invalid regex: "},
		{`{"rules": [{"match": "", "config": {}}]}`, "rules[0].match: must not be empty"},
		{`{"rules": [{"match": null, "config": {}}]}`, "rules[0].match: must be a string"},
		{`{"rules": [{"match": 5, "config": {}}]}`, "rules[0].match: must be a string"},
		{`{"rules": [{"match": "/a/\\Qx", "config": {}}]}`, `rules[0].match: invalid regex: \Q quote`},
		{`{"rules": [{"match": "/a/\\Qx\\", "config": {}}]}`, `rules[0].match: invalid regex: \Q quote`},
		{`{"rules": [{"match": "/a/b)|(.*", "config": {}}]}`, "rules[0].match: invalid regex"},
		{`{"rules": [{"match": "a{1000}b{1000}c{1000}d{1000}e{1000}", "config": {}}]}`, "rules[0].match: regex too large"},
		{`{"rules": [{"match": "` + strings.Repeat("a", MaxMatchBytes+1) + `", "config": {}}]}`, "rules[0].match: longer than"},
		{manyRules, "rules: at most 1000 rules"},
		{rule(`{"timeout": -1}`), "rules[1].config.timeout: must be an integer 1..3600"},
		{rule(`{"timeout": 0}`), "rules[1].config.timeout: must be an integer 1..3600"},
		{rule(`{"timeout": -0}`), "rules[1].config.timeout: must be an integer 1..3600"},
		{rule(`{"timeout": 3601}`), "rules[1].config.timeout: must be an integer 1..3600"},
		{rule(`{"timeout": 1.5}`), "rules[1].config.timeout: must be an integer"},
		{rule(`{"timeout": "30"}`), "rules[1].config.timeout: must be an integer"},
		{rule(`{"timeout": 1e2}`), "rules[1].config.timeout: must be an integer"},
		{rule(`{"timeout": 99999999999999999999}`), "rules[1].config.timeout: must be an integer"},
		{rule(`{"timeout": null}`), "rules[1].config.timeout: must be an integer"},
		{rule(`{"max_users": 0}`), "rules[1].config.max_users: must be an integer 1..1000000"},
		{rule(`{"max_users": -3}`), "rules[1].config.max_users: must be an integer 1..1000000"},
		{rule(`{"max_users": 1000001}`), "rules[1].config.max_users: must be an integer 1..1000000"},
		{rule(`{"max_users": 2.5}`), "rules[1].config.max_users: must be an integer"},
		{rule(`{"max_users": "10"}`), "rules[1].config.max_users: must be an integer"},
		{rule(`{"max_users": null}`), "rules[1].config.max_users: must be an integer"},
		{rule(`{"max_users": true}`), "rules[1].config.max_users: must be an integer"},
		{rule(`{"public": "yes"}`), "rules[1].config.public: must be true or false"},
		{rule(`{"public": null}`), "rules[1].config.public: must be true or false"},
		{rule(`{"count_only": 1}`), "rules[1].config.count_only: must be true or false"},
		{rule(`{"allowed_user_ids": "u"}`), "rules[1].config.allowed_user_ids: must be an array of strings"},
		{rule(`{"allowed_user_ids": ["u", 7]}`), "rules[1].config.allowed_user_ids: must be an array of strings"},
		{rule(`{"allowed_user_ids": ["u", null]}`), "rules[1].config.allowed_user_ids[1]: must be a string"},
		{rule(`{"allowed_group_ids": [""]}`), "rules[1].config.allowed_group_ids[0]: must be a non-empty string"},
		{rule(`{"allowed_group_ids": ["` + strings.Repeat("g", MaxIDBytes+1) + `"]}`), "rules[1].config.allowed_group_ids[0]: must be a non-empty string of at most 128 bytes"},
		{rule(`{"allowed_user_ids": ` + manyIDs + `}`), "rules[1].config.allowed_user_ids: at most 10000 ids"},
		{rule(`{"Public": true}`), `rules[1].config: unknown field "Public"`},
		{rule(`{"public": true, "public": false}`), `rules[1].config: duplicate field "public"`},
		{rule(`[]`), "rules[1].config: must be a JSON object"},
		{`{"callback": {}}`, "callback.url: required"},
		{`{"callback": []}`, "callback: must be a JSON object"},
		{`{"callback": {"url": "/relative"}}`, "callback.url: must be an absolute http or https URL"},
		{`{"callback": {"url": "ftp://h/x"}}`, "callback.url: must be an absolute http or https URL"},
		{`{"callback": {"url": "http:opaque"}}`, "callback.url: must be an absolute http or https URL"},
		{`{"callback": {"url": "http://"}}`, "callback.url: must be an absolute http or https URL"},
		{`{"callback": {"url": "http://h/%zz"}}`, "callback.url: invalid URL"},
		{`{"callback": {"url": 7}}`, "callback.url: must be a string"},
		{`{"callback": {"url": "http://h/` + strings.Repeat("x", MaxCallbackURLBytes) + `"}}`, "callback.url: longer than"},
		{`{"callback": {"url": "http://h/", "cache_seconds": 601}}`, "callback.cache_seconds: must be an integer 0..600"},
		{`{"callback": {"url": "http://h/", "cache_seconds": -1}}`, "callback.cache_seconds: must be an integer 0..600"},
		{`{"callback": {"url": "http://h/", "cache_seconds": null}}`, "callback.cache_seconds: must be an integer 0..600"},
		{`{"callback": {"url": "http://h/", "timeout": 3}}`, `callback: unknown field "timeout"`},
		{`{"rules": [] /* comment */}`, "invalid JSON"},
		{`{'rules': []}`, "invalid JSON"},
	}
	for _, c := range cases {
		d, err := ParsePrefixDocument([]byte(c.in))
		if err == nil {
			t.Errorf("%.120s: accepted as %s", c.in, d.Bytes())
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%.120s: error %v does not wrap ErrInvalid", c.in, err)
		}
		if !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%.120s: error %q, want it to contain %q", c.in, err, c.msg)
		}
	}
}

func TestParseDocumentTooLarge(t *testing.T) {
	big := `{"rules": [], "callback": null}` + strings.Repeat(" ", MaxPrefixDocumentBytes)
	if _, err := ParsePrefixDocument([]byte(big)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized document: err = %v, want ErrInvalid", err)
	}
	// Estimated size adds up across rules, not only within one.
	var rules []string
	for range MaxDocumentMatchSize/4000 + 1 {
		rules = append(rules, `{"match": "/a/w{1000}x{1000}y{1000}z{1000}", "config": {}}`)
	}
	doc := `{"rules": [` + strings.Join(rules, ",") + `]}`
	if _, err := ParsePrefixDocument([]byte(doc)); err == nil || !strings.Contains(err.Error(), "too large together") {
		t.Fatalf("rules too large together: err = %v", err)
	}
}

func TestRuleMatching(t *testing.T) {
	d := mustParseDocument(t, `{"rules": [
		{"match": "/topic/1", "config": {"timeout": 1}},
		{"match": "/topic/[0-9]+", "config": {"timeout": 2}},
		{"match": "/topic/x|/topic/y", "config": {"timeout": 3}},
		{"match": "(?i)/topic/\\Qa.b\\E", "config": {"timeout": 4}},
		{"match": "(?m)/topic/m$", "config": {"timeout": 5}},
		{"match": "/topic/.+", "config": {"timeout": 6}}
	]}`)
	cases := []struct {
		channel string
		timeout int // 0 = no rule
	}{
		{"/topic/1", 1},  // first match wins over the later [0-9]+
		{"/topic/12", 2}, // "/topic/1" must match the whole name
		{"/topic/x", 3},  // anchoring covers the whole alternation
		{"/topic/y", 3},
		{"/topic/xx", 6},
		{"/topic/A.B", 4}, // quoted dot is literal, flag scoped to the rule
		{"/topic/aXb", 6},
		{"/topic/m", 5},
		{"/topic/m\n/topic/m", 0}, // (?m) must not let $ stop at a newline
		{"/topic/", 0},
		{"x/topic/1", 0},
		{"/topic/1 ", 6},
		{"/other/1", 0},
	}
	for _, c := range cases {
		cfg, ok := d.match(c.channel)
		got := 0
		if ok {
			got = cfg.Timeout
		}
		if got != c.timeout {
			t.Errorf("match(%q) gave rule with timeout %d, want %d", c.channel, got, c.timeout)
		}
	}
}

func TestDocumentJSONEmbedding(t *testing.T) {
	in := map[string]*PrefixDocument{"topic": mustParseDocument(t, contractDocument)}
	data, err := json.Marshal(map[string]any{"prefixes": in})
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Prefixes map[string]*PrefixDocument `json:"prefixes"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if !sameDocument(in["topic"], out.Prefixes["topic"]) {
		t.Fatalf("embedded document changed: %s", data)
	}
	if _, ok := out.Prefixes["topic"].match("/topic/42"); !ok {
		t.Fatal("an unmarshalled document must be usable for matching")
	}
	bad := []byte(`{"prefixes": {"x": {"rules": [], "nope": 1}}}`)
	if err := json.Unmarshal(bad, &out); !errors.Is(err, ErrInvalid) {
		t.Fatalf("embedded invalid document: err = %v, want ErrInvalid", err)
	}
}

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"public": false, "allowed_user_ids": ["1", "2"], "allowed_group_ids": null, "count_only": true, "timeout": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{AllowedUserIDs: []string{"1", "2"}, CountOnly: true, Timeout: 1}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got %+v, want %+v", cfg, want)
	}
	for _, in := range []string{`{}`, ` {} `} {
		if cfg, err := ParseConfig([]byte(in)); err != nil || cfg.TimeoutSeconds() != DefaultTimeoutSeconds {
			t.Errorf("%s: %+v, %v", in, cfg, err)
		}
	}
	errs := map[string]string{
		`{"public": true} {}`:     "unexpected data after the object",
		`{"users": []}`:           `unknown field "users"`,
		`{"timeout": 0.5}`:        "timeout: must be an integer 1..3600",
		`{"timeout": 0}`:          "timeout: must be an integer 1..3600",
		`{"max_users": 0}`:        "max_users: must be an integer 1..1000000",
		`{"allowed_user_ids": 1}`: "allowed_user_ids: must be an array of strings",
		`"public"`:                "must be a JSON object",
	}
	for in, msg := range errs {
		_, err := ParseConfig([]byte(in))
		if !errors.Is(err, ErrInvalid) || err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseConfig(%s) = %v, want ErrInvalid containing %q", in, err, msg)
		}
	}
	if _, err := ParseConfig(make([]byte, MaxConfigBytes+1)); !errors.Is(err, ErrInvalid) {
		t.Errorf("oversized config: err = %v", err)
	}
}

func TestParseConfigMaxUsers(t *testing.T) {
	for in, want := range map[string]int{`{"max_users": 1}`: 1, `{"max_users": 1000000}`: MaxUsersLimit, `{}`: 0} {
		cfg, err := ParseConfig([]byte(in))
		if err != nil || cfg.MaxUsers != want {
			t.Errorf("ParseConfig(%s) = %+v, %v; want max_users %d", in, cfg, err, want)
		}
	}
	d := mustParseDocument(t, `{"rules": [{"match": "/room/.+", "config": {"public": true, "max_users": 25}}]}`)
	const canonical = `{"rules":[{"match":"/room/.+","config":{"public":true,"max_users":25}}]}`
	if got := string(d.Bytes()); got != canonical {
		t.Fatalf("Bytes() = %s, want %s", got, canonical)
	}
	if again := mustParseDocument(t, canonical); !sameDocument(d, again) {
		t.Fatal("max_users does not round-trip")
	}
}

func TestErrorMessageIsForHumans(t *testing.T) {
	_, err := ParsePrefixDocument([]byte(`{"rules": [{"match": "/a/b", "config": {}}, {"match": "(", "config": {}}]}`))
	msg := fmt.Sprint(err)
	if !strings.HasPrefix(msg, "rules[1].match: invalid regex: ") {
		t.Fatalf("message %q should start with the field path", msg)
	}
}
