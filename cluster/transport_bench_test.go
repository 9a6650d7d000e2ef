package cluster

import (
	"context"
	"fmt"
	"testing"
)

// transportBenchPair starts a server echoing bodies and a client.
func transportBenchPair(b *testing.B, conns int) (*Transport, string) {
	srv := startTestTransport(b, TransportConfig{Key: make([]byte, 32), Handler: transportEcho})
	cli := startTestTransport(b, TransportConfig{Key: make([]byte, 32), ConnsPerPeer: conns})
	if _, err := cli.Call(context.Background(), srv.Addr(), 1, nil); err != nil {
		b.Fatal(err)
	}
	return cli, srv.Addr()
}

// BenchmarkTransportCall measures one caller's round trip over loopback.
func BenchmarkTransportCall(b *testing.B) {
	cli, addr := transportBenchPair(b, 1)
	body := []byte("heartbeat:/chat/42:client-7")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cli.Call(ctx, addr, 1, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTransportCallParallel measures throughput with many concurrent
// callers sharing the peer's connections (-cpu and SetParallelism vary load).
func BenchmarkTransportCallParallel(b *testing.B) {
	for _, conns := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			cli, addr := transportBenchPair(b, conns)
			body := []byte("heartbeat:/chat/42:client-7")
			ctx := context.Background()
			b.SetParallelism(16)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := cli.Call(ctx, addr, 1, body); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
