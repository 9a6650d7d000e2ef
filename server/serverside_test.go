package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/client"
	"github.com/presencehq/presence/internal/testcluster"
	"github.com/presencehq/presence/presence"
)

// The server side's API (issue #12) on in-process clusters: the /server/
// endpoints through the Go client, the embedding program's Presence, and
// max_users across a failover.

// serverSideDoc configures prefix "s": one rule per kind of channel.
const serverSideDoc = `{"rules": [
  {"match": "/s/pub/.+", "config": {"public": true}},
  {"match": "/s/ids/.+", "config": {"allowed_user_ids": ["1"]}},
  {"match": "/s/grp/.+", "config": {"allowed_group_ids": ["staff"]}},
  {"match": "/s/all/.+", "config": {"allowed_group_ids": ["everyone"]}},
  {"match": "/s/count/.+", "config": {"public": true, "count_only": true}},
  {"match": "/s/cap/.+", "config": {"public": true, "max_users": 2}}
]}`

// startServerSideCluster starts 3 nodes serving serverSideDoc.
func startServerSideCluster(t *testing.T, opts ...testcluster.Option) *testcluster.Cluster {
	t.Helper()
	c := testcluster.Start(t, 3, opts...)
	c.WaitReady()
	putPrefix(t, c, 0, "s", serverSideDoc)
	waitPrefixEverywhere(t, c, "s", true, settleTimeout)
	return c
}

// ownedChannel finds a channel named base<i> that node owns.
func ownedChannel(t *testing.T, c *testcluster.Cluster, base, node string) string {
	t.Helper()
	for i := range 1000 {
		ch := fmt.Sprintf("%s%d", base, i)
		owner, _, err := c.Running()[0].Admin().Owner(ch)
		if err != nil {
			t.Fatal(err)
		}
		if owner == node {
			return ch
		}
	}
	t.Fatalf("no channel %s<n> owned by %s", base, node)
	return ""
}

