package api

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/presencehq/presence/presence"
)

func TestParseUpdate(t *testing.T) {
	multi, multiCT := multipartBody(t, map[string][]string{"client_id": {"c"}, "present_channels": {"/a/b"}, "other": {"x"}})
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
		{"multipart too many parts", "multipart/form-data; boundary=B", strings.Repeat("--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n", maxFormParts+1) + "--B--\r\n", updateRequest{}, presence.ErrInvalid},
		{"too large", "application/json", `{"client_id":"` + strings.Repeat("c", 10000) + `"}`, updateRequest{}, presence.ErrTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseUpdate(tc.ct, strings.NewReader(tc.body), 10000)
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
// accepts honours the contract's limits.
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
	f.Add(uint8(2), []byte("--B\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\nc\r\n--B--\r\n"))
	f.Add(uint8(3), []byte(`{"client_id":"c"}`))
	f.Add(uint8(4), []byte("client_id=c"))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		req, err := parseUpdate(cts[int(which)%len(cts)], bytes.NewReader(body), 4096)
		if err != nil {
			if !errors.Is(err, presence.ErrInvalid) && !errors.Is(err, presence.ErrTooLarge) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if req.ClientID == "" || len(req.ClientID) > presence.MaxClientIDBytes ||
			len(req.Present) > presence.MaxChannelsPerCall || len(req.Leave) > presence.MaxChannelsPerCall {
			t.Fatalf("accepted out-of-contract request %+v", req)
		}
	})
}
