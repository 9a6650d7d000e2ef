package server_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testcluster"
)

// publicPrefix makes every channel of prefix "m" public.
var publicPrefix = publicDoc("m")

// publicDoc makes every channel of prefix public.
func publicDoc(prefix string) string {
	return `{"rules":[{"match":"/` + prefix + `/.+","config":{"public":true}}]}`
}

// settleTimeout bounds waits for cluster-wide convergence in these tests.
const settleTimeout = 15 * time.Second

// putPrefix stores a prefix document through node i and wants 200.
func putPrefix(t *testing.T, c *testcluster.Cluster, i int, prefix, doc string) {
	t.Helper()
	status, body, err := c.Node(i).Admin().Do(http.MethodPut, "/admin/prefixes/"+prefix, doc)
	if err != nil || status != http.StatusOK {
		t.Fatalf("PUT prefix %s through %s: %d %s %v", prefix, c.Node(i).Name, status, body, err)
	}
}

// waitPrefixEverywhere waits until every running node serves the prefix
// document (present) or 404 (absent).
func waitPrefixEverywhere(t *testing.T, c *testcluster.Cluster, prefix string, present bool, timeout time.Duration) {
	t.Helper()
	want := http.StatusNotFound
	if present {
		want = http.StatusOK
	}
	c.WaitFor(timeout, func() error {
		for _, n := range c.Running() {
			status, body, err := n.Admin().Do(http.MethodGet, "/admin/prefixes/"+prefix, nil)
			if err != nil || status != want {
				return fmt.Errorf("%s: GET prefix %s: %d %s %v, want %d", n.Name, prefix, status, body, err, want)
			}
		}
		return nil
	})
}

// model is the expected presence: channel -> user -> that user's clients.
type model struct {
	mu       sync.Mutex
	channels map[string]map[string]map[string]bool
}

func newModel() *model { return &model{channels: map[string]map[string]map[string]bool{}} }

// apply records an update: present first, then leave, as the contract says.
func (m *model) apply(user, client string, present, leave []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ch := range present {
		if m.channels[ch] == nil {
			m.channels[ch] = map[string]map[string]bool{}
		}
		if m.channels[ch][user] == nil {
			m.channels[ch][user] = map[string]bool{}
		}
		m.channels[ch][user][client] = true
	}
	for _, ch := range leave {
		delete(m.channels[ch][user], client)
		if len(m.channels[ch][user]) == 0 {
			delete(m.channels[ch], user)
		}
	}
}

// users returns the sorted users present in ch.
func (m *model) users(ch string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for u := range m.channels[ch] {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// check compares what node n answers for channels with the model.
func (m *model) check(n *testcluster.Node, channels []string) error {
	cl := n.Client("")
	for start := 0; start < len(channels); start += 50 {
		batch := channels[start:min(start+50, len(channels))]
		got, err := cl.Get(batch...)
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		for _, ch := range batch {
			st := got[ch]
			if st == nil {
				return fmt.Errorf("%s: %s is null", n.Name, ch)
			}
			var ids []string
			for _, u := range st.Users {
				ids = append(ids, u.ID)
			}
			slices.Sort(ids)
			want := m.users(ch)
			if st.Count != len(want) || !slices.Equal(ids, want) {
				return fmt.Errorf("%s: %s has %d users %v, model %v", n.Name, ch, st.Count, ids, want)
			}
		}
	}
	return nil
}

// checkAll compares every running node with the model, waiting for
// convergence (ownership may still be moving).
func (m *model) checkAll(t *testing.T, c *testcluster.Cluster, channels []string) {
	t.Helper()
	c.WaitFor(settleTimeout, func() error {
		for _, n := range c.Running() {
			if err := m.check(n, channels); err != nil {
				return err
			}
		}
		return nil
	})
}

// randomUpdates makes every user send rounds updates through random
// running nodes, users in parallel, and records them in the model. Every
// present channel must be answered true.
func randomUpdates(t *testing.T, c *testcluster.Cluster, m *model, rng *rand.Rand, users int, channels []string, rounds int) {
	t.Helper()
	type call struct {
		node, user, client string
		present, leave     []string
	}
	running := c.Running()
	plans := make([][]call, users)
	for u := range plans {
		for range rounds {
			present := pick(rng, channels, 1+rng.IntN(8))
			leave := pick(rng, channels, rng.IntN(4))
			plans[u] = append(plans[u], call{
				node: running[rng.IntN(len(running))].URL(), user: fmt.Sprint(u),
				client: fmt.Sprintf("c%d", rng.IntN(2)), present: present, leave: leave,
			})
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for _, plan := range plans {
		wg.Go(func() {
			for _, cl := range plan {
				client := &testcluster.Client{Base: cl.node, Token: testcluster.Token(cl.user)}
				got, err := client.Update(cl.client, cl.present, cl.leave)
				if err != nil {
					errs <- err
					return
				}
				for _, ch := range cl.present {
					if !got[ch] {
						errs <- fmt.Errorf("user %s: present %s answered false", cl.user, ch)
						return
					}
				}
				m.apply(cl.user, cl.client, cl.present, cl.leave)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// pick returns n distinct random elements of from.
func pick(rng *rand.Rand, from []string, n int) []string {
	idx := rng.Perm(len(from))[:n]
	out := make([]string, n)
	for i, j := range idx {
		out[i] = from[j]
	}
	return out
}

// channelNames returns n channel names of prefix "m".
func channelNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("/m/ch%d", i)
	}
	return out
}

// checkContinuity verifies a stream's messages per channel, starting after
// the ids the stream asked for (from): ids strictly increasing, never
// repeated, and a jump only after a resync of that channel. It returns the
// last message id seen per channel.
func checkContinuity(events []testcluster.Event, from map[string]int64) (map[string]int64, error) {
	last := maps.Clone(from)
	resynced := map[string]bool{}
	for _, ev := range events {
		switch ev.Event {
		case "resync":
			resynced[ev.Channel()] = true
		case "message":
			msg, err := ev.Message()
			if err != nil {
				return nil, err
			}
			prev, seen := last[msg.Channel]
			switch {
			case seen && msg.MessageID <= prev:
				return nil, fmt.Errorf("%s: id %d after %d (repeat or reorder)", msg.Channel, msg.MessageID, prev)
			case seen && msg.MessageID != prev+1 && !resynced[msg.Channel]:
				return nil, fmt.Errorf("%s: gap %d -> %d without resync", msg.Channel, prev, msg.MessageID)
			}
			last[msg.Channel] = msg.MessageID
			resynced[msg.Channel] = false
		}
	}
	return last, nil
}
