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

// hookCluster is three nodes whose prefix "w" has a webhook to rcv, and
// a channel of it owned by node2, which the test changes through node0.
type hookCluster struct {
	t       *testing.T
	c       *testcluster.Cluster
	rcv     *hookReceiver
	channel string
	owner   *testcluster.Node
	entry   *testcluster.Node
	want    []step // the messages published, in order
	users   map[string]bool
}

func startHookCluster(t *testing.T) *hookCluster {
	h := &hookCluster{t: t, rcv: newHookReceiver(t), users: map[string]bool{}}
	h.c = testcluster.Start(t, 3, testcluster.WithFastGossip())
	h.c.WaitReady()
	doc := fmt.Sprintf(`{"rules":[{"match":"/w/.+","config":{"public":true}}],"webhook":{"url":%q,"secret":%q}}`,
		h.rcv.srv.URL+"/hook", clusterSecret)
	if status, body, err := h.c.Node(0).Admin().Do(http.MethodPut, "/admin/prefixes/w", doc); err != nil || status != http.StatusOK {
		t.Fatalf("PUT prefix: %d %s %v", status, body, err)
	}
	h.c.WaitFor(15*time.Second, func() error { // every node serves the document
		for _, n := range h.c.Running() {
			if status, body, err := n.Admin().Do(http.MethodGet, "/admin/prefixes/w", nil); err != nil || status != http.StatusOK {
				return fmt.Errorf("%s: GET prefix: %d %s %v", n.Name, status, body, err)
			}
		}
		return nil
	})
	h.owner, h.entry = h.c.Node(2), h.c.Node(0)
	for i := 0; h.channel == ""; i++ {
		ch := fmt.Sprintf("/w/room%d", i)
		name, _, err := h.entry.Admin().Owner(ch)
		if err != nil {
			t.Fatal(err)
		}
		if name == h.owner.Name {
			h.channel = ch
		}
	}
	return h
}

// act makes user enter or leave the channel (through a node that is not
// its owner) and records the message that publishes.
func (h *hookCluster) act(user string, enter bool) {
	h.t.Helper()
	cl := h.entry.Client(testcluster.Token(user))
	var err error
	if enter {
		var got map[string]bool
		got, err = cl.Update("tab", []string{h.channel}, nil)
		if err == nil && !got[h.channel] {
			err = fmt.Errorf("not admitted: %v", got)
		}
	} else {
		_, err = cl.Update("tab", nil, []string{h.channel})
	}
	if err != nil {
		h.t.Fatalf("update of %s: %v", user, err)
	}
	s := step{user: user}
	if enter {
		s.typ, s.occupied = webhook.TypeEnteringUsers, len(h.users) == 0
		h.users[user] = true
	} else {
		delete(h.users, user)
		s.typ, s.vacated = webhook.TypeLeavingUserIDs, len(h.users) == 0
	}
	h.want = append(h.want, s)
}

// acknowledgeTen publishes ten events, five enters and five leaves, waits
// until the owner had them acknowledged, then makes sure the channel took
// the positions: a read queued behind them, and the next change, answered
// once its replica has it, takes them to the replica. The receiver fails
// from then on.
func (h *hookCluster) acknowledgeTen() {
	h.t.Helper()
	for i := range 5 {
		h.act(fmt.Sprint("u", i), true)
	}
	for i := range 5 {
		h.act(fmt.Sprint("u", i), false)
	}
	delivered := `presence_webhook_events_delivered_total{prefix="w"}`
	h.c.WaitFor(15*time.Second, func() error {
		if got := metricValue(h.t, h.owner, delivered); got < 10 {
			return fmt.Errorf("%s = %v on the owner, want 10", delivered, got)
		}
		return nil
	})
	if n := len(h.rcv.events(h.channel)); n != 10 {
		h.t.Fatalf("%d events acknowledged, want 10", n)
	}
	if _, err := h.entry.Client(testcluster.Token("reader")).Get(h.channel); err != nil {
		h.t.Fatal(err)
	}
	h.rcv.setFailing(true)
}

