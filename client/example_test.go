package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/presencehq/presence/client"
	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/server"
)

// nodeURL is the base URL of the presence node these examples run against:
// a node in dev mode (presence-node --dev), whose service token is
// "dev-service-token", whose admin token is "dev-admin-token", and whose
// prefix "demo" makes every /demo/... channel public and every
// /demo/count/... channel count-only. TestMain starts it.
var nodeURL string

func TestMain(m *testing.M) {
	stop, err := startDevNode()
	if err != nil {
		fmt.Fprintln(os.Stderr, "client examples:", err)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	os.Exit(code)
}

// startDevNode starts a single dev node on free loopback ports, waits
// until it is ready with its demo prefix stored, and sets nodeURL.
func startDevNode() (stop func(), err error) {
	dir, err := os.MkdirTemp("", "presence-client-example-")
	if err != nil {
		return nil, err
	}
	var ports testkit.Ports
	gossip, err := ports.Addr(true)
	if err != nil {
		return nil, err
	}
	srv, err := server.New(server.Config{
		Name: "example", Dev: true, DataDir: dir, FastTimings: true,
		HTTPAddr: "127.0.0.1:0", GossipAddr: gossip, RPCAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	stop = func() {
		srv.Kill()
		os.RemoveAll(dir)
	}
	if err := srv.Start(context.Background()); err != nil {
		stop()
		return nil, err
	}
	nodeURL = "http://" + srv.HTTPAddr()
	admin, err := client.New(client.Config{URLs: []string{nodeURL}, Token: server.DevAdminToken})
	if err != nil {
		stop()
		return nil, err
	}
	err = testkit.Poll(30*time.Second, func() error {
		if ok, why := srv.Ready(); !ok {
			return errors.New(why)
		}
		_, err := admin.GetPrefix(context.Background(), "demo")
		return err
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("the dev node did not get ready: %w", err)
	}
	return stop, nil
}

// newClient returns a client of the examples' node with its service token.
func newClient() *client.Client {
	c, err := client.New(client.Config{URLs: []string{nodeURL}, Token: "dev-service-token"})
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// The "replying" indicator of a chat, kept by the backend as Discourse's
// chat does: present while the user types a reply, left when it is sent.
func Example() {
	ctx := context.Background()
	c, err := client.New(client.Config{
		URLs:  []string{nodeURL}, // every node of the cluster; calls fail over
		Token: "dev-service-token",
	})
	if err != nil {
		log.Fatal(err)
	}
	sam := client.User{ID: "42", Username: "sam", Name: "Sam"}
	ok, err := c.Present(ctx, sam, "reply-1", "/demo/chat/7/replying")
	if err != nil {
		log.Fatal(err)
	}
	st, err := c.State(ctx, "/demo/chat/7/replying")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("present:", ok, "replying:", st.UserIDs)

	if err := c.Leave(ctx, sam.ID, "reply-1", "/demo/chat/7/replying"); err != nil {
		log.Fatal(err)
	}
	st, err = c.State(ctx, "/demo/chat/7/replying")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("replying after the reply:", st.UserIDs)
	// Output:
	// present: true replying: [42]
	// replying after the reply: []
}

func ExampleClient_Update() {
	ctx := context.Background()
	c := newClient()
	ann := client.User{ID: "9", Username: "ann", Groups: []string{"staff"}}
	// Present in two channels (one does not exist), leaving a third.
	got, err := c.Update(ctx, ann, "server", []string{"/demo/topic/1", "/nope/x"}, []string{"/demo/topic/2"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got["/demo/topic/1"], got["/nope/x"])
	// Output: true false
}

// A page served by the backend embeds the state of its channels, so that
// the browser needs no GET before it subscribes. The backend is trusted:
// it sees who is in a count-only channel, which browsers never do.
func ExampleClient_Get() {
	ctx := context.Background()
	c := newClient()
	for _, id := range []string{"3", "1"} {
		if _, err := c.Present(ctx, client.User{ID: id}, "tab", "/demo/count/example"); err != nil {
			log.Fatal(err)
		}
	}
	states, err := c.Get(ctx, "/demo/count/example", "/nope/x")
	if err != nil {
		log.Fatal(err)
	}
	st := states["/demo/count/example"]
	fmt.Println(st.Count, st.CountOnly, st.UserIDs, states["/nope/x"] == nil)
	// Output: 2 true [1 3] true
}

func ExampleClient_State() {
	ctx := context.Background()
	c := newClient()
	_, err := c.State(ctx, "/nope/x")
	fmt.Println(errors.Is(err, client.ErrNotFound))
	// Output: true
}

// Can answers as the node that serves the channel's updates decides them.
func ExampleClient_Can() {
	ctx := context.Background()
	c := newClient()
	signedIn, err := c.Can(ctx, "/demo/online", &client.User{ID: "7"})
	if err != nil {
		log.Fatal(err)
	}
	anonymous, err := c.Can(ctx, "/demo/count/visitors", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%+v\n%+v\n", signedIn, anonymous)
	// Output:
	// {Exists:true CanView:true CanEnter:true CountOnly:false MaxUsers:0}
	// {Exists:true CanView:true CanEnter:false CountOnly:true MaxUsers:0}
}

// Clear makes everyone leave a channel at once, in one message.
func ExampleClient_Clear() {
	ctx := context.Background()
	c := newClient()
	for _, id := range []string{"1", "2", "3"} {
		if _, err := c.Present(ctx, client.User{ID: id}, "tab", "/demo/room/cleared"); err != nil {
			log.Fatal(err)
		}
	}
	if err := c.Clear(ctx, "/demo/room/cleared"); err != nil {
		log.Fatal(err)
	}
	st, err := c.State(ctx, "/demo/room/cleared")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.Count)
	// Output: 0
}

// A prefix whose rooms hold at most two users at once: a third user is
// refused until one of them leaves.
func ExampleClient_PutPrefix() {
	ctx := context.Background()
	admin, err := client.New(client.Config{URLs: []string{nodeURL}, Token: "dev-service-token", AdminToken: "dev-admin-token"})
	if err != nil {
		log.Fatal(err)
	}
	stored, err := admin.PutPrefix(ctx, "rooms", client.PrefixDocument{Rules: []client.Rule{
		{Match: "/rooms/[0-9]+", Config: client.ChannelConfig{AllowedGroupIDs: []string{"everyone"}, MaxUsers: 2}},
	}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%+v\n", stored.Rules[0].Config)
	var answers []bool
	for i := range 3 {
		ok, err := admin.Present(ctx, client.User{ID: strconv.Itoa(i)}, "tab", "/rooms/1")
		if err != nil {
			log.Fatal(err)
		}
		answers = append(answers, ok)
	}
	fmt.Println(answers)
	if err := admin.Leave(ctx, "0", "tab", "/rooms/1"); err != nil {
		log.Fatal(err)
	}
	ok, err := admin.Present(ctx, client.User{ID: "2"}, "tab", "/rooms/1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("after a leave:", ok)
	if err := admin.DeletePrefix(ctx, "rooms"); err != nil {
		log.Fatal(err)
	}
	_, err = admin.GetPrefix(ctx, "rooms")
	fmt.Println(errors.Is(err, client.ErrNotFound))
	// Output:
	// {Public:false AllowedUserIDs:[] AllowedGroupIDs:[everyone] CountOnly:false Timeout:0 MaxUsers:2}
	// [true true false]
	// after a leave: true
	// true
}

// A user token, or a service token on the admin API, is refused.
func ExampleErrUnauthorized() {
	ctx := context.Background()
	c := newClient() // the service token only
	_, err := c.ListPrefixes(ctx)
	fmt.Println(errors.Is(err, client.ErrUnauthorized))
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Messages)
	}
	// Output:
	// true
	// 401 [not authenticated: admin token required]
}
