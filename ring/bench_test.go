package ring

import (
	"fmt"
	"testing"
)

// sinkString keeps benchmark results alive so the compiler cannot drop the
// lookups.
var sinkString string

func BenchmarkOwner(b *testing.B) {
	keys := channelKeys(1024)
	for _, size := range []int{3, 10, 100} {
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			r := New(1, nodeNames(size))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				sinkString = r.Owner(keys[i&1023])
				i++
			}
		})
	}
}

func BenchmarkOwnerAndReplica(b *testing.B) {
	keys := channelKeys(1024)
	for _, size := range []int{3, 10, 100} {
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			r := New(1, nodeNames(size))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_, sinkString = r.OwnerAndReplica(keys[i&1023])
				i++
			}
		})
	}
}

func BenchmarkReplicas(b *testing.B) {
	keys := channelKeys(1024)
	r := New(1, nodeNames(10))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		sinkString = r.Replicas(keys[i&1023], 2)[1]
		i++
	}
}

func BenchmarkNew(b *testing.B) {
	for _, size := range []int{10, 100} {
		members := nodeNames(size)
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				New(1, members)
			}
		})
	}
}

// BenchmarkHash isolates key hashing, which every lookup pays once.
func BenchmarkHash(b *testing.B) {
	for _, n := range []int{12, 32, 256} {
		key := "/" + string(make([]byte, n-1))
		b.Run(fmt.Sprintf("bytes=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			var h uint64
			for b.Loop() {
				h ^= hashString(key)
			}
			sinkString = fmt.Sprint(h)
		})
	}
}
