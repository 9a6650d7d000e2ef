package security

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/cluster/membership"
	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/internal/testcluster"
	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/server"
)

// probeUsers heartbeat during a rotation, one a round in turn.
const probeUsers = 4

// signToken signs a user token with an HS256 secret.
func signToken(t *testing.T, secret, user string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "username": "user" + user, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// prober heartbeats users' clients on a channel through the running
// nodes, one user a round in turn, with the tokens the application signs
// with at the time, and counts the rounds in which no node accepted one.
type prober struct {
	c       *testcluster.Cluster
	channel string
	tokens  atomic.Pointer[[]string]
	rounds  atomic.Int64
	failed  atomic.Int64
	lastErr atomic.Pointer[error]
	stop    chan struct{}
	done    sync.WaitGroup
}

func startProber(c *testcluster.Cluster, channel string, tokens []string) *prober {
	p := &prober{c: c, channel: channel, stop: make(chan struct{})}
	p.tokens.Store(&tokens)
	p.done.Go(p.run)
	return p
}

func (p *prober) run() {
	// The workload's pace: each user's rate limit refills 2 calls a
	// second, and there are probeUsers of them.
	tick := time.NewTicker(500 * time.Millisecond / probeUsers)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		p.rounds.Add(1)
		tokens := *p.tokens.Load()
		if err := p.round(tokens[i%len(tokens)]); err != nil {
			p.failed.Add(1)
			p.lastErr.Store(&err)
		}
	}
}

// round tries the running nodes in turn until one accepts the heartbeat.
func (p *prober) round(token string) error {
	var err error
	for _, n := range p.c.Running() {
		var got map[string]bool
		got, err = n.Client(token).Update("probe", []string{p.channel}, nil)
		if err == nil && got[p.channel] {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%s answered %v", n.Name, got)
		}
	}
	return fmt.Errorf("no node accepted the heartbeat: %v", err)
}

// waitRounds waits until n more rounds were run, failed or not.
func (p *prober) waitRounds(t *testing.T, n int64) {
	t.Helper()
	target := p.rounds.Load() + n
	testkit.WaitFor(t, "heartbeat rounds", func() bool { return p.rounds.Load() >= target })
}

func (p *prober) finish(t *testing.T) {
	t.Helper()
	close(p.stop)
	p.done.Wait()
	if n := p.failed.Load(); n > 0 {
		t.Errorf("%d of %d rounds found no node accepting the current token; the last: %v", n, p.rounds.Load(), *p.lastErr.Load())
	}
	t.Logf("%d heartbeat rounds during the rotation, all answered", p.rounds.Load())
}

// tokenStatus returns the status of /presence/update with token on node i.
func tokenStatus(t *testing.T, c *testcluster.Cluster, i int, token, channel string) int {
	t.Helper()
	status, body, err := c.Node(i).Client(token).Do(http.MethodPost, "/presence/update",
		map[string]any{"client_id": "check", "present_channels": []string{channel}})
	if err != nil {
		t.Fatalf("node%d: %v", i, err)
	}
	if status != http.StatusOK && status != http.StatusUnauthorized {
		t.Fatalf("node%d: %d %s", i, status, body)
	}
	return status
}

