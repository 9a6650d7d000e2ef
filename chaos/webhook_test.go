package chaos

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
)

func enter(user string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"entering_users":[{"id":%q,"username":"","name":"","avatar_template":""}]}`, user))
}

// deliver posts events to r, signed with secret.
func deliver(t *testing.T, r *WebhookReceiver, secret string, events ...WebhookEvent) int {
	t.Helper()
	body, err := json.Marshal(map[string]any{"events": events})
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, err := http.NewRequest(http.MethodPost, r.URL(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Presence-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func hookMsg(ch string, id int64, user string) WebhookEvent {
	return WebhookEvent{Channel: ch, MessageID: id, Type: "entering_users", Data: enter(user)}
}

func TestWebhookCompareAccountsForEveryMessage(t *testing.T) {
	r, err := StartWebhookReceiver("127.0.0.1:0", "k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if status := deliver(t, r, "not k", hookMsg("/a/x", 1, "u")); status != http.StatusUnauthorized {
		t.Fatalf("a bad signature answered %d", status)
	}
	log := NewMessageLog()
	stream := func(ch string, id int64, user string) {
		log.Record("s", Event{Type: "message", Channel: ch, MessageID: id, Payload: enter(user)})
	}
	// /a/ok: 10..13, 11 and 12 delivered twice (a failover).
	for id := int64(10); id <= 13; id++ {
		stream("/a/ok", id, fmt.Sprint("u", id))
	}
	deliver(t, r, "k", hookMsg("/a/ok", 10, "u10"), hookMsg("/a/ok", 11, "u11"), hookMsg("/a/ok", 12, "u12"))
	deliver(t, r, "k", hookMsg("/a/ok", 11, "u11"), hookMsg("/a/ok", 12, "u12"), hookMsg("/a/ok", 13, "u13"))
	// /a/gap: 21 streamed, never delivered, no resync.
	for id := int64(20); id <= 22; id++ {
		stream("/a/gap", id, "g")
	}
	deliver(t, r, "k", hookMsg("/a/gap", 20, "g"), hookMsg("/a/gap", 22, "g"))
	// /a/resync: 31, 32 summed up by a resync at 32.
	for id := int64(30); id <= 33; id++ {
		stream("/a/resync", id, "r")
	}
	deliver(t, r, "k", hookMsg("/a/resync", 30, "r"),
		WebhookEvent{Channel: "/a/resync", MessageID: 32, Type: "resync", Data: json.RawMessage(`{"reason":"overflow"}`)},
		hookMsg("/a/resync", 33, "r"))
	// /a/restart: 41 lost with its incarnation; ids restart from the clock.
	for _, id := range []int64{40, 41, 9_000_000} {
		stream("/a/restart", id, "x")
	}
	deliver(t, r, "k", hookMsg("/a/restart", 40, "x"), hookMsg("/a/restart", 9_000_000, "x"))
	// /a/wrong: delivered with another user than streamed.
	stream("/a/wrong", 50, "w")
	deliver(t, r, "k", hookMsg("/a/wrong", 50, "someone else"))

	last := map[string]int64{"/a/ok": 13, "/a/gap": 22, "/a/resync": 33, "/a/restart": 9_000_000, "/a/wrong": 50}
	rep := r.Compare(log, last)
	want := WebhookReport{Channels: 5, Events: 12, Duplicates: 2, Seen: 15, Resyncs: 1, Gaps: 1, Missing: 1, Mismatches: 1,
		Restarts: 1, Exempt: 1, Covered: 2, BadSignatures: 1}
	rep.Examples = nil
	if fmt.Sprint(rep) != fmt.Sprint(want) {
		t.Fatalf("report\n%v\nwant\n%v", rep, want)
	}
	if rep.OK() {
		t.Fatal("a report with gaps is OK")
	}
}

func TestWebhookPrefixDocument(t *testing.T) {
	doc := WebhookPrefixDocument("p", 60e9, "http://127.0.0.1:1/h", "s")
	var v struct {
		Rules   []any `json:"rules"`
		Webhook struct {
			URL, Secret string
		} `json:"webhook"`
	}
	if err := json.Unmarshal(doc, &v); err != nil || len(v.Rules) != 1 || v.Webhook.URL != "http://127.0.0.1:1/h" || v.Webhook.Secret != "s" {
		t.Fatalf("%s: %+v %v", doc, v, err)
	}
}
