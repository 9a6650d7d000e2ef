package ratelimit

import (
	"hash/maphash"
	"sync"
)

// maxShards is how many shards a table has (fewer when it may hold fewer
// users than that): enough that a sweep holds each for a short while.
const maxShards = 64

// table maps users to entries in shards, each under its own lock and
// holding at most its share of the table's bound: calls of different
// users rarely wait for each other, and a sweep holds one shard at a time.
// Lookups share a shard's lock (find); only adding and dropping entries
// take it alone.
type table[V any] struct {
	seed   maphash.Seed
	shards []shard[V]
}

// shard is one lock's part of a table.
type shard[V any] struct {
	mu  sync.RWMutex
	m   map[string]*V
	max int
}

// init makes room for at most maxUsers entries.
func (t *table[V]) init(maxUsers int) {
	n := min(maxShards, maxUsers)
	t.seed = maphash.MakeSeed()
	t.shards = make([]shard[V], n)
	for i := range t.shards {
		t.shards[i] = shard[V]{m: make(map[string]*V), max: maxUsers / n}
	}
}

// shard returns the shard of user.
func (t *table[V]) shard(user string) *shard[V] {
	return &t.shards[maphash.String(t.seed, user)%uint64(len(t.shards))]
}

// find returns user's entry, or nil, under the shard's shared lock.
func (sh *shard[V]) find(user string) *V {
	sh.mu.RLock()
	v := sh.m[user]
	sh.mu.RUnlock()
	return v
}

// get returns user's entry, or adds a new one; when the shard is full an
// arbitrary entry is evicted first (evicted, if not nil, is told). The
// caller holds sh.mu.
func (sh *shard[V]) get(user string, fresh func() *V, evicted func(*V)) *V {
	if v, ok := sh.m[user]; ok {
		return v
	}
	if len(sh.m) >= sh.max {
		for u, v := range sh.m {
			delete(sh.m, u)
			if evicted != nil {
				evicted(v)
			}
			break
		}
	}
	v := fresh()
	sh.m[user] = v
	return v
}

// each calls fn on every entry, one shard at a time under its lock; fn
// returns false to drop the entry.
func (t *table[V]) each(fn func(user string, v *V) (keep bool)) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for user, v := range sh.m {
			if !fn(user, v) {
				delete(sh.m, user)
			}
		}
		sh.mu.Unlock()
	}
}

// len counts the entries.
func (t *table[V]) len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}
