package chaos

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// restartJump is the smallest jump of a channel's ids that means a new
// incarnation of its state (ids from the clock, in microseconds) rather
// than ids skipped within one.
const restartJump = 100_000

// WebhookEvent is one event a WebhookReceiver got.
type WebhookEvent struct {
	Channel   string          `json:"channel"`
	MessageID int64           `json:"message_id"`
	Type      string          `json:"type"`
	Occupied  bool            `json:"occupied"`
	Vacated   bool            `json:"vacated"`
	Data      json.RawMessage `json:"data"`
}

// WebhookReceiver is an application's webhook endpoint for the fault
// suites: it checks every request's signature the way docs/API.md shows,
// acknowledges it, and keeps every event, duplicates included.
type WebhookReceiver struct {
	secret []byte
	srv    *http.Server
	url    string

	mu       sync.Mutex
	events   map[string][]WebhookEvent // by channel, in arrival order
	requests int
	bad      int // signature or body refused
}

// StartWebhookReceiver listens on addr (e.g. "127.0.0.1:0") and checks
// signatures with secret.
func StartWebhookReceiver(addr, secret string) (*WebhookReceiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &WebhookReceiver{secret: []byte(secret), events: make(map[string][]WebhookEvent),
		url: "http://" + ln.Addr().String() + "/presence-hook"}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// URL is where the webhook must point.
func (r *WebhookReceiver) URL() string { return r.url }

// Close stops listening.
func (r *WebhookReceiver) Close() { _ = r.srv.Close() }

func (r *WebhookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
	var p struct {
		Events []WebhookEvent `json:"events"`
	}
	ok := err == nil && validSignature(r.secret, body, req.Header.Get("X-Presence-Signature")) && json.Unmarshal(body, &p) == nil
	r.mu.Lock()
	r.requests++
	if !ok {
		r.bad++
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	for _, e := range p.Events {
		r.events[e.Channel] = append(r.events[e.Channel], e)
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// validSignature reports whether the X-Presence-Signature header of a
// webhook request signs its raw body with the webhook's secret.
func validSignature(secret, body []byte, header string) bool {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(header), []byte(want))
}

// highest returns the highest message id received for channel.
func (r *WebhookReceiver) highest(channel string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var high int64
	for _, e := range r.events[channel] {
		high = max(high, e.MessageID)
	}
	return high
}

// WebhookPrefixDocument is PublicPrefixDocument with a webhook to url,
// signed with secret, for every event.
func WebhookPrefixDocument(prefix string, timeout time.Duration, url, secret string) []byte {
	doc := PublicPrefixDocument(prefix, timeout)
	hook := fmt.Sprintf(`, "webhook": {"url": %q, "secret": %q}}`, url, secret)
	return append(bytes.TrimSuffix(doc, []byte("}")), hook...)
}

// MessageLog keeps the first copy of every message the streams saw, by
// channel and id: StreamConfig.OnEvent = log.Record.
type MessageLog struct {
	mu   sync.Mutex
	msgs map[string]map[int64]json.RawMessage
}

// NewMessageLog returns an empty log.
func NewMessageLog() *MessageLog {
	return &MessageLog{msgs: make(map[string]map[int64]json.RawMessage)}
}

// Record keeps ev when it is a message not seen before.
func (l *MessageLog) Record(_ string, ev Event) {
	if ev.Type != "message" || ev.Channel == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.msgs[ev.Channel]
	if m == nil {
		m = make(map[int64]json.RawMessage)
		l.msgs[ev.Channel] = m
	}
	if _, ok := m[ev.MessageID]; !ok {
		m[ev.MessageID] = ev.Payload
	}
}

// LastIDs reads each channel's last message id through pool.
func LastIDs(ctx context.Context, pool *Pool, channels []string) (map[string]int64, error) {
	out := make(map[string]int64, len(channels))
	for start := 0; start < len(channels); start += getBatch {
		batch := channels[start:min(start+getBatch, len(channels))]
		resp, err := pool.Do(ctx, Request{Method: http.MethodGet, Path: "/presence/get?" + url.Values{"channels[]": batch}.Encode()})
		if err != nil {
			return nil, err
		}
		var got map[string]*struct {
			LastMessageID int64 `json:"last_message_id"`
		}
		if resp.Status != http.StatusOK || json.Unmarshal(resp.Body, &got) != nil {
			return nil, fmt.Errorf("chaos: %s answered %d %s", resp.URL, resp.Status, strings.TrimSpace(string(resp.Body)))
		}
		for _, ch := range batch {
			if got[ch] != nil {
				out[ch] = got[ch].LastMessageID
			}
		}
	}
	return out, nil
}

// AwaitWebhooks waits until the receiver got, for every channel, an event
// at or above its id in last.
func (r *WebhookReceiver) AwaitWebhooks(ctx context.Context, last map[string]int64) error {
	for {
		behind := 0
		var example string
		for ch, id := range last {
			if high := r.highest(ch); high < id {
				behind++
				example = fmt.Sprintf("%s: delivered up to %d of %d", ch, high, id)
			}
		}
		if behind == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("chaos: %d channels not delivered up to their last message (%s): %w", behind, example, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WebhookReport compares what a receiver got with the channels' messages.
type WebhookReport struct {
	Channels   int // channels compared
	Events     int // distinct (channel, message_id) delivered, up to the compared ids
	Duplicates int // events delivered again (at least once allows them)
	Seen       int // messages the streams saw, up to the compared ids
	Resyncs    int // resync events delivered
	// Gaps are jumps in a channel's deduplicated ids that no resync event
	// covers and no new incarnation explains; Missing, messages the
	// streams saw that were not delivered and no resync or restart
	// covers; Mismatches, events that differ from the message the streams
	// saw. All three must be 0.
	Gaps, Missing, Mismatches int
	// Restarts are new incarnations of a channel's state (ids from the
	// clock: its owner and replica died together); Exempt counts the
	// messages streams saw of the incarnations they ended that were not
	// delivered: lost with their state.
	Restarts, Exempt int
	// Covered counts messages the streams saw that a resync event stands
	// for instead.
	Covered       int
	BadSignatures int
	Examples      []string
}

// OK reports whether every message was delivered or is accounted for.
func (w WebhookReport) OK() bool {
	return w.Gaps == 0 && w.Missing == 0 && w.Mismatches == 0 && w.BadSignatures == 0 && w.Channels > 0
}

func (w WebhookReport) String() string {
	return fmt.Sprintf("webhooks: channels %d, events %d (duplicates %d), messages seen by streams %d, resync events %d "+
		"(covering %d), gaps %d, missing %d, mismatches %d, restarts %d (exempt messages %d), bad signatures %d",
		w.Channels, w.Events, w.Duplicates, w.Seen, w.Resyncs, w.Covered, w.Gaps, w.Missing, w.Mismatches,
		w.Restarts, w.Exempt, w.BadSignatures)
}

func (w *WebhookReport) example(format string, args ...any) {
	if len(w.Examples) < maxExamples {
		w.Examples = append(w.Examples, fmt.Sprintf(format, args...))
	}
}

// Compare checks, for every channel of last, the events received up to
// its id there: deduplicated by the documented rule (skip an id at or
// below the highest processed), they must follow the channel's ids
// without a gap that no resync covers, and hold every message the
// streams saw, as they saw it.
func (r *WebhookReceiver) Compare(log *MessageLog, last map[string]int64) WebhookReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	log.mu.Lock()
	defer log.mu.Unlock()
	rep := WebhookReport{BadSignatures: r.bad}
	for _, ch := range slicesSorted(last) {
		rep.Channels++
		r.compareChannel(ch, last[ch], log.msgs[ch], &rep)
	}
	return rep
}

// compareChannel adds one channel's comparison to rep.
func (r *WebhookReceiver) compareChannel(ch string, upTo int64, seen map[int64]json.RawMessage, rep *WebhookReport) {
	got := make(map[int64]WebhookEvent)
	var seq []WebhookEvent // deduplicated, in processing order
	var high int64
	for _, e := range r.events[ch] {
		if e.MessageID > upTo {
			continue
		}
		if _, dup := got[e.MessageID]; dup {
			rep.Duplicates++
		} else {
			got[e.MessageID] = e
		}
		if e.MessageID > high {
			high = e.MessageID
			seq = append(seq, e)
		}
	}
	rep.Events += len(got)
	// Ids a resync stands for, or that a restart ended: accounted for.
	type span struct {
		from, to int64
		resync   bool
	}
	var spans []span
	for i, e := range seq {
		if e.Type == "resync" {
			rep.Resyncs++
		}
		if i == 0 || e.MessageID == seq[i-1].MessageID+1 {
			continue
		}
		prev := seq[i-1].MessageID
		switch {
		case e.Type == "resync":
			spans = append(spans, span{prev + 1, e.MessageID, true})
		case e.MessageID-prev >= restartJump:
			rep.Restarts++
			spans = append(spans, span{prev + 1, e.MessageID - 1, false})
		default:
			rep.Gaps++
			rep.example("%s: ids jump from %d to %d without a resync", ch, prev, e.MessageID)
		}
	}
	covered := func(id int64) (byResync, byRestart bool) {
		for _, s := range spans {
			if s.from <= id && id <= s.to {
				return s.resync, !s.resync
			}
		}
		return false, false
	}
	for _, id := range slicesSorted(seen) {
		if id > upTo {
			continue
		}
		rep.Seen++
		e, ok := got[id]
		if !ok {
			byResync, byRestart := covered(id)
			switch {
			case byResync:
				rep.Covered++
			case byRestart:
				rep.Exempt++
			default:
				rep.Missing++
				rep.example("%s: message %d was streamed but never delivered (delivered up to %d)", ch, id, high)
			}
			continue
		}
		if e.Type == "resync" { // stands for the message and those before it
			rep.Covered++
			continue
		}
		if !samePayload(seen[id], e) {
			rep.Mismatches++
			rep.example("%s: message %d streamed as %s, delivered as %s %s", ch, id, seen[id], e.Type, e.Data)
		}
	}
}

// samePayload reports whether a delivered event carries the streamed
// message's payload: its type's key with the same value.
func samePayload(streamed json.RawMessage, e WebhookEvent) bool {
	var a, b map[string]json.RawMessage
	if json.Unmarshal(streamed, &a) != nil || json.Unmarshal(e.Data, &b) != nil {
		return false
	}
	want, ok := a[e.Type]
	return ok && len(a) == 1 && SameJSON(want, b[e.Type])
}

// slicesSorted returns the keys of m, sorted.
func slicesSorted[K int64 | string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
