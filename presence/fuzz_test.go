package presence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"testing"
	"unicode"
	"unicode/utf8"
)

// referenceName is the slow, obviously right reading of the contract's
// channel name rule that ChannelPrefix must agree with.
var referenceName = regexp.MustCompile(`(?s)^/([a-zA-Z0-9_-]+)/(.+)$`)

func referencePrefix(name string) (string, bool) {
	if len(name) > MaxChannelNameBytes || !utf8.ValidString(name) {
		return "", false
	}
	for _, r := range name {
		if unicode.IsControl(r) { // exactly C0, DEL and C1
			return "", false
		}
	}
	m := referenceName.FindStringSubmatch(name)
	if m == nil {
		return "", false
	}
	return m[1], true
}

var referencePrefixRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

func FuzzValidChannelName(f *testing.F) {
	for _, s := range []string{
		"/a/b", "/site/online", "/topic/123", "/a//", "//b", "/a/", "/é/x", "/chat/日本語",
		"/a/b\x00", "/a/b\u0085", "/a/b\xff", "/a/\uFFFD", "/a/b\xed\xa0\x80", "/a-_Z9/\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		prefix, ok := ChannelPrefix(name)
		wantPrefix, wantOK := referencePrefix(name)
		if ok != wantOK || prefix != wantPrefix {
			t.Fatalf("ChannelPrefix(%q) = %q, %v; reference says %q, %v", name, prefix, ok, wantPrefix, wantOK)
		}
		if ValidChannelName(name) != ok {
			t.Fatalf("ValidChannelName(%q) disagrees with ChannelPrefix", name)
		}
		wantValidPrefix := referencePrefixRE.MatchString(name) && len(name) <= MaxPrefixBytes
		if ValidPrefix(name) != wantValidPrefix {
			t.Fatalf("ValidPrefix(%q) = %v, want %v", name, !wantValidPrefix, wantValidPrefix)
		}
		if ok && !ValidPrefix(prefix) {
			t.Fatalf("prefix %q of valid name %q is not a valid prefix", prefix, name)
		}
	})
}

func FuzzParsePrefixDocument(f *testing.F) {
	for _, s := range []string{
		contractDocument,
		`{}`,
		`{"rules": null, "callback": null}`,
		`{"rules": [{"match": "(?i)/a/\\Qx.y\\E|/a/[^/]+", "config": {"count_only": true, "allowed_user_ids": ["1"]}}]}`,
		`{"callback": {"url": "https://h:8443/p?q=1", "cache_seconds": 0}}`,
		`{"rules": [{"match": "/a/\\Qx", "config": {}}]}`,
		`{"rules": [{"match": "a{1000}b{1000}c{1000}d{1000}e{1000}", "config": {}}]}`,
		`{"rules": [], "rules": []}`,
		`{"public": true, "timeout": 30, "allowed_group_ids": ["everyone"]}`,
		`{"timeout": 1e2}`,
		`{"rules": [] } x`,
		`{"timeout": 0}`,
		`{"timeout": -0}`,
		`{"timeout": 0e0}`,
		`{"public": true, "max_users": 25}`,
		`{"max_users": 0}`,
		`{"max_users": 1000001}`,
		`{"rules": [{"match": "/a/.+", "config": {"max_users": 1, "count_only": true}}]}`,
	} {
		f.Add([]byte(s))
	}
	for _, s := range typedValueDocuments() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDocumentRoundTrip(t, data)
		checkConfigRoundTrip(t, data)
		checkTimeoutKept(t, data)
	})
}

// typedJSONValues are values of every JSON type, nested ones included,
// for seeding parsers with a wrong type in each position.
var typedJSONValues = []string{
	`null`, `true`, `false`, `0`, `-0`, `1`, `-1`, `30`, `3601`, `1.5`, `1e2`, `99999999999999999999`,
	`""`, `"x"`, `"/a/b"`, `[]`, `[null]`, `["a", null]`, `[1]`, `[[]]`, `[["a"]]`, `[{}]`,
	`{}`, `{"a": null}`, `{"a": [{"b": {}}]}`,
}

// typedValueDocuments puts each of typedJSONValues in every position of a
// prefix document and of a channel config.
func typedValueDocuments() []string {
	templates := []string{
		`{"rules": %s}`,
		`{"rules": [%s]}`,
		`{"rules": [{"match": %s, "config": {}}]}`,
		`{"rules": [{"match": "/a/b", "config": %s}]}`,
		`{"callback": %s}`,
		`{"callback": {"url": %s}}`,
		`{"callback": {"url": "http://h/p", "cache_seconds": %s}}`,
		`{"public": %s}`,
		`{"count_only": %s}`,
		`{"timeout": %s}`,
		`{"max_users": %s}`,
		`{"allowed_user_ids": %s}`,
		`{"allowed_group_ids": [%s]}`,
		`{"rules": [{"match": "/a/b", "config": {"timeout": %s}}]}`,
		`{"rules": [{"match": "/a/b", "config": {"max_users": %s}}]}`,
		`{"rules": [{"match": "/a/b", "config": {"allowed_user_ids": [%s]}}]}`,
	}
	var out []string
	for _, tpl := range templates {
		for _, v := range typedJSONValues {
			out = append(out, fmt.Sprintf(tpl, v))
		}
	}
	return out
}

// checkTimeoutKept: a config that parses and names a timeout or a cap has
// exactly that value, within the contract's range (an explicit 0 is never
// read as "the default" or "no cap").
func checkTimeoutKept(t *testing.T, data []byte) {
	cfg, err := ParseConfig(data)
	if err != nil {
		return
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(data, &raw) != nil {
		t.Fatalf("ParseConfig accepted %q, which is not a JSON object", data)
	}
	for _, f := range []struct {
		name   string
		got    int
		lo, hi int
	}{{"timeout", cfg.Timeout, MinTimeoutSeconds, MaxTimeoutSeconds}, {"max_users", cfg.MaxUsers, 1, MaxUsersLimit}} {
		v, named := raw[f.name]
		if !named {
			if f.got != 0 {
				t.Fatalf("config %q without %s parsed with %s %d", data, f.name, f.name, f.got)
			}
			continue
		}
		var n int
		if json.Unmarshal(v, &n) != nil || n != f.got || n < f.lo || n > f.hi {
			t.Fatalf("config %q parsed with %s %d", data, f.name, f.got)
		}
	}
}

func checkDocumentRoundTrip(t *testing.T, data []byte) {
	d, err := ParsePrefixDocument(data)
	if err != nil {
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v does not wrap ErrInvalid", err)
		}
		return
	}
	canonical := d.Bytes()
	again, err := ParsePrefixDocument(canonical)
	if err != nil {
		t.Fatalf("canonical form %s of %q rejected: %v", canonical, data, err)
	}
	if !sameDocument(d, again) {
		t.Fatalf("canonical form %s of %q parses to a different document", canonical, data)
	}
	if !bytes.Equal(again.Bytes(), canonical) {
		t.Fatalf("canonical form not stable: %s then %s", canonical, again.Bytes())
	}
}

func checkConfigRoundTrip(t *testing.T, data []byte) {
	cfg, err := ParseConfig(data)
	if err != nil {
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v does not wrap ErrInvalid", err)
		}
		return
	}
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseConfig(out)
	if err != nil {
		t.Fatalf("marshalled config %s of %q rejected: %v", out, data, err)
	}
	if !reflect.DeepEqual(cfg, again) {
		t.Fatalf("config %q round-trips to %+v, was %+v", data, again, cfg)
	}
}
