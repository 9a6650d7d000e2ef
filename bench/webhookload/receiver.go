// Package webhookload is the load scenario of webhooks: a receiver that
// checks and records what nodes deliver, can be taken down for a while,
// and tells whether every event arrived; a driver that makes users enter
// and leave at a given rate; and the memory of the nodes meanwhile.
package webhookload

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Event is one delivered event, as the receiver decodes it.
type Event struct {
	Channel   string          `json:"channel"`
	MessageID int64           `json:"message_id"`
	Type      string          `json:"type"`
	Data      json.RawMessage `json:"data"`
	Time      time.Time       `json:"time"`
}

// Receiver is the application's webhook endpoint: it verifies every
// request's signature, acknowledges it with 204 and records its events.
// While down it refuses connections (Down) or answers 503 (Failing).
type Receiver struct {
	secret []byte
	addr   string
	now    func() time.Time

	mu        sync.Mutex
	ln        net.Listener
	srv       *http.Server
	failing   bool
	requests  int
	accepted  int
	refused   int // 503 answers while failing
	bad       int // bad signatures
	maxBatch  int
	seen      map[string]map[int64]bool // distinct ids by channel
	high      map[string]int64          // highest id by channel
	events    int                       // events received, duplicates included
	duplicate int
	resyncs   int
	lags      []time.Duration // first arrival of each event, minus its publish time
}

// StartReceiver listens on addr ("127.0.0.1:0" for any port).
func StartReceiver(addr, secret string, now func() time.Time) (*Receiver, error) {
	r := &Receiver{secret: []byte(secret), now: now, seen: make(map[string]map[int64]bool), high: make(map[string]int64)}
	if err := r.listen(addr); err != nil {
		return nil, err
	}
	r.addr = r.ln.Addr().String()
	return r, nil
}

// URL is where the webhook must point.
func (r *Receiver) URL() string { return "http://" + r.addr + "/presence-hook" }

func (r *Receiver) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second}
	r.mu.Lock()
	r.ln, r.srv = ln, srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// Down closes the listener: connections are refused until Up.
func (r *Receiver) Down() error {
	r.mu.Lock()
	srv := r.srv
	r.srv, r.ln = nil, nil
	r.mu.Unlock()
	if srv == nil {
		return errors.New("webhookload: receiver already down")
	}
	return srv.Close()
}

// Up listens again at the same address.
func (r *Receiver) Up() error { return r.listen(r.addr) }

// SetFailing makes the receiver answer 503 to every request, or stop.
func (r *Receiver) SetFailing(f bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failing = f
}

// Close stops the receiver.
func (r *Receiver) Close() {
	r.mu.Lock()
	srv := r.srv
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
	if err != nil {
		return // the connection broke (Down closes it): nobody reads an answer
	}
	arrived := r.now()
	var p struct {
		Events []Event `json:"events"`
	}
	ok := ValidSignature(r.secret, body, req.Header.Get("X-Presence-Signature")) && json.Unmarshal(body, &p) == nil
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	switch {
	case !ok:
		r.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	case r.failing:
		r.refused++
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	r.accepted++
	r.maxBatch = max(r.maxBatch, len(p.Events))
	for _, e := range p.Events {
		r.events++
		if e.Type == "resync" {
			r.resyncs++
		}
		ids := r.seen[e.Channel]
		if ids == nil {
			ids = make(map[int64]bool)
			r.seen[e.Channel] = ids
		}
		if ids[e.MessageID] {
			r.duplicate++
			continue
		}
		ids[e.MessageID] = true
		r.high[e.Channel] = max(r.high[e.Channel], e.MessageID)
		r.lags = append(r.lags, arrived.Sub(e.Time))
	}
	w.WriteHeader(http.StatusNoContent)
}

// ValidSignature reports whether the X-Presence-Signature header of a
// webhook request signs its raw body with the webhook's secret.
func ValidSignature(secret, body []byte, header string) bool {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(header), []byte(want))
}

// Highest returns the highest id received for channel.
func (r *Receiver) Highest(channel string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.high[channel]
}

// Tally is what the receiver got, checked against the channels' last ids.
type Tally struct {
	Requests  int `json:"requests"`
	Accepted  int `json:"accepted"`
	Refused   int `json:"refused_while_failing"`
	Bad       int `json:"bad_signatures"`
	MaxBatch  int `json:"max_batch"`
	Events    int `json:"events"`
	Distinct  int `json:"distinct_events"`
	Duplicate int `json:"duplicates"`
	Resyncs   int `json:"resyncs"`
	// Missing are the ids absent between each channel's first event and
	// its last message.
	Missing int `json:"missing"`
	// Behind counts channels whose last message was not received.
	Behind int `json:"channels_behind"`
	// Lag is the delay from publish to first arrival: p50, p99, max.
	LagP50, LagP99, LagMax time.Duration
}

// Tally checks what was received against each channel's last id: every id
// from a channel's first event up to it must have arrived.
func (r *Receiver) Tally(last map[string]int64) Tally {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := Tally{Requests: r.requests, Accepted: r.accepted, Refused: r.refused, Bad: r.bad, MaxBatch: r.maxBatch,
		Events: r.events, Duplicate: r.duplicate, Resyncs: r.resyncs}
	for ch, ids := range r.seen {
		t.Distinct += len(ids)
		first := slices.Min(slicesKeys(ids))
		end := max(last[ch], r.high[ch])
		for id := first; id <= end; id++ {
			if !ids[id] {
				t.Missing++
			}
		}
	}
	for ch, id := range last {
		if id > 0 && r.high[ch] < id {
			t.Behind++
		}
	}
	if n := len(r.lags); n > 0 {
		lags := slices.Clone(r.lags)
		slices.Sort(lags)
		t.LagP50, t.LagP99, t.LagMax = lags[n/2], lags[min(n-1, n*99/100)], lags[n-1]
	}
	return t
}

func slicesKeys(m map[int64]bool) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