// TestRollingRestartRotatesTheJWTSecrets follows the documented rotation
// of the user token secret without downtime: every node restarted in turn
// with the old and the new secret, the application switched to signing
// with the new one, every node restarted again with the new secret alone.
// A user's heartbeats, sent all along to whichever node answers, are never
// refused; at the end a token of the new secret is accepted on every node
// and one of the old secret refused, and the heartbeating user is still
// present.
func TestRollingRestartRotatesTheJWTSecrets(t *testing.T) {
	const oldSecret, newSecret = "rotation-old-secret", "rotation-new-secret"
	var mu sync.Mutex
	secrets := []string{oldSecret}
	c := startCluster(t, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		mu.Lock()
		defer mu.Unlock()
		cfg.JWTSecrets = slices.Clone(secrets)
	}))
	putDocument(t, c, 0, "rot")
	const channel = "/rot/room"
	oldToken, newToken := signToken(t, oldSecret, "42"), signToken(t, newSecret, "42")
	var probeOld, probeNew []string
	for i := range probeUsers {
		probeOld = append(probeOld, signToken(t, oldSecret, fmt.Sprint(100+i)))
		probeNew = append(probeNew, signToken(t, newSecret, fmt.Sprint(100+i)))
	}
	p := startProber(c, channel, probeOld)
	rolling := func(set ...string) {
		mu.Lock()
		secrets = set
		mu.Unlock()
		for i := range c.Len() {
			c.Restart(i)
			c.WaitReady()
		}
	}

	rolling(oldSecret, newSecret)
	for i := range c.Len() {
		if tokenStatus(t, c, i, newToken, channel) != http.StatusOK || tokenStatus(t, c, i, oldToken, channel) != http.StatusOK {
			t.Fatalf("node%d does not accept both secrets after the first round", i)
		}
	}
	p.tokens.Store(&probeNew) // the application signs with the new secret
	rolling(newSecret)
	p.finish(t)

	for i := range c.Len() {
		if got := tokenStatus(t, c, i, newToken, channel); got != http.StatusOK {
			t.Errorf("node%d: a token of the new secret: %d", i, got)
		}
		if got := tokenStatus(t, c, i, oldToken, channel); got != http.StatusUnauthorized {
			t.Errorf("node%d: a token of the old secret: %d, want 401", i, got)
		}
	}
	st, err := c.Node(0).Client(newToken).Get(channel)
	if err != nil || st[channel] == nil {
		t.Fatalf("GET %s: %+v, %v", channel, st, err)
	}
	for i := range probeUsers {
		if id := fmt.Sprint(100 + i); !slices.ContainsFunc(st[channel].Users, func(u presence.UserInfo) bool { return u.ID == id }) {
			t.Errorf("user %s left during the rotation: %+v", id, st[channel].Users)
		}
	}
}

// TestRollingRestartRotatesTheClusterKey follows the documented rotation of
// the cluster key without downtime, one node restarted at a time at each
// step: the new key accepted next to the old (--cluster-key old,new), made
// primary (new,old), the old one dropped (new). Users heartbeat all along
// through whichever node answers and are never refused; at the end the
// nodes refuse a transport and a gossip member holding only the old key
// and accept the new one.
func TestRollingRestartRotatesTheClusterKey(t *testing.T) {
	oldKey, newKey := randomKey(), randomKey()
	var mu sync.Mutex
	keys := [][]byte{oldKey}
	c := startCluster(t, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		mu.Lock()
		defer mu.Unlock()
		var enc []string
		for _, k := range keys {
			enc = append(enc, base64.StdEncoding.EncodeToString(k))
		}
		cfg.ClusterKey = strings.Join(enc, ",")
	}))
	putDocument(t, c, 0, "rot")
	const channel = "/rot/room"
	var tokens []string
	for i := range probeUsers {
		tokens = append(tokens, testcluster.Token(fmt.Sprint(100+i)))
	}
	p := startProber(c, channel, tokens)
	for _, step := range [][][]byte{{oldKey, newKey}, {newKey, oldKey}, {newKey}} {
		mu.Lock()
		keys = step
		mu.Unlock()
		for i := range c.Len() {
			c.Restart(i)
			c.WaitReady()
		}
	}
	p.finish(t)

	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	for _, n := range c.Running() {
		_, err := caller(t, oldKey).Call(ctx, n.Server().RPCAddr(), methodPrefixWrite, prefixWrite(t, "pwned"))
		if !refusedBeforeServing(err) {
			t.Errorf("%s: a call with the old key: %v", n.Name, err)
		}
		// An unknown method reaches the handler, which refuses it: the
		// new key is all it takes.
		_, err = caller(t, newKey).Call(ctx, n.Server().RPCAddr(), 999, nil)
		var remote *transport.RemoteError
		if !errors.As(err, &remote) {
			t.Errorf("%s: a call with the new key did not reach the handler: %v", n.Name, err)
		}
	}
	m, err := membership.Start(membership.Config{Name: "intruder", BindAddr: "127.0.0.1:0", Key: oldKey, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	if n, err := m.Join([]string{c.Node(0).GossipAddr()}); err == nil || n > 0 {
		t.Errorf("a member with the old key joined gossip: %d, %v", n, err)
	}
}
