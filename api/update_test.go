package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/presencehq/presence/presence"
)

func TestParseUpdate(t *testing.T) {
	multi, multiCT := multipartBody(t, map[string][]string{"client_id": {"c"}, "present_channels": {"/a/b"}, "other": {"x"}})
	multiTok, multiTokCT := multipartBody(t, map[string][]string{"client_id": {"c"}, "token": {"t.u.v"}})
	cases := []struct {
		name, ct, body string
		want           updateRequest
		err            error
	}{
		{"json minimal", "application/json", `{"client_id":"c"}`, updateRequest{ClientID: "c"}, nil},
		{"json sniffed", "", ` {"client_id":"c","leave_channels":["/a/b"]}`, updateRequest{ClientID: "c", Leave: []string{"/a/b"}}, nil},
		{"json bad media type", "%%%", `{"client_id":"c"}`, updateRequest{ClientID: "c"}, nil},
		{"json unicode", "application/json", `{"client_id":"\u00e9"}`, updateRequest{ClientID: "é"}, nil},
		{"form", "application/x-www-form-urlencoded", "client_id=c&present_channels[]=/a/b", updateRequest{ClientID: "c", Present: []string{"/a/b"}}, nil},
		{"form unknown fields ignored", "application/x-www-form-urlencoded", "client_id=c&x=1", updateRequest{ClientID: "c"}, nil},
		{"multipart", multiCT, multi.String(), updateRequest{ClientID: "c", Present: []string{"/a/b"}}, nil},
		{"empty body", "", "", updateRequest{}, presence.ErrInvalid},
		{"json client_id bool", "application/json", `{"client_id":true}`, updateRequest{}, presence.ErrInvalid},
		{"json form body", "application/json", `client_id=c`, updateRequest{}, presence.ErrInvalid},
		{"form json body", "application/x-www-form-urlencoded", `{"client_id":"c"}`, updateRequest{}, presence.ErrInvalid},
		{"multipart too many parts", "multipart/form-data; boundary=B", strings.Repeat("--B\r\n\r\nv\r\n", maxFormParts+1) + "--B--\r\n", updateRequest{}, presence.ErrInvalid},
		{"json null present entry", "application/json", `{"client_id":"c","present_channels":["/x",null]}`, updateRequest{}, presence.ErrInvalid},
		{"json null leave entry", "application/json", `{"client_id":"c","leave_channels":[null]}`, updateRequest{}, presence.ErrInvalid},
		{"json number entry", "application/json", `{"client_id":"c","present_channels":[1]}`, updateRequest{}, presence.ErrInvalid},
		{"json nested entry", "application/json", `{"client_id":"c","present_channels":[["/x"]]}`, updateRequest{}, presence.ErrInvalid},
		{"json 500 leave", "application/json", `{"client_id":"c","leave_channels":` + jsonList(channelList(500)) + `}`, updateRequest{ClientID: "c", Leave: channelList(500)}, nil},
		{"json 501 leave", "application/json", `{"client_id":"c","leave_channels":` + jsonList(channelList(501)) + `}`, updateRequest{}, presence.ErrInvalid},
		{"json 51 present", "application/json", `{"client_id":"c","present_channels":` + jsonList(channelList(51)) + `}`, updateRequest{}, presence.ErrInvalid},
		{"json token ignored", "application/json", `{"client_id":"c","token":"t"}`, updateRequest{ClientID: "c"}, nil},
		{"form token", "application/x-www-form-urlencoded", "client_id=c&token=t.u.v", updateRequest{ClientID: "c", Token: "t.u.v"}, nil},
		{"form two tokens", "application/x-www-form-urlencoded", "client_id=c&token=a&token=b", updateRequest{}, presence.ErrInvalid},
		{"text/plain form with token", "text/plain", "client_id=c&token=t", updateRequest{ClientID: "c", Token: "t"}, nil},
		{"too large", "application/json", `{"client_id":"` + strings.Repeat("c", 10000) + `"}`, updateRequest{}, presence.ErrTooLarge},
		{"multipart token", multiTokCT, multiTok.String(), updateRequest{ClientID: "c", Token: "t.u.v"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			limit := int64(10000)
			if tc.err != presence.ErrTooLarge {
				limit = max(limit, int64(len(tc.body)))
			}
			got, err := parseUpdate(tc.ct, strings.NewReader(tc.body), limit)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// FuzzParseUpdate feeds arbitrary bodies under each content type: parsing
// never panics, fails only with ErrInvalid or ErrTooLarge, and what it
// accepts honours the contract's limits. A JSON body it accepts decodes, by
// encoding/json into pointers, to the same request with no null where a
// string belongs.
func FuzzParseUpdate(f *testing.F) {
	cts := []string{
		"application/json",
		"application/x-www-form-urlencoded",
		"multipart/form-data; boundary=B",
		"text/plain",
		"",
	}
	f.Add(uint8(0), []byte(`{"client_id":"c","present_channels":["/a/b"],"leave_channels":[]}`))
	f.Add(uint8(0), []byte(`{"client_id":1}`))
	f.Add(uint8(1), []byte("client_id=c&present_channels[]=/a/b&leave_channels=/a/c"))
	f.Add(uint8(1), []byte("client_id=%zz"))
	f.Add(uint8(1), []byte("client_id=c&token=a.b.c&token[]=d"))
	f.Add(uint8(2), []byte("--B\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\nc\r\n--B--\r\n"))
	f.Add(uint8(2), []byte("--B\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\nt\r\n--B--\r\n"))
	f.Add(uint8(3), []byte(`{"client_id":"c"}`))
	f.Add(uint8(4), []byte("client_id=c"))
	for _, body := range typedUpdateBodies() {
		f.Add(uint8(0), []byte(body))
		f.Add(uint8(4), []byte(body))
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		ct := cts[int(which)%len(cts)]
		req, err := parseUpdate(ct, bytes.NewReader(body), 4096)
		if err != nil {
			if !errors.Is(err, presence.ErrInvalid) && !errors.Is(err, presence.ErrTooLarge) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if req.ClientID == "" || len(req.ClientID) > presence.MaxClientIDBytes ||
			len(req.Present) > presence.MaxChannelsPerCall || len(req.Leave) > presence.MaxLeaveChannels {
			t.Fatalf("accepted out-of-contract request %+v", req)
		}
		if ct == "application/json" || ct != cts[1] && ct != cts[2] && looksLikeJSON(body) {
			checkTypedJSON(t, body, req)
		}
	})
}

// typedUpdateBodies put a value of every JSON type, nested ones included,
// in every position of an update body.
func typedUpdateBodies() []string {
	values := []string{
		`null`, `true`, `0`, `-1.5e3`, `""`, `"c"`, `[]`, `[null]`, `["/a/b",null]`, `[null,"/a/b"]`,
		`[1]`, `[true]`, `[[]]`, `[["/a/b"]]`, `[{}]`, `{}`, `{"a":null}`, `{"a":["/a/b"]}`, `[{"a":[null]}]`,
	}
	templates := []string{
		`{"client_id":%s}`,
		`{"client_id":"c","present_channels":%s}`,
		`{"client_id":"c","leave_channels":%s}`,
		`{"client_id":"c","present_channels":["/a/b",%s]}`,
		`{"client_id":"c","leave_channels":[%s,"/a/b"]}`,
		`{"client_id":"c","token":%s}`,
		`{"client_id":"c","other":%s}`,
		`%s`,
	}
	var out []string
	for _, tpl := range templates {
		for _, v := range values {
			out = append(out, fmt.Sprintf(tpl, v))
		}
	}
	return out
}

// checkTypedJSON decodes an accepted JSON body into pointers, where a null
// stays visible, and compares it with what parseUpdate returned.
func checkTypedJSON(t *testing.T, body []byte, req updateRequest) {
	var ref struct {
		ClientID *string   `json:"client_id"`
		Present  []*string `json:"present_channels"`
		Leave    []*string `json:"leave_channels"`
	}
	if err := json.Unmarshal(body, &ref); err != nil || ref.ClientID == nil || *ref.ClientID != req.ClientID {
		t.Fatalf("accepted %q, which does not decode to client_id %q (%v)", body, req.ClientID, err)
	}
	same := func(field string, ref []*string, got []string) {
		if len(ref) != len(got) {
			t.Fatalf("%s of %q: %d entries accepted, %d decoded", field, body, len(got), len(ref))
		}
		for i, v := range ref {
			if v == nil || *v != got[i] {
				t.Fatalf("%s[%d] of %q accepted as %q", field, i, body, got[i])
			}
		}
	}
	same(fieldPresent, ref.Present, req.Present)
	same(fieldLeave, ref.Leave, req.Leave)
	if req.Token != "" {
		t.Fatalf("a JSON body gave token %q", req.Token)
	}
}
