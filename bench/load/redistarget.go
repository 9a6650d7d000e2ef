package load

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/bench/discourse"
)

// RedisTarget runs operations against Discourse's Redis algorithm. With a
// batch of 1 every script call is its own round trip (EVALSHA); a larger
// batch sends that many operations in one pipeline.
type RedisTarget struct {
	store *discourse.Store
	pop   *Population
	batch int
}

// NewRedisTarget returns a target over store; batch < 1 means 1.
func NewRedisTarget(store *discourse.Store, pop *Population, batch int) *RedisTarget {
	return &RedisTarget{store: store, pop: pop, batch: max(batch, 1)}
}

// Batch implements Target.
func (t *RedisTarget) Batch() int { return t.batch }

// Do implements Target. One operation with several channels makes one
// script call per channel, as a Redis-backed server would for one update.
func (t *RedisTarget) Do(ctx context.Context, ops []*Op, out []Outcome) {
	now := time.Now()
	if t.batch == 1 {
		for i, op := range ops {
			out[i] = t.single(ctx, op, now)
		}
		return
	}
	var calls []discourse.Op
	for _, op := range ops {
		for _, c := range op.Channels {
			calls = append(calls, discourse.Op{
				Leave:    op.Kind == Leave,
				Channel:  t.pop.ChannelName(c),
				UserID:   t.pop.UserID(op.User),
				ClientID: t.pop.ClientID(op.User, op.Client),
			})
		}
	}
	results := make([]discourse.Result, len(calls))
	// Each command's own error is in results; the aggregate adds nothing.
	_ = t.store.Pipeline(ctx, calls, now, results)
	k := 0
	for i, op := range ops {
		out[i] = Outcome{Code: "ok", OK: true}
		for j := range op.Channels {
			r := results[k]
			k++
			op.Applied[j] = r.Err == nil
			if r.Err != nil {
				out[i] = Outcome{Code: redisErrorClass(r.Err)}
			}
		}
	}
}

func (t *RedisTarget) single(ctx context.Context, op *Op, now time.Time) Outcome {
	out := Outcome{Code: "ok", OK: true}
	user, client := t.pop.UserID(op.User), t.pop.ClientID(op.User, op.Client)
	for j, c := range op.Channels {
		var err error
		if op.Kind == Leave {
			_, err = t.store.Leave(ctx, t.pop.ChannelName(c), user, client)
		} else {
			_, err = t.store.Present(ctx, t.pop.ChannelName(c), user, client, now)
		}
		op.Applied[j] = err == nil
		if err != nil {
			out = Outcome{Code: redisErrorClass(err)}
		}
	}
	return out
}

func redisErrorClass(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "redis: timeout"
	}
	return "redis: " + errorClass(err)
}

// ExpirySweeper runs the expiry script, once per period, on the channels
// whose oldest client is due (Store.ExpireDue), as a Redis-backed presence
// server must, since Redis does not expire sorted-set members by itself.
type ExpirySweeper struct {
	// Calls counts swept channels, Left the users they removed, Errors
	// failed sweeps.
	Calls, Left, Errors atomic.Uint64
	wg                  sync.WaitGroup
	cancel              context.CancelFunc
}

// StartExpirySweeper starts sweeping the store's channels.
func StartExpirySweeper(ctx context.Context, store *discourse.Store, period time.Duration) *ExpirySweeper {
	ctx, cancel := context.WithCancel(ctx)
	s := &ExpirySweeper{cancel: cancel}
	s.wg.Go(func() {
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				channels, left, err := store.ExpireDue(ctx, now)
				s.Calls.Add(uint64(channels))
				s.Left.Add(uint64(left))
				if err != nil && ctx.Err() == nil {
					s.Errors.Add(1)
				}
			}
		}
	})
	return s
}

// Stop ends the sweeper and waits for it.
func (s *ExpirySweeper) Stop() {
	s.cancel()
	s.wg.Wait()
}
