package router

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// benchDrainEvery is how many heartbeats a benchmark goroutine sends between
// waits for its channel's mailbox.
const benchDrainEvery = 128

// benchHeartbeats measures Router.Update heartbeats (clients already
// present, so no message is published) entering at node entry for 64
// channels owned by node owner, from many goroutines.
func benchHeartbeats(b *testing.B, forwarded bool) {
	c := newTestCluster(b, 2, nil)
	owner, entry := c.nodes[0], c.nodes[0]
	if forwarded {
		entry = c.nodes[1]
	}
	var chs []string
	for i := 0; len(chs) < 64; i++ {
		ch := fmt.Sprintf("/pub/bench%d", i)
		if o, _ := owner.r.Owner(ch); o == owner.name {
			chs = append(chs, ch)
		}
	}
	ctx := context.Background()
	for i, ch := range chs {
		if _, err := entry.r.Update(ctx, user(fmt.Sprint(i)), "tab", []string{ch}, nil); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	// Many requests in flight, as behind an HTTP server: a forwarded call
	// waits for the network, and the transport batches the waiting calls.
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1))
		ch, u := chs[i%len(chs)], user(fmt.Sprint(i%len(chs)))
		present := []string{ch}
		for n := 1; pb.Next(); n++ {
			if _, err := entry.r.Update(ctx, u, "tab", present, nil); err != nil {
				b.Error(err)
				return
			}
			// A heartbeat is a Tell: wait now and then for the channel to
			// catch up, so the mailbox never overflows (in both variants).
			if n%benchDrainEvery == 0 {
				if _, err := owner.engine.State(ctx, nil, ch); err != nil {
					b.Error(err)
					return
				}
			}
		}
	})
}

// BenchmarkHeartbeatLocal is a heartbeat handled by the channel's owner.
func BenchmarkHeartbeatLocal(b *testing.B) { benchHeartbeats(b, false) }

// BenchmarkHeartbeatForwarded is the same heartbeat entering at another
// node and forwarded over a real loopback transport.
func BenchmarkHeartbeatForwarded(b *testing.B) { benchHeartbeats(b, true) }