// check waits until the receiver has every message, then wants the
// deduplicated events to be the messages, in order, without a gap, and
// each of the first ten (acknowledged before the fault) delivered once.
func (h *hookCluster) check() {
	h.t.Helper()
	h.c.WaitFor(30*time.Second, func() error {
		if got := dedupe(h.rcv.events(h.channel)); len(got) < len(h.want) {
			return fmt.Errorf("%d events delivered, want %d", len(got), len(h.want))
		}
		return nil
	})
	all := h.rcv.events(h.channel)
	got := dedupe(all)
	if len(got) != len(h.want) {
		h.t.Fatalf("deduped events %v, want %d", got, len(h.want))
	}
	for i, e := range got {
		if i > 0 && e.MessageID != got[i-1].MessageID+1 {
			h.t.Fatalf("a gap between %d and %d", got[i-1].MessageID, e.MessageID)
		}
		if !h.want[i].matches(e) {
			h.t.Fatalf("event %d is %+v (%s), want %+v", i, e, e.Data, h.want[i])
		}
	}
	for _, e := range got[:10] {
		if slices.ContainsFunc(all[10:], func(x webhook.Event) bool { return x.MessageID == e.MessageID }) {
			h.t.Fatalf("event %d, acknowledged before the fault, was delivered again", e.MessageID)
		}
	}
	st, err := h.entry.Client("").Get(h.channel)
	if err != nil || st[h.channel] == nil || st[h.channel].LastMessageID != got[len(got)-1].MessageID {
		h.t.Fatalf("channel state %+v (%v): the last event is not its last message", st[h.channel], err)
	}
	h.rcv.mu.Lock()
	defer h.rcv.mu.Unlock()
	if h.rcv.bad != 0 {
		h.t.Fatalf("%d requests with a bad signature", h.rcv.bad)
	}
}

// failFive publishes five events the failing receiver refuses, and waits
// until the owner saw a failure.
func (h *hookCluster) failFive() {
	h.t.Helper()
	for i := range 3 {
		h.act(fmt.Sprint("v", i), true)
	}
	h.act("v0", false)
	h.act("v1", false)
	h.c.WaitFor(15*time.Second, func() error {
		if got := metricValue(h.t, h.owner, `presence_webhook_failures_total{prefix="w"}`); got < 1 {
			return fmt.Errorf("no failed delivery yet")
		}
		return nil
	})
}

// TestAPromotedReplicaResendsOnlyWhatWasNotAcknowledged: a channel's owner
// delivers ten events, which the receiver acknowledges; five more fail at
// the receiver; the owner is killed. The replica takes the channel over
// and delivers the five, and none of the ten again: the position travelled
// with the channel. The deduplicated events are the channel's messages,
// in order, without a gap.
func TestAPromotedReplicaResendsOnlyWhatWasNotAcknowledged(t *testing.T) {
	h := startHookCluster(t)
	h.acknowledgeTen()
	h.failFive()
	h.c.Kill(2)
	h.rcv.setFailing(false)
	h.c.WaitFor(30*time.Second, func() error { // the five, from the promoted replica
		if got := dedupe(h.rcv.events(h.channel)); len(got) < len(h.want) {
			return fmt.Errorf("%d events delivered, want %d", len(got), len(h.want))
		}
		return nil
	})
	h.act("v2", false) // vacates, on the new owner
	h.check()
}

// TestAHandOffCarriesThePosition: the owner leaves gracefully while its
// receiver fails; the node the channel is handed to delivers what was not
// acknowledged, from the position the hand-off carried, and nothing
// before it.
func TestAHandOffCarriesThePosition(t *testing.T) {
	h := startHookCluster(t)
	h.acknowledgeTen()
	h.failFive()
	h.c.Stop(2)
	h.rcv.setFailing(false)
	h.act("v2", false)
	h.check()
}
