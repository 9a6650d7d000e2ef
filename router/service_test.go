package router

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// model is the expected presence: channel -> user -> clients.
type model map[string]map[string]map[string]bool

func (m model) present(ch, uid, client string) {
	if m[ch] == nil {
		m[ch] = make(map[string]map[string]bool)
	}
	if m[ch][uid] == nil {
		m[ch][uid] = make(map[string]bool)
	}
	m[ch][uid][client] = true
}

func (m model) leave(ch, uid, client string) {
	delete(m[ch][uid], client)
	if len(m[ch][uid]) == 0 {
		delete(m[ch], uid)
	}
}

func (m model) users(ch string) []string {
	ids := []string{}
	for uid := range m[ch] {
		ids = append(ids, uid)
	}
	slices.Sort(ids)
	return ids
}

// testChannels returns n public channels and a few staff-only ones.
func testChannels(n int) []string {
	chs := make([]string, 0, n+n/10)
	for i := range n {
		chs = append(chs, fmt.Sprintf("/pub/c%d", i))
	}
	for i := range n / 10 {
		chs = append(chs, fmt.Sprintf("/staff/s%d", i))
	}
	return chs
}

// testUser is user i; even users are staff.
func testUser(i int) *presence.User {
	if i%2 == 0 {
		return user(fmt.Sprint(i), "staff")
	}
	return user(fmt.Sprint(i))
}

func canEnter(u *presence.User, ch string) bool {
	cfg, _ := testConfigs{}.Resolve(context.Background(), ch)
	return cfg != nil && cfg.CanEnter(u)
}

// applyRandomUpdates sends n random updates through random nodes and keeps m
// in line with them.
func applyRandomUpdates(t *testing.T, c *testCluster, nodes []*testNode, chs []string, m model, rng *rand.Rand, n int) {
	t.Helper()
	ctx := testCtx(t)
	for range n {
		node := nodes[rng.IntN(len(nodes))]
		u := testUser(rng.IntN(12))
		client := fmt.Sprintf("tab%d", rng.IntN(2))
		var present, leave []string
		for range 1 + rng.IntN(6) {
			present = append(present, chs[rng.IntN(len(chs))])
		}
		for range rng.IntN(4) {
			leave = append(leave, chs[rng.IntN(len(chs))])
		}
		got, err := node.r.Update(ctx, u, client, present, leave)
		if err != nil {
			t.Fatalf("update via %s: %v", node.name, err)
		}
		for _, ch := range present {
			if want := canEnter(u, ch); got[ch] != want {
				t.Fatalf("update %s via %s: %v, want %v", ch, node.name, got[ch], want)
			}
			if got[ch] {
				m.present(ch, u.ID, client)
			}
		}
		for _, ch := range leave {
			m.leave(ch, u.ID, client)
		}
	}
}

// checkModel reads every channel from every node, as a staff and a
// non-staff user, and compares with m.
func checkModel(t *testing.T, nodes []*testNode, chs []string, m model) {
	t.Helper()
	ctx := testCtx(t)
	for _, node := range nodes {
		for _, u := range []*presence.User{testUser(0), testUser(1)} {
			for start := 0; start < len(chs); start += presence.MaxChannelsPerCall {
				batch := chs[start:min(start+presence.MaxChannelsPerCall, len(chs))]
				got, err := node.r.Get(ctx, u, batch)
				if err != nil {
					t.Fatalf("get via %s: %v", node.name, err)
				}
				for _, ch := range batch {
					st := got[ch]
					if !canView(u, ch) {
						if st != nil {
							t.Fatalf("%s via %s: user %s sees a hidden channel", ch, node.name, u.ID)
						}
						continue
					}
					if st == nil {
						t.Fatalf("%s via %s: nil state", ch, node.name)
					}
					if ids := userIDs(st); !slices.Equal(ids, m.users(ch)) || st.Count != len(ids) {
						t.Fatalf("%s via %s: users %v (count %d), want %v", ch, node.name, ids, st.Count, m.users(ch))
					}
				}
			}
		}
	}
}

func canView(u *presence.User, ch string) bool {
	cfg, _ := testConfigs{}.Resolve(context.Background(), ch)
	return cfg != nil && cfg.CanView(u)
}

func TestForwardingAgreesWithModel(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	chs := testChannels(200)
	m := make(model)
	rng := rand.New(rand.NewPCG(1, 2))
	applyRandomUpdates(t, c, c.nodes, chs, m, rng, 400)
	checkModel(t, c.nodes, chs, m)

	// Every node served its share: channels are spread over the owners.
	for _, n := range c.nodes {
		if len(n.engine.Channels()) == 0 {
			t.Errorf("%s runs no channel", n.name)
		}
		for _, ch := range n.engine.Channels() {
			if owner, _ := n.r.Owner(ch); owner != n.name {
				t.Errorf("%s runs %s, owned by %s", n.name, ch, owner)
			}
		}
	}
}

