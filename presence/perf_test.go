package presence

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
)

// warmPopulation is nChannels channels with the same nUsers users present
// (one client each, its id shared by the user's channels as when a page
// enters them in one call): the shape of targets 1 and 5.
type warmPopulation struct {
	names   []string
	users   []*User
	clients []string
}

func newWarmPopulation(nChannels, nUsers int) *warmPopulation {
	p := &warmPopulation{names: make([]string, nChannels), users: make([]*User, nUsers), clients: make([]string, nUsers)}
	for i := range p.names {
		p.names[i] = fmt.Sprintf("/bench/%d", i)
	}
	for i := range p.users {
		p.users[i] = &User{ID: fmt.Sprint(i + 1), Username: fmt.Sprint("user", i+1)}
		p.clients[i] = fmt.Sprintf("tab-%d-8c1f4e2a", i+1)
	}
	return p
}

// fill enters every user into every channel, draining as it goes.
func (p *warmPopulation) fill(b *testing.B, e *Engine) {
	b.Helper()
	ctx := context.Background()
	for i, u := range p.users {
		for _, ch := range p.names {
			if _, err := e.Present(ctx, u, p.clients[i], ch); err != nil {
				b.Fatal(err)
			}
		}
		drainAll(b, e, p.names)
	}
}

// drainAll waits until every channel applied what was queued for it.
func drainAll(b *testing.B, e *Engine, names []string) {
	b.Helper()
	for _, ch := range names {
		if _, err := actorAsk(e, ch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHeartbeatSpread100kParallel is target 1: warm heartbeats from
// GOMAXPROCS senders spread over 100,000 channels of 10 users each. The
// timed region ends after every queued heartbeat was applied, so work left
// in mailboxes is not hidden; heartbeats/s = 1e9 / ns/op.
func BenchmarkHeartbeatSpread100kParallel(b *testing.B) {
	const nChannels, nUsers = 100_000, 10
	e := benchEngine(b)
	p := newWarmPopulation(nChannels, nUsers)
	p.fill(b, e)
	var seq atomic.Int64
	ctx := context.Background()
	runtime.GC() // the fill's garbage is not the heartbeats' cost
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// Each sender walks its own stride so senders rarely meet on a channel.
		i := int(seq.Add(1)) * 7919
		for pb.Next() {
			u := (i / nChannels) % nUsers
			if _, err := e.Present(ctx, p.users[u], p.clients[u], p.names[i%nChannels]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	drainAll(b, e, p.names)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
	// On a shared machine wall time depends on the neighbours; CPU time
	// does not: 2 cores sustain twice this many heartbeats per second.
	b.ReportMetric(float64(b.N)/(cpuTime()-cpu0).Seconds(), "heartbeats/cpu-s")
	if got := e.metrics.Clients(); got != nChannels*nUsers {
		b.Fatalf("%d clients present after heartbeats, want %d", got, nChannels*nUsers)
	}
}

// BenchmarkMemoryMillionClients is target 5: the heap that 1,000,000 present
// clients (10 users in each of 100,000 channels) hold, measured after GC.
// Users' token data is shared, as it is when the same users heartbeat.
func BenchmarkMemoryMillionClients(b *testing.B) {
	const nChannels, nUsers = 100_000, 10
	for b.Loop() {
		b.StopTimer()
		before := heapAfterGC()
		e, err := NewEngine(EngineConfig{Configs: configFunc(publicOnly), MailboxSize: 1 << 10})
		if err != nil {
			b.Fatal(err)
		}
		p := newWarmPopulation(nChannels, nUsers)
		b.StartTimer()
		p.fill(b, e)
		b.StopTimer()
		after := heapAfterGC()
		if got := e.metrics.Clients(); got != nChannels*nUsers {
			b.Fatalf("%d clients, want %d", got, nChannels*nUsers)
		}
		heap := float64(after.heap - before.heap)
		b.ReportMetric(heap/(1<<20), "heap-MiB")
		b.ReportMetric(float64(after.stack-before.stack)/(1<<20), "stack-MiB")
		b.ReportMetric(heap/(nChannels*nUsers), "heap-B/client")
		b.Logf("%d clients in %d channels: heap in use %.1f MiB, stacks %.1f MiB, %d goroutines",
			nChannels*nUsers, nChannels, heap/(1<<20), float64(after.stack-before.stack)/(1<<20), runtime.NumGoroutine())
		writeHeapProfile(b)
		runtime.KeepAlive(p)
		if err := e.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// heapProfile names a file for BenchmarkMemoryMillionClients to write a heap
// profile to while the clients are present (go test -args -heapprofile=f).
var heapProfile = flag.String("heapprofile", "", "write a heap profile of the filled engine to this file")

func writeHeapProfile(b *testing.B) {
	if *heapProfile == "" {
		return
	}
	f, err := os.Create(*heapProfile)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

// cpuTime returns the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type memFigures struct{ heap, stack uint64 }

func heapAfterGC() memFigures {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return memFigures{heap: ms.HeapInuse, stack: ms.StackInuse}
}

// BenchmarkMassExpiry is target 6: 100,000 clients (10,000 channels of 10
// users) expire in the same one-second tick while other clients keep
// heartbeating. It reports how long the expiry took until every client was
// gone and every leave message published, and the latency of the heartbeats
// sent meanwhile (the Service call an HTTP request makes).
func BenchmarkMassExpiry(b *testing.B) {
	const nChannels, nUsers = 10_000, 10
	for b.Loop() {
		b.StopTimer()
		clk := clock.NewFake(wheelStart)
		rec := &countingPublisher{}
		metrics := NewMetrics(nil)
		e, err := NewEngine(EngineConfig{Clock: clk, Configs: configFunc(publicOnly), Metrics: metrics, Publisher: rec, MailboxSize: 1 << 10})
		if err != nil {
			b.Fatal(err)
		}
		doomed := newWarmPopulation(nChannels, nUsers)
		doomed.fill(b, e)
		// Live clients: other channels, heartbeated through the expiry.
		live := newWarmPopulation(1000, 10)
		for i := range live.names {
			live.names[i] = fmt.Sprintf("/live/%d", i)
		}
		live.fill(b, e)
		publishedBefore := rec.n.Load()

		clk.Advance((DefaultTimeoutSeconds - 1) * time.Second)
		for i, u := range live.users { // keep the live ones alive past the tick
			for _, ch := range live.names {
				e.Present(context.Background(), u, live.clients[i], ch)
			}
		}
		drainAll(b, e, live.names)

		stop := heartbeatLoad(e, live)
		b.StartTimer()
		start := time.Now()
		clk.Advance(2 * time.Second) // one tick: every doomed client is due
		for metrics.Clients() != int64(len(live.names)*len(live.users)) || rec.n.Load()-publishedBefore < nChannels {
			runtime.Gosched()
		}
		took := time.Since(start)
		b.StopTimer()
		hb, reads := stop()
		b.ReportMetric(float64(took.Milliseconds()), "expiry-ms")
		b.ReportMetric(percentile(hb, 0.99).Seconds()*1000, "heartbeat-p99-ms")
		b.ReportMetric(percentile(reads, 0.99).Seconds()*1000, "read-p99-ms")
		b.Logf("100,000 clients expired and %d leave messages published in %v; meanwhile %d heartbeats: p50 %v p99 %v max %v; %d reads: p50 %v p99 %v max %v",
			nChannels, took, len(hb), percentile(hb, 0.5), percentile(hb, 0.99), percentile(hb, 1),
			len(reads), percentile(reads, 0.5), percentile(reads, 0.99), percentile(reads, 1))
		if err := e.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// heartbeatLoad heartbeats the live population at a steady pace until stop,
// which returns the latency of each heartbeat (the Service call an HTTP
// request makes) and of a State read after every 16th heartbeat (a round
// trip through the channel's mailbox, so queueing behind the expiry shows).
func heartbeatLoad(e *Engine, p *warmPopulation) (stop func() (heartbeats, reads []time.Duration)) {
	var wg sync.WaitGroup
	quit := make(chan struct{})
	var hb, reads []time.Duration
	wg.Go(func() {
		ctx := context.Background()
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			default:
			}
			k := (i / len(p.names)) % len(p.users)
			u, ch := p.users[k], p.names[i%len(p.names)]
			t0 := time.Now()
			e.Present(ctx, u, p.clients[k], ch)
			hb = append(hb, time.Since(t0))
			if i%16 == 15 {
				t0 = time.Now()
				e.State(ctx, u, ch)
				reads = append(reads, time.Since(t0))
				time.Sleep(100 * time.Microsecond) // a steady rate, not a flood
			}
		}
	})
	return func() ([]time.Duration, []time.Duration) {
		close(quit)
		wg.Wait()
		return hb, reads
	}
}

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// countingPublisher counts published messages.
type countingPublisher struct{ n atomic.Int64 }

func (c *countingPublisher) Publish(*Message) { c.n.Add(1) }