// follow subscribes a browser of node n to ch from its current state.
func follow(t *testing.T, n *testcluster.Node, ch string) *testcluster.Stream {
	t.Helper()
	watcher := n.Client(testcluster.Token("watcher"))
	start, err := watcher.Get(ch)
	if err != nil || start[ch] == nil {
		t.Fatalf("get %s on %s: %v %v", ch, n.Name, start, err)
	}
	s, err := watcher.Subscribe(map[string]int64{ch: start[ch].LastMessageID}, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// messages decodes a stream's message events of ch, failing on others.
func messages(events []testcluster.Event, ch string) ([]testcluster.Message, error) {
	var out []testcluster.Message
	for _, ev := range events {
		if ev.Event != "message" {
			return nil, fmt.Errorf("unexpected %s event %s", ev.Event, ev.Data)
		}
		m, err := ev.Message()
		if err != nil {
			return nil, err
		}
		if m.Channel == ch {
			out = append(out, m)
		}
	}
	return out, nil
}

func entering(m testcluster.Message) []string {
	var ids []string
	for _, u := range m.Data.EnteringUsers {
		ids = append(ids, u.ID)
	}
	return ids
}

func TestServerSideAPIAcrossThreeNodes(t *testing.T) {
	c := startServerSideCluster(t)
	ctx := context.Background()
	sam := client.User{ID: "42", Username: "sam", Name: "Sam"}

	t.Run("present on behalf of a user, in a channel of each node", func(t *testing.T) {
		for o := range 3 {
			ch := ownedChannel(t, c, "/s/pub/owned-by-", c.Node(o).Name)
			var streams []*testcluster.Stream
			for k := range 3 {
				if k != o {
					streams = append(streams, follow(t, c.Node(k), ch))
				}
			}
			ok, err := c.Node((o+1)%3).Backend().Present(ctx, sam, "server", ch)
			if err != nil || !ok {
				t.Fatalf("present in %s (owned by %s): %v %v", ch, c.Node(o).Name, ok, err)
			}
			for _, s := range streams {
				err := s.WaitEvents(settleTimeout, func(events []testcluster.Event) error {
					msgs, err := messages(events, ch)
					if err != nil {
						return err
					}
					if len(msgs) != 1 || !slices.Equal(entering(msgs[0]), []string{"42"}) {
						return fmt.Errorf("messages %+v, want sam entering", msgs)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	})

	t.Run("the backend reads who is in a count-only channel; browsers do not", func(t *testing.T) {
		ch := "/s/count/visitors"
		for i, id := range []string{"2", "1"} {
			if ok, err := c.Node(i).Backend().Present(ctx, client.User{ID: id}, "server", ch); err != nil || !ok {
				t.Fatalf("present %s: %v %v", id, ok, err)
			}
		}
		for _, n := range c.Running() {
			st, err := n.Backend().State(ctx, ch)
			if err != nil || !st.CountOnly || st.Count != 2 || !slices.Equal(st.UserIDs, []string{"1", "2"}) || len(st.Users) != 2 {
				t.Fatalf("%s: backend state %+v %v", n.Name, st, err)
			}
			status, body, err := n.Client(testcluster.Token("1")).Do(http.MethodGet, "/presence/get?channels[]="+url.QueryEscape(ch), nil)
			if err != nil || status != http.StatusOK || strings.Contains(string(body), "users") || !strings.Contains(string(body), `"count":2`) {
				t.Fatalf("%s: a user's /presence/get of a count-only channel: %d %s %v", n.Name, status, body, err)
			}
		}
	})

	t.Run("clear publishes one leave", func(t *testing.T) {
		ch := ownedChannel(t, c, "/s/pub/cleared-", c.Node(1).Name)
		for _, id := range []string{"8", "9"} {
			if ok, err := c.Node(0).Backend().Present(ctx, client.User{ID: id}, "server", ch); err != nil || !ok {
				t.Fatal(ok, err)
			}
		}
		s := follow(t, c.Node(2), ch)
		if err := c.Node(0).Backend().Clear(ctx, ch); err != nil {
			t.Fatal(err)
		}
		err := s.WaitEvents(settleTimeout, func(events []testcluster.Event) error {
			msgs, err := messages(events, ch)
			if err != nil {
				return err
			}
			if len(msgs) != 1 || !slices.Equal(msgs[0].Data.LeavingUserIDs, []string{"8", "9"}) {
				return fmt.Errorf("messages %+v, want one leave of 8 and 9", msgs)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		st, err := c.Node(2).Backend().State(ctx, ch)
		if err != nil || st.Count != 0 {
			t.Fatalf("after the clear: %+v %v", st, err)
		}
		if got, err := messages(s.Events(), ch); err != nil || len(got) != 1 {
			t.Fatalf("after the clear the stream has %d messages (%v), want 1", len(got), err)
		}
	})

	t.Run("can agrees with update", func(t *testing.T) {
		users := map[string]*client.User{
			"anonymous": nil,
			"listed":    {ID: "1"},
			"staff":     {ID: "2", Groups: []string{"staff"}},
			"other":     {ID: "3", Groups: []string{"ops"}},
		}
		view := map[string][]string{ // who may view each kind of channel
			"pub": {"anonymous", "listed", "staff", "other"}, "count": {"anonymous", "listed", "staff", "other"},
			"ids": {"listed"}, "grp": {"staff"}, "all": {"listed", "staff", "other"}, "nope": nil,
		}
		for i, n := range c.Running() {
			for kind, viewers := range view {
				ch := fmt.Sprintf("/s/%s/can-%d", kind, i)
				if kind == "nope" {
					ch = fmt.Sprintf("/nope/can-%d", i)
				}
				for who, u := range users {
					acc, err := n.Backend().Can(ctx, ch, u)
					if err != nil {
						t.Fatal(err)
					}
					canView := slices.Contains(viewers, who)
					want := client.Access{Exists: kind != "nope", CanView: canView, CanEnter: canView && u != nil, CountOnly: kind == "count"}
					if acc != want {
						t.Errorf("%s: can(%s, %s) = %+v, want %+v", n.Name, who, ch, acc, want)
					}
					token := ""
					if u != nil {
						token = testcluster.Token(u.ID, u.Groups...)
						got, err := n.Client(token).Update("can", []string{ch}, nil)
						if err != nil {
							t.Fatal(err)
						}
						if got[ch] != acc.CanEnter {
							t.Errorf("%s: %s's update of %s answered %v, can_enter %v", n.Name, who, ch, got[ch], acc.CanEnter)
						}
					}
					states, err := n.Client(token).Get(ch)
					if err != nil {
						t.Fatal(err)
					}
					if (states[ch] != nil) != acc.CanView {
						t.Errorf("%s: %s's get of %s: %+v, can_view %v", n.Name, who, ch, states[ch], acc.CanView)
					}
				}
			}
		}
	})

	t.Run("user tokens and wrong tokens change nothing", func(t *testing.T) {
		ch := ownedChannel(t, c, "/s/pub/guarded-", c.Node(2).Name)
		if ok, err := c.Node(0).Backend().Present(ctx, sam, "server", ch); err != nil || !ok {
			t.Fatal(ok, err)
		}
		before, err := c.Node(0).Backend().State(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		q := url.QueryEscape(ch)
		calls := []struct{ method, path, body string }{
			{http.MethodPost, "/server/presence/update", `{"user": {"id": "77"}, "client_id": "c", "present_channels": ["` + ch + `"]}`},
			{http.MethodDelete, "/server/presence/channel?channel=" + q, ""},
			{http.MethodGet, "/server/presence/get?channels[]=" + q, ""},
			{http.MethodGet, "/server/presence/can?channel=" + q, ""},
		}
		for _, n := range c.Running() {
			for _, token := range []string{"", testcluster.Token("42"), "not-the-service-token", testcluster.JWTSecret} {
				for _, call := range calls {
					status, body, err := n.Client(token).Do(call.method, call.path, call.body)
					if err != nil || status != http.StatusUnauthorized || !strings.Contains(string(body), "service token required") {
						t.Errorf("%s %s %s with %.20q: %d %s %v", n.Name, call.method, call.path, token, status, body, err)
					}
				}
			}
			status, body, err := n.Service().Do(http.MethodPut, "/admin/prefixes/s", `{"rules": []}`)
			if err != nil || status != http.StatusUnauthorized {
				t.Errorf("%s: PUT /admin/prefixes with the service token: %d %s %v", n.Name, status, body, err)
			}
		}
		after, err := c.Node(1).Backend().State(ctx, ch)
		if err != nil || after.LastMessageID != before.LastMessageID || !slices.Equal(after.UserIDs, []string{"42"}) {
			t.Fatalf("refused calls changed %s: %+v, was %+v (%v)", ch, after, before, err)
		}
		doc, err := c.Node(1).Backend().GetPrefix(ctx, "s")
		if err != nil || len(doc.Rules) != 6 {
			t.Fatalf("the prefix document changed: %+v %v", doc, err)
		}
	})

	t.Run("an embedding program's Presence works cluster-wide", func(t *testing.T) {
		caps := func(channel string) (*presence.Config, error) {
			return &presence.Config{Public: true, MaxUsers: 1}, nil
		}
		for _, n := range c.Running() {
			if err := n.Server().RegisterPrefix("gofn", caps); err != nil {
				t.Fatal(err)
			}
		}
		p0, p2 := c.Node(0).Server().Presence(), c.Node(2).Server().Presence()
		for o := range 3 {
			ch := ownedChannel(t, c, "/s/pub/embedded-", c.Node(o).Name)
			if ok, err := p0.Present(ctx, &presence.User{ID: "e", Username: "embedded"}, "go", ch); err != nil || !ok {
				t.Fatalf("present in %s: %v %v", ch, ok, err)
			}
			if ids, err := p2.UserIDs(ctx, ch); err != nil || !slices.Equal(ids, []string{"e"}) {
				t.Fatalf("user ids of %s through another node: %v %v", ch, ids, err)
			}
			if acc, err := p2.Can(ctx, &presence.User{ID: "x"}, ch); err != nil || !acc.CanEnter {
				t.Fatalf("can: %+v %v", acc, err)
			}
			if err := p2.Clear(ctx, ch); err != nil {
				t.Fatal(err)
			}
			if n, err := p0.Count(ctx, ch); err != nil || n != 0 {
				t.Fatalf("count after clear: %d %v", n, err)
			}
			// A Go function's cap holds wherever the channel lives.
			capped := ownedChannel(t, c, "/gofn/room-", c.Node(o).Name)
			first, err := p0.Present(ctx, &presence.User{ID: "a"}, "go", capped)
			if err != nil {
				t.Fatal(err)
			}
			second, err := p2.Present(ctx, &presence.User{ID: "b"}, "go", capped)
			if err != nil || !first || second {
				t.Fatalf("a Go function's cap of 1 in %s: %v %v %v", capped, first, second, err)
			}
		}
		if _, err := p0.State(ctx, "/nope/x"); !errors.Is(err, presence.ErrNotFound) {
			t.Fatalf("state of a missing channel: %v", err)
		}
	})
}

// TestMaxUsersHoldsAfterTheOwnerIsKilled: a channel of at most two users;
// the third user is answered false and nothing is published, the two keep
// heartbeating, and both hold on the replica once the owner is killed.
func TestMaxUsersHoldsAfterTheOwnerIsKilled(t *testing.T) {
	c := startServerSideCluster(t, testcluster.WithFastGossip())
	ctx := context.Background()
	ch := ownedChannel(t, c, "/s/cap/room-", c.Node(0).Name)
	backend := c.Node(1).Backend()
	for _, id := range []string{"a", "b"} {
		if ok, err := backend.Present(ctx, client.User{ID: id}, "server", ch); err != nil || !ok {
			t.Fatalf("%s refused below the cap: %v %v", id, ok, err)
		}
	}
	before, err := backend.State(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	// check asserts the cap through node n: z refused, a and b heartbeat
	// (from the browser and the backend), nothing published.
	check := func(n *testcluster.Node, lastID int64) error {
		if ok, err := n.Backend().Present(ctx, client.User{ID: "z"}, "server", ch); err != nil || ok {
			return fmt.Errorf("z through %s: %v %v, want false", n.Name, ok, err)
		}
		if got, err := n.Client(testcluster.Token("z")).Update("tab", []string{ch}, nil); err != nil || got[ch] {
			return fmt.Errorf("z's browser through %s: %v %v, want false", n.Name, got, err)
		}
		for _, id := range []string{"a", "b"} {
			if ok, err := n.Backend().Present(ctx, client.User{ID: id}, "server", ch); err != nil || !ok {
				return fmt.Errorf("heartbeat of %s through %s: %v %v", id, n.Name, ok, err)
			}
			if got, err := n.Client(testcluster.Token(id)).Update("phone", []string{ch}, nil); err != nil || !got[ch] {
				return fmt.Errorf("second client of %s through %s: %v %v", id, n.Name, got, err)
			}
		}
		st, err := n.Backend().State(ctx, ch)
		switch {
		case err != nil:
			return err
		case !slices.Equal(st.UserIDs, []string{"a", "b"}):
			return fmt.Errorf("users %v through %s, want [a b]", st.UserIDs, n.Name)
		case st.LastMessageID != lastID:
			return fmt.Errorf("last message id %d through %s, want %d: the refusals or heartbeats published", st.LastMessageID, n.Name, lastID)
		}
		return nil
	}
	for _, n := range c.Running() {
		if err := check(n, before.LastMessageID); err != nil {
			t.Fatal(err)
		}
	}
	c.Kill(0)
	// The survivors take the channel over once gossip declares node0 dead;
	// meanwhile calls may wait and fail: poll until they are answered.
	killed := time.Now()
	for _, n := range c.Running() {
		c.WaitFor(30*time.Second, func() error { return check(n, before.LastMessageID) })
		if owner, _, err := n.Admin().Owner(ch); err != nil || owner == c.Node(0).Name {
			t.Fatalf("%s still names %s the owner (%v): no failover was tested", n.Name, owner, err)
		}
	}
	t.Logf("the cap held through %s's death; answered again %v after the kill", c.Node(0).Name, time.Since(killed).Round(time.Millisecond))
	if err := c.Node(2).Backend().Leave(ctx, "a", "server", ch); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(2).Backend().Leave(ctx, "a", "phone", ch); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Node(1).Backend().Present(ctx, client.User{ID: "z"}, "server", ch); err != nil || !ok {
		t.Fatalf("z refused after a left: %v %v", ok, err)
	}
	st, err := c.Node(2).Backend().State(ctx, ch)
	if err != nil || !slices.Equal(st.UserIDs, []string{"b", "z"}) {
		t.Fatalf("users %+v %v, want [b z]", st, err)
	}
	raw, _ := json.Marshal(st)
	t.Logf("after the failover: %s", raw)
}
