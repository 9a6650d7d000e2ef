package router

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/ring"
)

func withReplication(cfg *Config) { cfg.Replication = true }

// replicaChannel returns a public channel owned by owner among names, with
// its replica.
func replicaChannel(t *testing.T, names []string, owner string) (ch, replica string) {
	t.Helper()
	rg := ring.New(1, names)
	for i := range 10000 {
		ch := fmt.Sprintf("/pub/r%d", i)
		if o, rep := rg.OwnerAndReplica(ch); o == owner {
			return ch, rep
		}
	}
	t.Fatalf("no channel owned by %s", owner)
	return "", ""
}

// replicaClients returns how many clients node keeps in its copy of ch.
func replicaClients(n *testNode, ch string) int {
	n.r.replicas.mu.Lock()
	defer n.r.replicas.mu.Unlock()
	if e := n.r.replicas.by[ch]; e != nil {
		return len(e.snap.Clients)
	}
	return -1
}

// cutOff makes every node but victim unable to reach victim.
func cutOff(c *testCluster, victim *testNode) {
	for _, n := range c.nodes {
		if n != victim {
			n.caller.setFail(func(addr string, _ uint16) error {
				if addr == victim.tr.Addr() {
					return errors.New("unreachable")
				}
				return nil
			})
		}
	}
}

// replicate runs one replication pass everywhere and waits until rep holds
// clients clients of ch.
func replicate(t *testing.T, c *testCluster, rep *testNode, ch string, clients int) {
	t.Helper()
	c.clk.Advance(DefaultReplicationInterval)
	waitFor(t, "the replica copy", func() bool { return replicaClients(rep, ch) == clients })
}

func TestReplicaPromotedWhenOwnerDies(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ctx := testCtx(t)
	owner := c.node("n1")
	ch, repName := replicaChannel(t, []string{"n1", "n2", "n3"}, "n1")
	rep := c.node(repName)
	for _, u := range []string{"a", "b"} {
		if _, err := rep.r.Update(ctx, user(u), "tab", []string{ch}, nil); err != nil {
			t.Fatal(err)
		}
	}
	replicate(t, c, rep, ch, 2)
	// A present acknowledged after the pass reached the replica with it.
	if _, err := rep.r.Update(ctx, user("c"), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	if n := replicaClients(rep, ch); n != 3 {
		t.Fatalf("replica holds %d clients after an acknowledged present, want 3", n)
	}
	before := p1LastID(t, owner, ch)

	cutOff(c, owner)
	var rest []*testNode
	for _, n := range c.nodes {
		if n != owner {
			rest = append(rest, n)
		}
	}
	c.setMembers(rest...)
	got, err := rest[0].r.Get(ctx, nil, []string{ch})
	if err != nil {
		t.Fatal(err)
	}
	if ids := userIDs(got[ch]); !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Fatalf("after the promotion users are %v, want [a b c]", ids)
	}
	if got[ch].LastMessageID <= before {
		t.Fatalf("last id %d after the promotion, want above %d", got[ch].LastMessageID, before)
	}
	if p := testutilValue(rep.r.m.promotions); p != 1 {
		t.Fatalf("promotions on the replica: %v, want 1", p)
	}
}

func TestPausedOwnerCopyDoesNotBringBackLeftUsers(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ctx := testCtx(t)
	owner := c.node("n1")
	ch, repName := replicaChannel(t, []string{"n1", "n2", "n3"}, "n1")
	rep := c.node(repName)
	for _, u := range []string{"a", "b"} {
		if _, err := rep.r.Update(ctx, user(u), "tab", []string{ch}, nil); err != nil {
			t.Fatal(err)
		}
	}
	replicate(t, c, rep, ch, 2)

	// The owner is paused: the others drop it and the replica takes over.
	var rest []*testNode
	for _, n := range c.nodes {
		if n != owner {
			rest = append(rest, n)
		}
	}
	cutOff(c, owner)
	c.setMembers(rest...)
	c.clk.Advance(2 * time.Second)
	if _, err := rep.r.Update(ctx, user("b"), "tab", nil, []string{ch}); err != nil {
		t.Fatal(err)
	}
	// The owner comes back with its stale copy; the channel is handed back
	// and the merge must not resurrect b.
	for _, n := range c.nodes {
		n.caller.setFail(nil)
	}
	c.setMembers(c.nodes...)
	c.waitSettled(c.nodes...)
	got, err := owner.r.Get(ctx, nil, []string{ch})
	if err != nil {
		t.Fatal(err)
	}
	if ids := userIDs(got[ch]); !slices.Equal(ids, []string{"a"}) {
		t.Fatalf("after the owner's return users are %v, want [a]", ids)
	}
}

