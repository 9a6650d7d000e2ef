package webhook

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
)

var rigStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const testSecret = "it's a secret"

// receiver is an application's webhook endpoint: it checks signatures with
// the documented code, answers what the test says, and records what it
// acknowledged.
type receiver struct {
	t      testing.TB
	srv    *httptest.Server
	secret []byte

	mu        sync.Mutex
	answer    func(p *Payload) int // status for a verified request; nil: 200
	requests  int
	rejected  int                 // bad signatures
	accepted  []delivery          // 2xx answers, in arrival order
	tried     []delivery          // every verified request, whatever its answer
	attempts  map[string][]string // delivery id -> statuses (as text)
	maxEvents int
}

type delivery struct {
	id      string
	payload Payload
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{t: t, secret: []byte(testSecret), attempts: make(map[string][]string)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) url() string { return r.srv.URL + "/presence-hook" }

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	id := req.Header.Get("X-Presence-Delivery")
	if err != nil || !validSignature(r.secret, body, req.Header.Get("X-Presence-Signature")) {
		r.rejected++
		r.attempts[id] = append(r.attempts[id], "401")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var p Payload
	if err := json.Unmarshal(body, &p); err != nil {
		r.t.Errorf("undecodable body %q: %v", body, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.maxEvents = max(r.maxEvents, len(p.Events))
	r.tried = append(r.tried, delivery{id: id, payload: p})
	status := http.StatusOK
	if r.answer != nil {
		status = r.answer(&p)
	}
	r.attempts[id] = append(r.attempts[id], http.StatusText(status))
	if status/100 == 2 {
		r.accepted = append(r.accepted, delivery{id: id, payload: p})
	}
	w.WriteHeader(status)
}

func (r *receiver) setAnswer(f func(p *Payload) int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answer = f
}

// events returns every event of the acknowledged requests, in arrival
// order, duplicates included.
func (r *receiver) events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, d := range r.accepted {
		out = append(out, d.payload.Events...)
	}
	return out
}

// deduped applies the documented dedupe rule: per channel, an event whose
// message_id is not above the highest one processed is skipped.
func deduped(events []Event) map[string][]Event {
	out := make(map[string][]Event)
	high := make(map[string]int64)
	for _, e := range events {
		if e.MessageID <= high[e.Channel] {
			continue
		}
		high[e.Channel] = e.MessageID
		out[e.Channel] = append(out[e.Channel], e)
	}
	return out
}

func (r *receiver) counts() (requests, rejected, accepted int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests, r.rejected, len(r.accepted)
}

// rig is a Dispatcher on a fake clock delivering to receivers, with the
// acknowledgements recorded.
type rig struct {
	t     testing.TB
	clk   *clock.Fake
	d     *Dispatcher
	hooks sync.Map // prefix -> *presence.Webhook
	reg   *prometheus.Registry

	mu   sync.Mutex
	acks map[string]int64
}

func newRig(t testing.TB, tweak func(*Config)) *rig {
	t.Helper()
	r := &rig{t: t, clk: clock.NewFake(rigStart), acks: make(map[string]int64), reg: prometheus.NewRegistry()}
	cfg := Config{
		Webhooks: func(channel string) *presence.Webhook {
			prefix, _ := presence.ChannelPrefix(channel)
			if w, ok := r.hooks.Load(prefix); ok {
				return w.(*presence.Webhook)
			}
			return nil
		},
		Acknowledge: func(channel string, id int64) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.acks[channel] = max(r.acks[channel], id)
			return nil
		},
		Clock: r.clk, Logger: testkit.Logger(t), Registry: r.reg,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.d = d
	t.Cleanup(d.Close)
	return r
}

// hook points prefix's webhook at url with the test secret.
func (r *rig) hook(prefix, url string, events presence.WebhookEvents) {
	r.hooks.Store(prefix, &presence.Webhook{URL: url, Secret: testSecret, Events: events})
}

func (r *rig) ack(channel string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acks[channel]
}

// waitFor moves the clock on by step (100 ms when 0), between polls, until
// cond holds: batches wait MaxWait and retries their backoff on that
// clock.
func (r *rig) waitFor(what string, step time.Duration, cond func() bool) {
	r.t.Helper()
	if step == 0 {
		step = 100 * time.Millisecond
	}
	testkit.WaitFor(r.t, what, func() bool {
		if cond() {
			return true
		}
		r.clk.Advance(step)
		return false
	})
}

// acked reports whether every channel of sims has its last message
// acknowledged.
func (r *rig) acked(sims ...*channelSim) bool {
	for _, s := range sims {
		if r.ack(s.name) != s.last {
			return false
		}
	}
	return true
}

// channelSim publishes a channel's messages as its owner does: contiguous
// ids, occupancy flags from its users.
type channelSim struct {
	name      string
	countOnly bool
	last      int64
	users     map[string]bool
	published []*presence.Message
	clk       *clock.Fake
}

func newChannelSim(name string, base int64, clk *clock.Fake) *channelSim {
	return &channelSim{name: name, last: base, users: make(map[string]bool), clk: clk}
}

func (c *channelSim) next() *presence.Message {
	c.last++
	return &presence.Message{Channel: c.name, ID: c.last, CountOnly: c.countOnly, PublishedAtUnixMilli: c.clk.Now().UnixMilli()}
}

func (c *channelSim) enter(user string) *presence.Message {
	m := c.next()
	if c.countOnly {
		m.CountDelta = 1
	} else {
		m.EnteringUsers = []presence.UserInfo{{ID: user, Username: "u" + user}}
	}
	m.Occupied = len(c.users) == 0
	c.users[user] = true
	c.published = append(c.published, m)
	return m
}

func (c *channelSim) leave(users ...string) *presence.Message {
	m := c.next()
	if c.countOnly {
		m.CountDelta = -len(users)
	} else {
		m.LeavingUserIDs = slices.Clone(users)
	}
	for _, u := range users {
		delete(c.users, u)
	}
	m.Vacated = len(c.users) == 0
	c.published = append(c.published, m)
	return m
}

// snapshot returns the channel's state, its position at delivered.
func (c *channelSim) snapshot(delivered int64) *presence.ChannelSnapshot {
	s := &presence.ChannelSnapshot{Channel: c.name, Config: &presence.Config{Public: true, CountOnly: c.countOnly},
		LastID: c.last, Delivered: delivered, Backlog: c.published}
	for u := range c.users {
		s.Clients = append(s.Clients, presence.ClientSnapshot{User: presence.UserInfo{ID: u}, ClientID: "tab", ExpiresAtUnixNano: 1e18})
	}
	return s
}

// ids returns the message ids of events.
func ids(events []Event) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.MessageID
	}
	return out
}

func messageIDs(ms []*presence.Message) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		panic(err)
	}
	if c := out.GetCounter(); c != nil {
		return c.GetValue()
	}
	return out.GetGauge().GetValue()
}

// series counts the series a collector has.
func series(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 100)
	c.Collect(ch)
	close(ch)
	return len(ch)
}
