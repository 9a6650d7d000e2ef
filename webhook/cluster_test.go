package webhook_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testcluster"
	"github.com/presencehq/presence/webhook"
)

const clusterSecret = "cluster-test-secret"

// hookReceiver is the application's webhook endpoint in the cluster tests.
type hookReceiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	failing  bool
	accepted []webhook.Event // events of acknowledged requests, in arrival order
	bad      int             // requests with a bad signature
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil || !webhook.Verify([]byte(clusterSecret), body, r.Header.Get(webhook.SignatureHeader)) {
		h.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if h.failing {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var p webhook.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.accepted = append(h.accepted, p.Events...)
	w.WriteHeader(http.StatusOK)
}

func (h *hookReceiver) setFailing(f bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failing = f
}

// events returns the acknowledged events of channel, duplicates included.
func (h *hookReceiver) events(channel string) []webhook.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []webhook.Event
	for _, e := range h.accepted {
		if e.Channel == channel {
			out = append(out, e)
		}
	}
	return out
}

// dedupe applies the documented rule to one channel's events.
func dedupe(events []webhook.Event) []webhook.Event {
	var out []webhook.Event
	var high int64
	for _, e := range events {
		if e.MessageID > high {
			high = e.MessageID
			out = append(out, e)
		}
	}
	return out
}

// step is one published message as the test expects it.
type step struct {
	typ               string
	user              string
	occupied, vacated bool
}

func (s step) matches(e webhook.Event) bool {
	if e.Type != s.typ || e.Occupied != s.occupied || e.Vacated != s.vacated {
		return false
	}
	return strings.Contains(string(e.Data), `"`+s.user+`"`)
}

// metricValue reads one sample of a node's /metrics, 0 when absent.
func metricValue(t *testing.T, n *testcluster.Node, sample string) float64 {
	t.Helper()
	resp, err := http.Get(n.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", sample, err)
			}
			return f
		}
	}
	return 0
}