func TestDropLeftKeepsClientsHeardAfterTheLeave(t *testing.T) {
	cfg := &presence.Config{Timeout: 10}
	s := &presence.ChannelSnapshot{Channel: "/x", Config: cfg, Clients: []presence.ClientSnapshot{
		{User: presence.UserInfo{ID: "stale"}, ClientID: "t", ExpiresAtUnixNano: 15e9}, // heard at 5 s
		{User: presence.UserInfo{ID: "fresh"}, ClientID: "t", ExpiresAtUnixNano: 25e9}, // heard at 15 s
		{User: presence.UserInfo{ID: "other"}, ClientID: "t", ExpiresAtUnixNano: 15e9},
	}}
	out := dropLeft(s, map[string]int64{"stale": 10e9, "fresh": 10e9})
	var ids []string
	for _, c := range out.Clients {
		ids = append(ids, c.User.ID)
	}
	if !slices.Equal(ids, []string{"fresh", "other"}) {
		t.Fatalf("kept %v, want [fresh other]", ids)
	}
	if len(s.Clients) != 3 {
		t.Fatal("dropLeft modified its input")
	}
}

func TestReplicateRequestRoundTrip(t *testing.T) {
	q := replicateRequest{from: Member{Name: "n1", RPCAddr: "a:1"}, pass: 7, items: []replicaItem{{
		snap:     &presence.ChannelSnapshot{Channel: "/x", LastID: 5},
		interest: []interested{{node: Member{Name: "n2", RPCAddr: "b:2"}, gen: 3}},
	}}}
	var e encoder
	q.encode(&e)
	got, err := decodeReplicateRequest(e.b)
	if err != nil {
		t.Fatal(err)
	}
	if got.from != q.from || got.pass != 7 || len(got.items) != 1 || got.items[0].snap.LastID != 5 || got.items[0].interest[0].gen != 3 {
		t.Fatalf("round trip: %+v", got)
	}
	in := installRequest{from: q.from, snap: q.items[0].snap, leaves: map[string]int64{"u": 42}}
	e = encoder{}
	in.encode(&e)
	back, err := decodeInstallRequest(e.b)
	if err != nil || back.leaves["u"] != 42 {
		t.Fatalf("install leaves round trip: %+v, %v", back.leaves, err)
	}
}

func TestLeaveWithoutPresenceStillFencesALateCopy(t *testing.T) {
	c := newTestCluster(t, 1, withReplication)
	ctx := testCtx(t)
	n := c.nodes[0]
	ch := "/pub/late"
	heard := c.clk.Now().UnixNano()
	c.clk.Advance(time.Second)
	// The leave reaches this node before the copy holding the client.
	if _, err := n.r.Update(ctx, user("k"), "tab", nil, []string{ch}); err != nil {
		t.Fatal(err)
	}
	exp := heard + int64(pubConfig.TimeoutSeconds())*int64(time.Second)
	snap := &presence.ChannelSnapshot{Channel: ch, Config: pubConfig, LastID: 5, Clients: []presence.ClientSnapshot{
		{User: presence.UserInfo{ID: "k"}, ClientID: "tab", ExpiresAtUnixNano: exp},
		{User: presence.UserInfo{ID: "m"}, ClientID: "tab", ExpiresAtUnixNano: exp},
	}}
	if err := n.r.installLocal(ctx, snap, nil, nil); err != nil {
		t.Fatal(err)
	}
	got, err := n.r.Get(ctx, nil, []string{ch})
	if err != nil {
		t.Fatal(err)
	}
	if ids := userIDs(got[ch]); !slices.Equal(ids, []string{"m"}) {
		t.Fatalf("users %v after the late copy, want [m]", ids)
	}
}

func TestHolderRefusesAStaleOwnersCopy(t *testing.T) {
	c := newTestCluster(t, 2, withReplication)
	ctx := testCtx(t)
	ch, _ := replicaChannel(t, []string{"n1", "n2"}, "n1")
	holder, stale := c.node("n1"), c.node("n2")
	if _, err := holder.r.Update(ctx, user("a"), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	q := replicateRequest{from: stale.member(), pass: 1, items: []replicaItem{{
		snap: &presence.ChannelSnapshot{Channel: ch, Config: pubConfig, LastID: 1, Clients: []presence.ClientSnapshot{
			{User: presence.UserInfo{ID: "ghost"}, ClientID: "tab", ExpiresAtUnixNano: c.clk.Now().Add(time.Minute).UnixNano()},
		}},
	}}}
	var e encoder
	q.encode(&e)
	resp, err := holder.r.handleReplicate(e.b)
	if err != nil {
		t.Fatal(err)
	}
	d := decoder{b: resp}
	if refused := d.strings(); !slices.Equal(refused, []string{ch}) {
		t.Fatalf("refused %v, want [%s]", refused, ch)
	}
	if n := replicaClients(holder, ch); n != -1 {
		t.Fatalf("the holder kept a stale copy with %d clients", n)
	}
}
