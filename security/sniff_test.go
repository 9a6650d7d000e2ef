package security

import (
	"fmt"
	"testing"

	"github.com/presencehq/presence/internal/testcluster"
)

// TestTrafficBetweenNodesHidesChannelsAndUsers records every byte two
// nodes exchange (calls, Raft, gossip) while a user enters a channel
// through both nodes and leaves it: with the cluster key, and with TLS,
// neither the channel's name nor the user's id shows. Without either they
// do, which shows the recording holds that traffic.
func TestTrafficBetweenNodesHidesChannelsAndUsers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []testcluster.Option
		plain bool
	}{
		{"cluster key", nil, false},
		{"TLS and cluster key", []testcluster.Option{testcluster.WithTLS()}, false},
		{"neither", []testcluster.Option{testcluster.WithoutClusterKey()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t, 2, append(tc.opts, testcluster.WithCapture())...)
			const channel, user = "/sniff/room-7c1d3e", "uid-5f2a9bc4"
			putDocument(t, c, 0, "sniff")
			c.WaitFor(settle, func() error {
				for i := range 2 {
					if !hasDocument(t, c, i, "sniff") {
						return fmt.Errorf("node%d lacks the document", i)
					}
				}
				return nil
			})
			token := testcluster.Token(user)
			for i := range 2 { // one of the two is forwarded to the owner
				got, err := c.Node(i).Client(token).Update(fmt.Sprintf("client-%d", i), []string{channel}, nil)
				if err != nil || !got[channel] {
					t.Fatalf("enter through node%d: %v, %v", i, got, err)
				}
			}
			for i := range 2 {
				st, err := c.Node(i).Client(token).Get(channel)
				if err != nil || st[channel] == nil || len(st[channel].Users) != 1 || st[channel].Users[0].ID != user {
					t.Fatalf("node%d: %+v, %v", i, st[channel], err)
				}
			}
			if _, err := c.Node(1).Client(token).Update("client-1", nil, []string{channel}); err != nil {
				t.Fatal(err)
			}
			seen := c.Captured()
			found := contains(seen, "room-7c1d3e", user)
			t.Logf("%d bytes between the nodes; in clear: %q", len(seen), found)
			if tc.plain && len(found) != 2 {
				t.Fatalf("plain traffic: found %q, want both (the recording misses the traffic)", found)
			}
			if !tc.plain && len(found) > 0 {
				t.Fatalf("in clear between the nodes: %q", found)
			}
		})
	}
}
