package chaos

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// goneEvery paces WatchGone.
const goneEvery = 20 * time.Millisecond

// WatchGone polls, until timeout, the member views of the nodes named
// watchers until none of them lists node as alive any more (memberlist
// declared it dead, so their rings no longer name it): the failure
// detection of a fault begun at since. The function it returns waits for
// that and answers how long after since the last watcher saw it.
func WatchGone(c Cluster, node string, watchers []string, since time.Time, timeout time.Duration) func() (time.Duration, error) {
	type result struct {
		took time.Duration
		err  error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		pending := map[string]bool{}
		for _, w := range watchers {
			pending[w] = true
		}
		var last error
		for {
			for w := range pending {
				gone, err := seesGone(ctx, c.Admin(w), node)
				if err != nil {
					last = err
				}
				if gone {
					delete(pending, w)
				}
			}
			if len(pending) == 0 {
				done <- result{took: time.Since(since)}
				return
			}
			select {
			case <-ctx.Done():
				done <- result{err: fmt.Errorf("after %v, %d nodes still see %s alive (%v)", timeout, len(pending), node, last)}
				return
			case <-time.After(goneEvery):
			}
		}
	}()
	return func() (time.Duration, error) {
		r := <-done
		return r.took, r.err
	}
}

// seesGone reports whether a's node no longer lists node as alive.
func seesGone(ctx context.Context, a Admin, node string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	v, err := a.Cluster(ctx)
	if err != nil {
		return false, err
	}
	for _, m := range v.Members {
		if m.Name == node && m.State == "alive" {
			return false, nil
		}
	}
	return true, nil
}

// ReportRounds logs, for every round of a scenario and for all of them,
// what the clients' requests met: the nodes that were up (status counts,
// latency) and the node while it was out, and the streams nodes ended. It
// prints the total as one "failover:" line. With strict, every request a
// node that was up answered must have a 2xx answer, every request to it
// must have been answered, and no such node may have ended a stream: an
// ownership change is a pause, not an error (CONTRACT.md section 6).
// Latency is reported, never asserted.
func ReportRounds(t testing.TB, x *Exchanges, scenario string, rounds []Round, end time.Time, strict bool) RoundReport {
	t.Helper()
	for _, rep := range x.Report(rounds, end) {
		t.Log(rep.String())
		for _, ex := range append(rep.Live.Examples, rep.StreamEndExamples...) {
			t.Logf("  live: %s", ex)
		}
	}
	total := x.Total(rounds, end)
	fmt.Printf("failover (%s), %d rounds, %s\n", scenario, len(rounds), total)
	if strict && (total.Live.Failed() > 0 || total.LiveStreamEnds > 0) {
		t.Errorf("%s: nodes that were up answered %d requests without a 2xx (%d not at all) and ended %d streams, want none:\n  %s",
			scenario, total.Live.Failed(), total.Live.Unanswered, total.LiveStreamEnds,
			strings.Join(append(total.Live.Examples, total.StreamEndExamples...), "\n  "))
	}
	return total
}
