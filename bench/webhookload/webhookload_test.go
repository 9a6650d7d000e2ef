package webhookload

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, r *Receiver, secret, body string) int {
	t.Helper()
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	req, err := http.NewRequest(http.MethodPost, r.URL(), bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Presence-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func events(ch string, ids ...int64) string {
	var parts []string
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf(`{"channel":%q,"message_id":%d,"type":"entering_users","data":{},"time":"2026-01-01T00:00:00.000Z"}`, ch, id))
	}
	return `{"events":[` + strings.Join(parts, ",") + `]}`
}

func TestReceiverTalliesWhatArrived(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	r, err := StartReceiver("127.0.0.1:0", "k", func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if status := post(t, r, "wrong", events("/a/1", 1)); status != http.StatusUnauthorized {
		t.Fatalf("a bad signature answered %d", status)
	}
	if status := post(t, r, "k", events("/a/1", 10, 11, 12)); status != http.StatusNoContent {
		t.Fatalf("answered %d", status)
	}
	post(t, r, "k", events("/a/1", 12, 14))
	post(t, r, "k", events("/a/2", 5))
	r.SetFailing(true)
	if status := post(t, r, "k", events("/a/2", 6)); status != http.StatusServiceUnavailable {
		t.Fatalf("failing receiver answered %d", status)
	}
	r.SetFailing(false)
	if err := r.Down(); err != nil {
		t.Fatal(err)
	}
	if status := post(t, r, "k", events("/a/2", 6)); status != 0 {
		t.Fatalf("a receiver that is down answered %d", status)
	}
	if err := r.Up(); err != nil {
		t.Fatal(err)
	}
	post(t, r, "k", events("/a/2", 6))
	tally := r.Tally(map[string]int64{"/a/1": 14, "/a/2": 7})
	want := Tally{Requests: 6, Accepted: 4, Refused: 1, Bad: 1, MaxBatch: 3, Events: 7, Distinct: 6, Duplicate: 1,
		Missing: 2, Behind: 1, LagP50: time.Second, LagP99: time.Second, LagMax: time.Second}
	if tally != want {
		t.Fatalf("tally %+v\nwant  %+v", tally, want)
	}
}

func TestParseSample(t *testing.T) {
	text := `# HELP x
process_resident_memory_bytes 1.5e+08
go_memstats_heap_inuse_bytes 4e+07
presence_webhook_queued_events{prefix="a"} 120
presence_webhook_queued_events{prefix="b"} 5
presence_webhook_oldest_undelivered_seconds{prefix="a"} 4.5
presence_webhook_oldest_undelivered_seconds{prefix="b"} 1
`
	s, err := ParseSample(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS != 1.5e8 || s.HeapInuse != 4e7 || s.Queued != 125 || s.Oldest != 4.5 {
		t.Fatalf("sample %+v", s)
	}
}
