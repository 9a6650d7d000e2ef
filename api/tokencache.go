package api

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/tokenbucket"
)

// Token cache bounds. Verifying an HS256 token and decoding its claims costs
// more than the rest of a heartbeat, and a browser sends the same token for
// hours, so verified tokens are remembered (Config.TokenCacheSize of them,
// about 560 bytes each for a 250-byte token).
const (
	tokenCacheShards = 16
	// tokenCacheSweepEvery is how often a full shard looks for expired
	// entries before evicting live ones.
	tokenCacheSweepEvery = time.Minute
	// tokenEvictProbes bounds the entries a full shard looks at for one
	// not used since it was last looked at (second chance).
	tokenEvictProbes = 8
)

// tokenCache remembers tokens that verified successfully, with the identity
// they carry and their validity window. Only successful verifications are
// stored, and a hit is re-checked against exp and nbf at the time of use,
// so a cached token is never accepted outside the window its claims allow.
// Every hit for a token returns the same *presence.User, which callers must
// treat as immutable (channels compare it by pointer).
type tokenCache struct {
	seed     maphash.Seed
	perShard int
	shards   [tokenCacheShards]tokenShard
}

type tokenShard struct {
	mu        sync.RWMutex
	entries   map[string]*cachedToken
	lastSweep time.Time
	_         [16]byte // keep neighbouring shards' locks off one cache line
}

// cachedToken is a verified token and the identity it carries. The token
// (the cache's key) and the identity's strings share one allocation: a
// cache of 100,000 tokens held ten small objects per token, three quarters
// of a busy node's live objects, and every garbage collection marks each
// of them.
type cachedToken struct {
	user      presence.User
	token     string
	expiresAt time.Time // exp, in UTC: valid strictly before it; zero when absent
	notBefore time.Time // nbf, in UTC: valid from it on; zero when absent
	// generation is the key generation it was verified under: a remote
	// key set that withdrew a key since makes the entry a miss.
	generation uint64
	// used is set by a hit and cleared when eviction passes the entry
	// over, so a full shard evicts a token not used lately first.
	used atomic.Bool
	// limit is the rate limiter's memo of the user (RateLimiter.Allow):
	// a heartbeat finds its user's bucket through the token it already
	// looked up.
	limit tokenbucket.Memo
}

// newCachedToken returns the entry of token, verified under generation
// with claims c.
func newCachedToken(token string, c *userClaims, generation uint64) *cachedToken {
	parts := append([]string{token, c.Subject, c.Username, c.Name, c.AvatarTemplate}, c.Groups...)
	rest := strings.Join(parts, "")
	next := func(n int) string {
		v := rest[:n]
		rest = rest[n:]
		return v
	}
	e := &cachedToken{token: next(len(token)), generation: generation}
	e.user = presence.User{
		ID:             next(len(c.Subject)),
		Username:       next(len(c.Username)),
		Name:           next(len(c.Name)),
		AvatarTemplate: next(len(c.AvatarTemplate)),
	}
	if len(c.Groups) > 0 {
		e.user.Groups = make([]string, len(c.Groups))
		for i, g := range c.Groups {
			e.user.Groups[i] = next(len(g))
		}
	}
	if c.ExpiresAt != nil {
		e.expiresAt = c.ExpiresAt.UTC() // UTC holds no *Location to mark
	}
	if c.NotBefore != nil {
		e.notBefore = c.NotBefore.UTC()
	}
	return e
}

func newTokenCache(capacity int) *tokenCache {
	c := &tokenCache{seed: maphash.MakeSeed(), perShard: max(1, capacity/tokenCacheShards)}
	for i := range c.shards {
		c.shards[i].entries = make(map[string]*cachedToken)
	}
	return c
}

// shard picks a token's shard from its last bytes: the end of a signed
// token is its signature, uniformly distributed, and hashing the whole
// token a second time (the map hashes it too) would cost more than the
// lookup. A string shorter than eight bytes is hashed.
func (c *tokenCache) shard(token string) *tokenShard {
	if len(token) < 8 {
		return &c.shards[maphash.String(c.seed, token)%tokenCacheShards]
	}
	tail := token[len(token)-8:]
	var h uint64
	for i := range len(tail) {
		h = h*31 + uint64(tail[i])
	}
	return &c.shards[h%tokenCacheShards]
}

// get returns the entry of token if it was verified before, under the
// key generation given, and is valid at now. An expired entry, or one of
// an earlier generation, is dropped.
func (c *tokenCache) get(token string, now time.Time, generation uint64) (*cachedToken, bool) {
	sh := c.shard(token)
	sh.mu.RLock()
	e := sh.entries[token]
	sh.mu.RUnlock()
	if e == nil {
		return nil, false
	}
	if e.generation != generation || !e.expiresAt.IsZero() && !now.Before(e.expiresAt) {
		sh.mu.Lock()
		if sh.entries[token] == e {
			delete(sh.entries, token)
		}
		sh.mu.Unlock()
		return nil, false
	}
	if !e.notBefore.IsZero() && now.Before(e.notBefore) {
		return nil, false // cannot happen for a token verified earlier, but never trust it early
	}
	if !e.used.Load() { // a store only when it changes: hot entries stay shared
		e.used.Store(true)
	}
	return e, true
}

// put remembers a token that verified successfully. A full shard first
// drops its expired entries if it has not looked for them lately (a scan
// per insertion would make a churning cache quadratic), then evicts an
// entry not used since eviction last passed it over, looking at a few
// entries from a random place: tokens in use stay, one-off tokens go.
func (c *tokenCache) put(token string, e *cachedToken, now time.Time) {
	sh := c.shard(token)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.entries) >= c.perShard && now.Sub(sh.lastSweep) >= tokenCacheSweepEvery {
		sh.lastSweep = now
		for k, old := range sh.entries {
			if !old.expiresAt.IsZero() && !now.Before(old.expiresAt) {
				delete(sh.entries, k)
			}
		}
	}
	for len(sh.entries) >= c.perShard {
		sh.evictOne()
	}
	sh.entries[token] = e
}

// evictOne drops the first of up to tokenEvictProbes entries that was not
// used since it was last passed over, or the last one looked at.
func (sh *tokenShard) evictOne() {
	probes := 0
	for k, old := range sh.entries { // map order: a random place
		probes++
		if probes < tokenEvictProbes && old.used.Swap(false) {
			continue
		}
		delete(sh.entries, k)
		return
	}
}

// len returns the number of cached tokens.
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
