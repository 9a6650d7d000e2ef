package api

import (
	"bytes"
	"context"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/presencehq/presence/presence"
)

// channelList returns n distinct channel names.
func channelList(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("/a/%d", i)
	}
	return out
}

func jsonList(names []string) string {
	return `["` + strings.Join(names, `","`) + `"]`
}

func getQuery(names []string) string {
	v := url.Values{"channels[]": names}
	return "/presence/get?" + v.Encode()
}

func subscribeQuery(obj string) string {
	return "/presence/subscribe?channels=" + url.QueryEscape(obj)
}

func manyChannelsObject(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"/a/%d":-1`, i)
	}
	b.WriteString("}")
	return b.String()
}

// TestBadInputAnswers4xxJSON walks every bad input of the contract: each gets
// its 4xx status and an {"errors": [...]} body, and nothing reaches the Service.
func TestBadInputAnswers4xxJSON(t *testing.T) {
	user := bearerHeader(userToken(t, "7"))
	admin := bearerHeader(testAdminToken)
	jsonCT := "application/json"
	formCT := "application/x-www-form-urlencoded"
	long := strings.Repeat("x", presence.MaxClientIDBytes+1)

	cases := []struct {
		name, method, target, body, ct, auth string
		status                               int
	}{
		{"get no channels", "GET", "/presence/get", "", "", "", 400},
		{"get empty channels param", "GET", "/presence/get?foo=1", "", "", "", 400},
		{"get 51 channels", "GET", getQuery(channelList(51)), "", "", "", 400},
		{"get bad token", "GET", getQuery([]string{"/a/b"}), "", "", "Bearer nope", 401},
		{"get non-bearer auth", "GET", getQuery([]string{"/a/b"}), "", "", "Basic Zm9vOmJhcg==", 401},
		{"get wrong method", "POST", "/presence/get", "", "", "", 405},

		{"update anonymous", "POST", "/presence/update", `{"client_id":"c"}`, jsonCT, "", 403},
		{"update bad token", "POST", "/presence/update", `{"client_id":"c"}`, jsonCT, "Bearer x.y.z", 401},
		{"update missing client_id", "POST", "/presence/update", `{"present_channels":["/a/b"]}`, jsonCT, user, 400},
		{"update empty client_id", "POST", "/presence/update", `{"client_id":""}`, jsonCT, user, 400},
		{"update null client_id", "POST", "/presence/update", `{"client_id":null}`, jsonCT, user, 400},
		{"update numeric client_id", "POST", "/presence/update", `{"client_id":12}`, jsonCT, user, 400},
		{"update array client_id", "POST", "/presence/update", `{"client_id":["a"]}`, jsonCT, user, 400},
		{"update long client_id", "POST", "/presence/update", `{"client_id":"` + long + `"}`, jsonCT, user, 400},
		{"update present not array", "POST", "/presence/update", `{"client_id":"c","present_channels":"/a/b"}`, jsonCT, user, 400},
		{"update present numbers", "POST", "/presence/update", `{"client_id":"c","present_channels":[1,2]}`, jsonCT, user, 400},
		{"update present nested", "POST", "/presence/update", `{"client_id":"c","present_channels":[["/a/b"]]}`, jsonCT, user, 400},
		{"update leave not array", "POST", "/presence/update", `{"client_id":"c","leave_channels":{"a":1}}`, jsonCT, user, 400},
		{"update 51 present", "POST", "/presence/update", `{"client_id":"c","present_channels":` + jsonList(channelList(51)) + `}`, jsonCT, user, 400},
		{"update 501 leave", "POST", "/presence/update", `{"client_id":"c","leave_channels":` + jsonList(channelList(501)) + `}`, jsonCT, user, 400},
		// #15: a null entry was decoded as "" and answered {"": false}.
		{"update present null entry", "POST", "/presence/update", `{"client_id":"c","present_channels":["/x",null]}`, jsonCT, user, 400},
		{"update leave null entry", "POST", "/presence/update", `{"client_id":"c","leave_channels":[null]}`, jsonCT, user, 400},
		{"update present object entry", "POST", "/presence/update", `{"client_id":"c","present_channels":[{}]}`, jsonCT, user, 400},
		{"update form two tokens", "POST", "/presence/update", "client_id=c&token=a&token=b", formCT, "", 400},
		{"update form bad token", "POST", "/presence/update", "client_id=c&token=x.y.z", formCT, "", 401},
		{"update form no token", "POST", "/presence/update", "client_id=c&present_channels[]=/a/b", formCT, "", 403},
		{"update JSON token field", "POST", "/presence/update", `{"client_id":"c","token":"` + userToken(t, "7") + `"}`, jsonCT, "", 403},
		{"update JSON not object", "POST", "/presence/update", `["c"]`, jsonCT, user, 400},
		{"update JSON truncated", "POST", "/presence/update", `{"client_id":"c"`, jsonCT, user, 400},
		{"update JSON trailing", "POST", "/presence/update", `{"client_id":"c"} x`, jsonCT, user, 400},
		{"update form missing client_id", "POST", "/presence/update", "present_channels[]=/a/b", formCT, user, 400},
		{"update form two client_ids", "POST", "/presence/update", "client_id=a&client_id=b", formCT, user, 400},
		{"update form bad escape", "POST", "/presence/update", "client_id=%zz", formCT, user, 400},
		{"update form long client_id", "POST", "/presence/update", "client_id=" + long, formCT, user, 400},
		{"update form 51 present", "POST", "/presence/update", "client_id=c&" + url.Values{"present_channels[]": channelList(51)}.Encode(), formCT, user, 400},
		{"update multipart no boundary", "POST", "/presence/update", "client_id=c", "multipart/form-data", user, 400},
		{"update multipart garbage", "POST", "/presence/update", "garbage", "multipart/form-data; boundary=XX", user, 400},
		{"update body too large", "POST", "/presence/update", `{"client_id":"` + strings.Repeat("a", 70<<10) + `"}`, jsonCT, user, 413},
		{"update wrong method", "GET", "/presence/update", "", "", user, 405},

		{"subscribe no channels", "GET", "/presence/subscribe", "", "", "", 400},
		{"subscribe not JSON", "GET", subscribeQuery("nope"), "", "", "", 400},
		{"subscribe array", "GET", subscribeQuery(`["/a/b"]`), "", "", "", 400},
		{"subscribe null", "GET", subscribeQuery(`null`), "", "", "", 400},
		{"subscribe empty object", "GET", subscribeQuery(`{}`), "", "", "", 400},
		{"subscribe string id", "GET", subscribeQuery(`{"/a/b":"5"}`), "", "", "", 400},
		{"subscribe fractional id", "GET", subscribeQuery(`{"/a/b":1.5}`), "", "", "", 400},
		{"subscribe exponent id", "GET", subscribeQuery(`{"/a/b":1e3}`), "", "", "", 400},
		{"subscribe id below -1", "GET", subscribeQuery(`{"/a/b":-2}`), "", "", "", 400},
		{"subscribe huge id", "GET", subscribeQuery(`{"/a/b":99999999999999999999}`), "", "", "", 400},
		{"subscribe null id", "GET", subscribeQuery(`{"/a/b":null}`), "", "", "", 400},
		{"subscribe too many", "GET", subscribeQuery(manyChannelsObject(501)), "", "", "", 400},
		{"subscribe bad cursor", "GET", subscribeQuery(`{"/a/b":1}`) + "&lastEventId=%21%21", "", "", "", 400},
		{"subscribe bad token", "GET", subscribeQuery(`{"/a/b":1}`) + "&token=bad", "", "", "", 401},

		{"admin no token", "GET", "/admin/prefixes", "", "", "", 401},
		{"admin wrong token", "GET", "/admin/prefixes", "", "", "Bearer wrong", 401},
		{"admin user token", "GET", "/admin/cluster", "", "", user, 401},
		{"admin put bad prefix", "PUT", "/admin/prefixes/bad.prefix", `{"rules":[]}`, jsonCT, admin, 400},
		{"admin put bad regex", "PUT", "/admin/prefixes/p", `{"rules":[{"match":"(","config":{}}]}`, jsonCT, admin, 400},
		{"admin put unknown field", "PUT", "/admin/prefixes/p", `{"rulez":[]}`, jsonCT, admin, 400},
		{"admin put out of range", "PUT", "/admin/prefixes/p", `{"rules":[{"match":"x","config":{"timeout":3601}}]}`, jsonCT, admin, 400},
		// #15: an explicit 0 was stored as {} (the 60 s default).
		{"admin put timeout 0", "PUT", "/admin/prefixes/p", `{"rules":[{"match":"x","config":{"timeout":0}}]}`, jsonCT, admin, 400},
		{"admin put not JSON", "PUT", "/admin/prefixes/p", `rules`, jsonCT, admin, 400},
		{"admin put too large", "PUT", "/admin/prefixes/p", `{"rules":[` + strings.Repeat(" ", presence.MaxPrefixDocumentBytes) + `]}`, jsonCT, admin, 413},
		{"admin get bad prefix", "GET", "/admin/prefixes/a~b", "", "", admin, 400},
		{"admin get missing", "GET", "/admin/prefixes/nope", "", "", admin, 404},
		{"admin delete missing", "DELETE", "/admin/prefixes/nope", "", "", admin, 404},
		{"admin owner missing channel", "GET", "/admin/owner", "", "", admin, 400},
		{"admin owner bad channel", "GET", "/admin/owner?channel=nope", "", "", admin, 400},
		{"admin wrong method", "POST", "/admin/prefixes/p", "", "", admin, 405},

		{"unknown route", "GET", "/nope", "", "", "", 404},
		{"dev off", "GET", "/dev/token?user=1", "", "", "", 404},
		{"no client handler", "GET", "/presence-client.js", "", "", "", 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			headers := []string{}
			if tc.ct != "" {
				headers = append(headers, "Content-Type", tc.ct)
			}
			if tc.auth != "" {
				headers = append(headers, "Authorization", tc.auth)
			}
			rec := e.do(tc.method, tc.target, strings.NewReader(tc.body), headers...)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.status, rec.Body.String())
			}
			errorsOf(t, rec)
			if n := len(e.svc.getCalls()) + len(e.svc.updateCalls()); n != 0 {
				t.Fatalf("%d calls reached the service", n)
			}
			if _, from, _ := e.svc.subscription(0); from != nil {
				t.Fatal("a subscription reached the service")
			}
			if len(e.prefixes.List()) != 0 {
				t.Fatal("a prefix document was stored")
			}
		})
	}
}

func TestDevBadInput(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Dev = true })
	for _, target := range []string{"/dev/token", "/dev/token?user=" + strings.Repeat("u", 129), "/dev/owner?channel=x"} {
		rec := e.do("GET", target, nil)
		if rec.Code != http.StatusBadRequest {
			t.Fatalf("%s: status %d", target, rec.Code)
		}
		errorsOf(t, rec)
	}
}

// TestServiceErrorsMapped checks the one error mapping for errors coming
// back from the Service.
func TestServiceErrorsMapped(t *testing.T) {
	cases := []struct {
		err    error
		status int
	}{
		{fmt.Errorf("x: %w", presence.ErrInvalid), 400},
		{fmt.Errorf("x: %w", presence.ErrUnauthorized), 401},
		{fmt.Errorf("x: %w", presence.ErrForbidden), 403},
		{fmt.Errorf("x: %w", presence.ErrNotFound), 404},
		{fmt.Errorf("x: %w", presence.ErrTooLarge), 413},
		{fmt.Errorf("x: %w", presence.ErrRateLimited), 429},
		{fmt.Errorf("x: %w", presence.ErrOverloaded), 503},
		{fmt.Errorf("x: %w", presence.ErrUnavailable), 503},
		{fmt.Errorf("x: %w", presence.ErrMoved), 503},
		{fmt.Errorf("ask: %w", context.DeadlineExceeded), 503},
		{fmt.Errorf("disk on fire"), 500},
	}
	for _, tc := range cases {
		e := newEnv(t, nil)
		e.svc.err = tc.err
		rec := e.do("GET", getQuery([]string{"/a/b"}), nil)
		if rec.Code != tc.status {
			t.Fatalf("%v: status %d, want %d", tc.err, rec.Code, tc.status)
		}
		msgs := errorsOf(t, rec)
		if tc.status >= 500 && strings.Contains(msgs[0], "x:") || strings.Contains(msgs[0], "fire") {
			t.Fatalf("%v: server error leaks its cause: %q", tc.err, msgs[0])
		}
		if tc.status == 429 && rec.Header().Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
}

// multipartBody encodes fields the way FormData does.
func multipartBody(t *testing.T, fields map[string][]string) (*bytes.Buffer, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for name, values := range fields {
		for _, v := range values {
			if err := w.WriteField(name, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return &b, w.FormDataContentType()
}
