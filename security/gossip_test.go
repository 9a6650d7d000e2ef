package security

import (
	"fmt"
	"slices"
	"testing"

	"github.com/presencehq/presence/api"
	"github.com/presencehq/presence/cluster/membership"
	"github.com/presencehq/presence/internal/testkit"
)

// TestGossipRefusesAMemberWithoutTheKey: memberlist encrypts and
// authenticates gossip with the cluster key, so a memberlist without it,
// or with another, cannot join, and no node lists it.
func TestGossipRefusesAMemberWithoutTheKey(t *testing.T) {
	c := startCluster(t, 3)
	for name, key := range map[string][]byte{"no key": nil, "another key": randomKey()} {
		intruder := "intruder-" + map[string]string{"no key": "plain", "another key": "keyed"}[name]
		m, err := membership.Start(membership.Config{
			Name: intruder, BindAddr: "127.0.0.1:0", Key: key, Fast: true,
			Meta:   membership.Meta{RPC: "127.0.0.1:1", HTTP: "127.0.0.1:2"},
			Logger: testkit.Logger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Shutdown() })
		joined, err := m.Join([]string{c.Node(0).GossipAddr(), c.Node(1).GossipAddr()})
		if err == nil || joined > 0 {
			t.Errorf("%s: joined %d members (err %v)", name, joined, err)
		}
		if others := len(m.Members()); others > 1 {
			t.Errorf("%s: the intruder learnt %d members", name, others)
		}
		// A sync point after the attempt: the cluster still agrees with
		// itself, and nobody lists the intruder.
		c.WaitReady()
		for _, n := range c.Running() {
			view, err := n.Admin().Cluster()
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(view.Members, func(m api.Member) bool { return m.Name == intruder }) {
				t.Errorf("%s: %s lists the intruder", name, n.Name)
			}
			if got := fmt.Sprint(view.Alive()); got != "[node0 node1 node2]" {
				t.Errorf("%s: %s sees %s alive", name, n.Name, got)
			}
		}
	}
}
