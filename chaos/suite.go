package chaos

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// Timeouts of the suite helpers.
const (
	// prefixWriteTimeout bounds a prefix document's PUT (a Raft commit).
	prefixWriteTimeout = 30 * time.Second
	// prefixWait bounds the wait for one node to serve a stored document.
	prefixWait = 10 * time.Second
	// ownerReadTimeout bounds one node's answers about the sampled channels.
	ownerReadTimeout = 30 * time.Second
)

// Cluster is what the helpers of the fault suites need of a cluster under
// test. The process cluster of chaos/proc and the compose project of
// chaos/container both satisfy it, so both suites configure, wait and
// check through the same code.
type Cluster interface {
	// Serving names the nodes that must answer now, in a stable order;
	// writes go through the first.
	Serving() []string
	// Admin returns the admin client of the named node.
	Admin(node string) Admin
}

// Configure stores the public prefix document of a scenario's channels
// (PublicPrefixDocument) and waits until every serving node serves it; it
// returns the stored document.
func Configure(t testing.TB, c Cluster, prefix string, timeout time.Duration) []byte {
	t.Helper()
	return PutPrefix(t, c, prefix, PublicPrefixDocument(prefix, timeout))
}

// PutPrefix stores doc through the first serving node and waits until
// every serving node serves it; it returns the stored document.
func PutPrefix(t testing.TB, c Cluster, prefix string, doc []byte) []byte {
	t.Helper()
	stored, err := StorePrefix(context.Background(), c, prefix, doc)
	if err != nil {
		t.Fatal(err)
	}
	return stored
}

// WaitPrefix waits until every serving node answers doc for prefix.
func WaitPrefix(t testing.TB, c Cluster, prefix string, doc []byte) {
	t.Helper()
	if err := AwaitPrefix(context.Background(), c, prefix, doc); err != nil {
		t.Fatal(err)
	}
}

// StorePrefix is PutPrefix for a caller outside a test's goroutine: it
// returns what failed instead of failing a test, and gives up when ctx
// ends.
func StorePrefix(ctx context.Context, c Cluster, prefix string, doc []byte) ([]byte, error) {
	serving := c.Serving()
	if len(serving) == 0 {
		return nil, fmt.Errorf("PUT prefix %s: no node serving", prefix)
	}
	put, cancel := context.WithTimeout(ctx, prefixWriteTimeout)
	defer cancel()
	stored, err := c.Admin(serving[0]).PutPrefix(put, prefix, doc)
	if err != nil {
		return nil, err
	}
	return stored, AwaitPrefix(ctx, c, prefix, stored)
}

// AwaitPrefix is WaitPrefix returning what failed; it gives up when ctx
// ends.
func AwaitPrefix(ctx context.Context, c Cluster, prefix string, doc []byte) error {
	for _, n := range c.Serving() {
		wait := prefixWait
		if deadline, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(deadline))
		}
		var last error
		err := testkit.Poll(wait, func() error {
			err := servesPrefix(ctx, c.Admin(n), n, prefix, doc)
			if err != nil && ctx.Err() != nil && last != nil {
				return last // the end of ctx cut this call short: the one before says more
			}
			last = err
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// servesPrefix returns nil when node (reached through a) answers doc for
// prefix.
func servesPrefix(ctx context.Context, a Admin, node, prefix string, doc []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	status, body, err := a.GetPrefix(ctx, prefix)
	switch {
	case err != nil:
		return err
	case status != http.StatusOK || !SameJSON(body, doc):
		return fmt.Errorf("%s: GET prefix %s: %d %s, want %s", node, prefix, status, body, doc)
	}
	return nil
}

// WaitOwning waits until every serving node's /admin/owner names owner for
// at least one of channels (a sample large enough that every node owns
// some): a node that came back owns channels again in the view of every
// node, not only in its own, which it holds as soon as it starts.
func WaitOwning(t testing.TB, c Cluster, owner string, channels []string, timeout time.Duration) {
	t.Helper()
	err := testkit.Poll(timeout, func() error {
		for _, n := range c.Serving() {
			if err := seesOwning(c.Admin(n), n, owner, channels); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// WaitHandBack waits until a serving node other than owner names owner
// for one of channels, and returns when it saw that: owner is back and the
// others have begun handing its channels to it. The chaos rounds time
// their kills from then (the hand-back window).
func WaitHandBack(t testing.TB, c Cluster, owner string, channels []string, timeout time.Duration) time.Time {
	t.Helper()
	var at time.Time
	err := testkit.Poll(timeout, func() error {
		err := fmt.Errorf("no node but %s serves", owner)
		for _, n := range c.Serving() {
			if n == owner {
				continue
			}
			if err = seesOwning(c.Admin(n), n, owner, channels); err == nil {
				at = time.Now()
				return nil
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// seesOwning returns nil once node (reached through a) names owner for one
// of channels.
func seesOwning(a Admin, node, owner string, channels []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ownerReadTimeout)
	defer cancel()
	for _, ch := range channels {
		v, err := a.Owner(ctx, ch)
		if err != nil {
			return err
		}
		if v.Owner == owner {
			return nil
		}
	}
	return fmt.Errorf("%s sees %s owning none of the sampled channels", node, owner)
}

// NewTestPool returns a pool over urls with a browser client's timings
// (PoolConfig's defaults), failing t when it cannot.
func NewTestPool(t testing.TB, urls []string) *Pool {
	t.Helper()
	p, err := NewPool(PoolConfig{URLs: urls})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// NewRecordedPool is NewTestPool recording every attempt in x.
func NewRecordedPool(t testing.TB, urls []string, x *Exchanges) *Pool {
	t.Helper()
	p, err := NewPool(PoolConfig{URLs: urls, Exchanges: x})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// NewTestTokens returns a token minter for the cluster's jwt secret,
// failing t when it cannot.
func NewTestTokens(t testing.TB, secret string) *Tokens {
	t.Helper()
	tokens, err := NewTokens(secret)
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// ReadyWatch records when a restarted node first answers ready: the end
// of its outage in a round (a node starting answers 503, as it should).
type ReadyWatch struct {
	stop context.CancelFunc
	done chan struct{}
	at   time.Time // written before done closes
}

// WatchReady polls a's readiness until it answers ready or End is called.
func WatchReady(a Admin) *ReadyWatch {
	ctx, stop := context.WithCancel(context.Background())
	w := &ReadyWatch{stop: stop, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			call, cancel := context.WithTimeout(ctx, time.Second)
			err := a.Ready(call)
			cancel()
			if err == nil {
				w.at = time.Now()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return w
}

// End stops the watch and returns when the node became ready, or limit if
// it was not ready before limit.
func (w *ReadyWatch) End(limit time.Time) time.Time {
	w.stop()
	<-w.done
	if w.at.IsZero() || w.at.After(limit) {
		return limit
	}
	return w.at
}