// TestAPromotedReplicaResendsOnlyWhatWasNotAcknowledged: a channel's owner
// delivers ten events, which the receiver acknowledges; five more fail at
// the receiver; the owner is killed. The replica takes the channel over
// and delivers the five, and none of the ten again: the position travelled
// with the channel. The deduplicated events are the channel's messages,
// in order, without a gap.
func TestAPromotedReplicaResendsOnlyWhatWasNotAcknowledged(t *testing.T) {
	rcv := newHookReceiver(t)
	c := testcluster.Start(t, 3, testcluster.WithFastGossip())
	c.WaitReady()
	doc := fmt.Sprintf(`{"rules":[{"match":"/w/.+","config":{"public":true}}],"webhook":{"url":%q,"secret":%q}}`,
		rcv.srv.URL+"/hook", clusterSecret)
	if status, body, err := c.Node(0).Admin().Do(http.MethodPut, "/admin/prefixes/w", doc); err != nil || status != http.StatusOK {
		t.Fatalf("PUT prefix: %d %s %v", status, body, err)
	}
	c.WaitFor(15*time.Second, func() error { // every node serves the document
		for _, n := range c.Running() {
			if status, body, err := n.Admin().Do(http.MethodGet, "/admin/prefixes/w", nil); err != nil || status != http.StatusOK {
				return fmt.Errorf("%s: GET prefix: %d %s %v", n.Name, status, body, err)
			}
		}
		return nil
	})
	channel, owner := "", -1
	for i := 0; owner < 0; i++ {
		ch := fmt.Sprintf("/w/room%d", i)
		name, _, err := c.Node(0).Admin().Owner(ch)
		if err != nil {
			t.Fatal(err)
		}
		if name == c.Node(2).Name {
			channel, owner = ch, 2
		}
	}
	entry := c.Node(0) // requests enter here and are forwarded to the owner
	var want []step
	update := func(user string, enter bool) {
		t.Helper()
		cl := entry.Client(testcluster.Token(user))
		var err error
		if enter {
			var got map[string]bool
			got, err = cl.Update("tab", []string{channel}, nil)
			if err == nil && !got[channel] {
				err = fmt.Errorf("not admitted: %v", got)
			}
		} else {
			_, err = cl.Update("tab", nil, []string{channel})
		}
		if err != nil {
			t.Fatalf("update of %s: %v", user, err)
		}
	}
	users := map[string]bool{}
	act := func(user string, enter bool) {
		t.Helper()
		update(user, enter)
		s := step{user: user}
		if enter {
			s.typ, s.occupied = webhook.TypeEnteringUsers, len(users) == 0
			users[user] = true
		} else {
			delete(users, user)
			s.typ, s.vacated = webhook.TypeLeavingUserIDs, len(users) == 0
		}
		want = append(want, s)
	}
	for i := range 5 { // ten events: five enter, five leave, the last vacates
		act(fmt.Sprint("u", i), true)
	}
	for i := range 5 {
		act(fmt.Sprint("u", i), false)
	}
	ownerNode := c.Node(owner)
	delivered := `presence_webhook_events_delivered_total{prefix="w"}`
	c.WaitFor(15*time.Second, func() error {
		if got := metricValue(t, ownerNode, delivered); got < 10 {
			return fmt.Errorf("%s = %v on the owner, want 10", delivered, got)
		}
		return nil
	})
	if n := len(rcv.events(channel)); n != 10 {
		t.Fatalf("%d events acknowledged, want 10", n)
	}
	// The positions were told to the channel; a read queued behind them
	// makes sure it applied them, and the next change, answered once its
	// replica has it, takes them to the replica.
	if _, err := entry.Client(testcluster.Token("reader")).Get(channel); err != nil {
		t.Fatal(err)
	}
	rcv.setFailing(true)
	for i := range 3 {
		act(fmt.Sprint("v", i), true)
	}
	act("v0", false)
	act("v1", false)
	c.WaitFor(15*time.Second, func() error {
		if got := metricValue(t, ownerNode, `presence_webhook_failures_total{prefix="w"}`); got < 1 {
			return fmt.Errorf("no failed delivery yet")
		}
		return nil
	})

	c.Kill(owner)
	rcv.setFailing(false)
	// The replica, promoted, delivers the five; a change after the
	// failover follows them.
	c.WaitFor(30*time.Second, func() error {
		got := dedupe(rcv.events(channel))
		if len(got) < len(want) {
			return fmt.Errorf("%d events delivered, want %d", len(got), len(want))
		}
		return nil
	})
	act("v2", false) // vacates
	c.WaitFor(15*time.Second, func() error {
		if got := dedupe(rcv.events(channel)); len(got) < len(want) {
			return fmt.Errorf("%d events delivered after the failover, want %d", len(got), len(want))
		}
		return nil
	})

	all := rcv.events(channel)
	got := dedupe(all)
	if len(got) != len(want) {
		t.Fatalf("deduped events %v, want %d", got, len(want))
	}
	for i, e := range got {
		if i > 0 && e.MessageID != got[i-1].MessageID+1 {
			t.Fatalf("a gap between %d and %d", got[i-1].MessageID, e.MessageID)
		}
		if !want[i].matches(e) {
			t.Fatalf("event %d is %+v (%s), want %+v", i, e, e.Data, want[i])
		}
	}
	// Only what was not acknowledged came again: each of the first ten
	// exactly once.
	for _, e := range got[:10] {
		if n := slices.IndexFunc(all[10:], func(x webhook.Event) bool { return x.MessageID == e.MessageID }); n >= 0 {
			t.Fatalf("event %d, acknowledged before the kill, was delivered again", e.MessageID)
		}
	}
	st, err := entry.Client("").Get(channel)
	if err != nil || st[channel] == nil || st[channel].LastMessageID != got[len(got)-1].MessageID {
		t.Fatalf("channel state %+v (%v): the last event is not its last message", st[channel], err)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if rcv.bad != 0 {
		t.Fatalf("%d requests with a bad signature", rcv.bad)
	}
}
