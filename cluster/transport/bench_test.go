package transport

import (
	"context"
	"fmt"
	"testing"
)

// benchPair starts a server echoing bodies and a client.
func benchPair(b *testing.B, conns int) (*Transport, string) {
	srv := startTransport(b, Config{Key: make([]byte, 32), Handler: echo})
	cli := startTransport(b, Config{Key: make([]byte, 32), ConnsPerPeer: conns})
	if _, err := cli.Call(context.Background(), srv.Addr(), 1, nil); err != nil {
		b.Fatal(err)
	}
	return cli, srv.Addr()
}

// BenchmarkTransportCall measures one caller's round trip over loopback.
func BenchmarkTransportCall(b *testing.B) {
	cli, addr := benchPair(b, 1)
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
			cli, addr := benchPair(b, conns)
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