func TestCallsGroupedPerOwner(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	ctx := testCtx(t)
	entry := c.nodes[0]
	chs := testChannels(40)[:40]
	owners := map[string]bool{}
	for _, ch := range chs {
		if owner, _ := entry.r.Owner(ch); owner != entry.name {
			owners[owner] = true
		}
	}
	if len(owners) != 2 {
		t.Fatalf("channels owned by %v, want both other nodes", owners)
	}
	before := entry.caller.count(wire.MethodUpdate)
	got, err := entry.r.Update(ctx, user("1"), "tab", chs, chs[:10])
	if err != nil {
		t.Fatal(err)
	}
	if n := entry.caller.count(wire.MethodUpdate) - before; n != int64(len(owners)) {
		t.Errorf("update made %d calls, want one per remote owner (%d)", n, len(owners))
	}
	for _, ch := range chs {
		if !got[ch] {
			t.Errorf("update %s: false", ch)
		}
	}
	before = entry.caller.count(wire.MethodGet)
	states, err := entry.r.Get(ctx, user("2"), chs)
	if err != nil {
		t.Fatal(err)
	}
	if n := entry.caller.count(wire.MethodGet) - before; n != int64(len(owners)) {
		t.Errorf("get made %d calls, want %d", n, len(owners))
	}
	for i, ch := range chs {
		want := []string{"1"}
		if i < 10 { // left after entering, in the same update
			want = nil
		}
		if ids := userIDs(states[ch]); !slices.Equal(ids, want) {
			t.Errorf("%s: users %v, want %v", ch, ids, want)
		}
	}
}

func TestForwardedUpdateChecks(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	ctx := testCtx(t)
	a, b := c.nodes[0], c.nodes[1]
	ch := channelOwnedBy(t, a, b.name, "/staff/x")
	got, err := a.r.Update(ctx, user("9"), "tab", []string{ch, "/nope/x", "bad"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got[ch] || got["/nope/x"] || got["bad"] {
		t.Errorf("non-staff entered: %v", got)
	}
	if _, err := a.r.Update(ctx, nil, "tab", []string{ch}, nil); !errors.Is(err, presence.ErrForbidden) {
		t.Errorf("anonymous update: %v, want ErrForbidden", err)
	}
	if _, err := a.r.Update(ctx, user("1"), "", []string{ch}, nil); !errors.Is(err, presence.ErrInvalid) {
		t.Errorf("empty client id: %v, want ErrInvalid", err)
	}
	states, err := a.r.Get(ctx, nil, []string{ch, "bad"})
	if err != nil {
		t.Fatal(err)
	}
	if states[ch] != nil || states["bad"] != nil || len(states) != 2 {
		t.Errorf("anonymous get of a staff channel: %v", states)
	}
}

// channelOwnedBy returns the first channel named prefix+i that owner owns
// in n's ring.
func channelOwnedBy(t testing.TB, n *testNode, owner, prefix string) string {
	t.Helper()
	for i := range 10000 {
		ch := fmt.Sprintf("%s%d", prefix, i)
		if o, _ := n.r.Owner(ch); o == owner {
			return ch
		}
	}
	t.Fatalf("no channel owned by %s", owner)
	return ""
}

func TestOwnerRingAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := newTestCluster(t, 3, func(cfg *Config) {
		if cfg.Self.Name == "n1" {
			cfg.Registry = reg
		}
	})
	a := c.nodes[0]
	ch := channelOwnedBy(t, a, "n2", "/pub/o")
	owner, replicas := a.r.Owner(ch)
	if owner != "n2" || len(replicas) != 1 || replicas[0] == "n2" {
		t.Errorf("Owner(%s) = %s %v", ch, owner, replicas)
	}
	if got := a.r.Ring().Members(); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Errorf("ring members %v", got)
	}
	epoch := a.r.Ring().Epoch()
	a.r.SetMembers(members(c.nodes[:2]...))
	if a.r.Ring().Epoch() != epoch+1 {
		t.Errorf("epoch %d after %d", a.r.Ring().Epoch(), epoch)
	}
	if _, err := a.r.Get(testCtx(t), nil, []string{ch}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
		if mf.GetName() == "presence_ring_epoch" && mf.GetMetric()[0].GetGauge().GetValue() != float64(epoch+1) {
			t.Errorf("presence_ring_epoch = %v", mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	for _, name := range []string{"presence_forwarded_total", "presence_forward_errors_total", "presence_handoffs_total", "presence_push_dropped_total", "presence_ring_epoch"} {
		if !got[name] {
			t.Errorf("metric %s not registered", name)
		}
	}
	if _, replicas := newTestCluster(t, 1, nil).nodes[0].r.Owner(ch); replicas == nil || len(replicas) != 0 {
		t.Errorf("alone: replicas %v, want empty", replicas)
	}
}
