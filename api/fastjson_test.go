package api

import (
	"encoding/json"
	"reflect"
	"testing"
)

// generalUpdateJSON decodes like parseUpdateJSON's general path.
func generalUpdateJSON(data []byte) (updateRequest, bool) {
	var raw struct {
		ClientID *string  `json:"client_id"`
		Present  []string `json:"present_channels"`
		Leave    []string `json:"leave_channels"`
	}
	if err := json.Unmarshal(data, &raw); err != nil || raw.ClientID == nil {
		return updateRequest{}, false
	}
	return updateRequest{ClientID: *raw.ClientID, Present: raw.Present, Leave: raw.Leave}, true
}

var updateBodies = []string{
	`{"client_id":"c","present_channels":["/a/b"]}`,
	` { "client_id" : "c" , "present_channels" : [ "/a/b" , "/a/c" ] , "leave_channels" : [ ] } `,
	`{"leave_channels":["/x/y"],"client_id":"tab-1"}`,
	`{"client_id":"é","present_channels":["/é/ü"]}`,
	`{"client_id":"c\u0041"}`,
	`{"client_id":"c","client_id":"d"}`,
	`{"client_id":"c","present_channels":null}`,
	`{"CLIENT_ID":"c"}`,
	`{"client_id":"c","other":1}`,
	`{"client_id":7}`,
	`{"client_id":"c"} x`,
	`{"client_id":"c",}`,
	`{"client_id":"c","present_channels":["/a",]}`,
	`{"client_id":"c","present_channels":[1]}`,
	"{\"client_id\":\"\xff\"}",
	`{}`,
	`[]`,
	``,
}

// TestScanUpdateJSONAgreesWithEncodingJSON: whenever the scanner answers,
// encoding/json decodes the same request.
func TestScanUpdateJSONAgreesWithEncodingJSON(t *testing.T) {
	answered := 0
	for _, body := range updateBodies {
		got, ok := scanUpdateJSON([]byte(body))
		if !ok {
			continue
		}
		answered++
		want, wok := generalUpdateJSON([]byte(body))
		if !wok || !sameRequest(got, want) {
			t.Errorf("%s: scanned %+v, encoding/json %+v (ok %v)", body, got, want, wok)
		}
	}
	if answered < 4 {
		t.Fatalf("the scanner answered only %d of the common bodies", answered)
	}
}

func FuzzScanUpdateJSON(f *testing.F) {
	for _, body := range updateBodies {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := scanUpdateJSON(body)
		if !ok {
			return
		}
		want, wok := generalUpdateJSON(body)
		if !wok || !sameRequest(got, want) {
			t.Fatalf("%q: scanned %+v, encoding/json %+v (ok %v)", body, got, want, wok)
		}
	})
}

func sameRequest(a, b updateRequest) bool {
	norm := func(l []string) []string {
		if len(l) == 0 {
			return nil
		}
		return l
	}
	return a.ClientID == b.ClientID && reflect.DeepEqual(norm(a.Present), norm(b.Present)) &&
		reflect.DeepEqual(norm(a.Leave), norm(b.Leave))
}

func TestAppendUpdateResultMatchesMarshal(t *testing.T) {
	cases := [][]string{
		nil,
		{"/a/b"},
		{"/z/1", "/a/2", "/m/3"},
		{"/a/<b>", "/a/&", "/a/\"q\"", "/a/\\", "/a/é", "/a/\u2028", "/a/\x01", "/a/\xff"},
	}
	for _, names := range cases {
		result := map[string]bool{}
		for i, n := range names {
			result[n] = i%2 == 0
		}
		want, err := json.Marshal(result)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendUpdateResult(nil, names, result); string(got) != string(want) {
			t.Errorf("names %q:\n got %s\nwant %s", names, got, want)
		}
	}
}
