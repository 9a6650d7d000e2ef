package actor

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
)

type benchMsg struct {
	n     int
	reply chan<- int
}

type benchActor struct{ sum int }

func (b *benchActor) Receive(m benchMsg) {
	b.sum += m.n
	if m.reply != nil {
		m.reply <- b.sum
	}
}

func newBenchSystem(b *testing.B) *System[string, benchMsg] {
	s := NewSystem(Options{MailboxSize: 4096}, func(string) Behavior[benchMsg] { return &benchActor{} })
	b.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "/chat/channel-" + strconv.Itoa(i)
	}
	return keys
}

// tellRetry sends, yielding while the mailbox is full; it returns the retries.
func tellRetry(b *testing.B, s *System[string, benchMsg], key string) int64 {
	var retries int64
	for {
		err := s.Tell(key, benchMsg{n: 1})
		if err == nil {
			return retries
		}
		if !errors.Is(err, ErrOverloaded) {
			b.Fatal(err)
		}
		retries++
		runtime.Gosched()
	}
}

// BenchmarkTell: one sender, one existing actor.
func BenchmarkTell(b *testing.B) {
	s := newBenchSystem(b)
	s.Tell("k", benchMsg{})
	var retries int64
	b.ReportAllocs()
	for b.Loop() {
		retries += tellRetry(b, s, "k")
	}
	b.ReportMetric(float64(retries)/float64(b.N), "overloads/op")
}

// BenchmarkTellParallel: GOMAXPROCS senders over 10,000 existing actors.
func BenchmarkTellParallel(b *testing.B) {
	s := newBenchSystem(b)
	keys := benchKeys(10_000)
	for _, k := range keys {
		s.Tell(k, benchMsg{})
	}
	var retries, seed atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(7919))
		var r int64
		for pb.Next() {
			r += tellRetry(b, s, keys[i%len(keys)])
			i++
		}
		retries.Add(r)
	})
	b.ReportMetric(float64(retries.Load())/float64(b.N), "overloads/op")
}

// BenchmarkTellParallelOneActor: every sender hits the same actor.
func BenchmarkTellParallelOneActor(b *testing.B) {
	s := newBenchSystem(b)
	s.Tell("k", benchMsg{})
	var retries atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var r int64
		for pb.Next() {
			r += tellRetry(b, s, "k")
		}
		retries.Add(r)
	})
	b.ReportMetric(float64(retries.Load())/float64(b.N), "overloads/op")
}

// BenchmarkTellSpawn: the first message to a key creates its actor.
func BenchmarkTellSpawn(b *testing.B) {
	s := newBenchSystem(b)
	keys := benchKeys(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := s.Tell(keys[i], benchMsg{n: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

func ask(b *testing.B, s *System[string, benchMsg], key string) {
	_, err := Ask(context.Background(), s, key, func(r chan<- int) benchMsg { return benchMsg{n: 1, reply: r} })
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAsk: one caller, one actor, a full round trip each.
func BenchmarkAsk(b *testing.B) {
	s := newBenchSystem(b)
	s.Tell("k", benchMsg{})
	b.ReportAllocs()
	for b.Loop() {
		ask(b, s, "k")
	}
}

// BenchmarkAskParallel: GOMAXPROCS callers over 10,000 actors.
func BenchmarkAskParallel(b *testing.B) {
	s := newBenchSystem(b)
	keys := benchKeys(10_000)
	for _, k := range keys {
		s.Tell(k, benchMsg{})
	}
	var seed atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(7919))
		for pb.Next() {
			ask(b, s, keys[i%len(keys)])
			i++
		}
	})
}

// BenchmarkIdleActorMemory reports the heap and stack cost of an idle actor.
func BenchmarkIdleActorMemory(b *testing.B) {
	const n = 100_000
	keys := benchKeys(n)
	for b.Loop() {
		b.StopTimer()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := NewSystem(Options{}, func(string) Behavior[benchMsg] { return &benchActor{} })
		b.StartTimer()
		for _, k := range keys {
			s.Tell(k, benchMsg{n: 1})
		}
		b.StopTimer()
		for _, k := range keys {
			for queued(s, k) > 0 {
				runtime.Gosched()
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse)/n, "bytes/actor")
		s.Shutdown(context.Background())
		b.StartTimer()
	}
}
