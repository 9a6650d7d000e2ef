package redispresence

import (
	"hash/maphash"
	"sync"
	"time"
)

// tokenCacheShards spreads the cache's locks, as the node's cache does.
const tokenCacheShards = 16

// tokenCache remembers verified tokens by their text, with the user id they
// carry and their validity window, the way the node's API does: only
// successful verifications are stored, a hit is checked against exp and nbf
// at the time of use, and a full shard evicts an arbitrary entry.
type tokenCache struct {
	seed     maphash.Seed
	perShard int
	shards   [tokenCacheShards]tokenShard
}

type tokenShard struct {
	mu      sync.RWMutex
	entries map[string]cachedToken
	_       [32]byte // keep neighbouring shards' locks off one cache line
}

// cachedToken is a verified token; zero times mean the claim was absent.
type cachedToken struct {
	userID    string
	expiresAt time.Time // exp: valid strictly before it
	notBefore time.Time // nbf: valid from it on
}

func (e cachedToken) validAt(now time.Time) bool {
	return (e.expiresAt.IsZero() || now.Before(e.expiresAt)) && (e.notBefore.IsZero() || !now.Before(e.notBefore))
}

func newTokenCache(capacity int) *tokenCache {
	c := &tokenCache{seed: maphash.MakeSeed(), perShard: max(1, capacity/tokenCacheShards)}
	for i := range c.shards {
		c.shards[i].entries = make(map[string]cachedToken)
	}
	return c
}

func (c *tokenCache) shard(token string) *tokenShard {
	return &c.shards[maphash.String(c.seed, token)%tokenCacheShards]
}

// get returns the user id of a token verified before and valid at now. An
// entry past its exp is dropped.
func (c *tokenCache) get(token string, now time.Time) (string, bool) {
	sh := c.shard(token)
	sh.mu.RLock()
	e, ok := sh.entries[token]
	sh.mu.RUnlock()
	if !ok {
		return "", false
	}
	if !e.validAt(now) {
		if !e.expiresAt.IsZero() && !now.Before(e.expiresAt) {
			sh.mu.Lock()
			delete(sh.entries, token)
			sh.mu.Unlock()
		}
		return "", false
	}
	return e.userID, true
}

// put remembers a verified token, evicting an arbitrary entry of a full
// shard.
func (c *tokenCache) put(token string, e cachedToken) {
	sh := c.shard(token)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for k := range sh.entries {
		if len(sh.entries) < c.perShard {
			break
		}
		delete(sh.entries, k)
	}
	sh.entries[token] = e
}

// len is the number of cached tokens.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.entries)
		sh.mu.RUnlock()
	}
	return n
}
