package wire

import (
	"hash/maphash"
	"sync"

	"github.com/presencehq/presence/presence"
)

// Bounds of the intern table.
const (
	internShards = 16
	// internCapacity bounds the users, and separately the strings, kept
	// (a user about 300 bytes with its key, a string about 100).
	internCapacity = 32_768
)

// Intern decodes batches of forwarded updates, sharing the immutable
// values they carry again and again between the batches: users (compared
// by pointer in a channel's client records) and short strings (client ids,
// channel names). A value is keyed by its exact encoding, so it equals what
// decoding would give. A full shard forgets an arbitrary entry, so a
// working set beyond the capacity only loses sharing. It is safe for
// concurrent use.
type Intern struct {
	seed   maphash.Seed
	shards [internShards]internShard
}

type internShard struct {
	mu    sync.Mutex
	users map[string]*presence.User
	strs  map[string]string
}

// NewIntern returns an empty intern table.
func NewIntern() *Intern {
	t := &Intern{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].users = make(map[string]*presence.User)
		t.shards[i].strs = make(map[string]string)
	}
	return t
}

// DecodeUpdateBatch decodes MethodUpdate's request. The batch's channel
// lists share one array, and users, client ids and channel names seen
// before are shared rather than decoded again: fewer allocations per
// forwarded update, and the channel recognises its client's user by
// pointer.
func (t *Intern) DecodeUpdateBatch(b []byte) ([]UpdateRequest, error) {
	d := decoder{b: b}
	reqs := make([]UpdateRequest, d.count())
	var names []string
	for i := range reqs {
		reqs[i], names = t.updateRequest(&d, names)
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return reqs, nil
}

// updateRequest decodes what d.updateRequest decodes, through the table,
// appending its channel lists to names.
func (t *Intern) updateRequest(d *decoder, names []string) (UpdateRequest, []string) {
	q := UpdateRequest{Header: d.header(), User: t.user(d), ClientID: t.string(d)}
	names, q.Present = t.strings(d, names)
	names, q.Leave = t.strings(d, names)
	return q, names
}

func (t *Intern) shard(key []byte) *internShard {
	return &t.shards[maphash.Bytes(t.seed, key)%internShards]
}

// user decodes a user as d.user does.
func (t *Intern) user(d *decoder) *presence.User {
	raw := d.b
	sub := decoder{b: raw}
	if !sub.skipUser() {
		return d.user() // fails the same way
	}
	key := raw[:len(raw)-len(sub.b)]
	sh := t.shard(key)
	sh.mu.Lock()
	u, ok := sh.users[string(key)]
	sh.mu.Unlock()
	if !ok {
		u = d.user()
		if d.err != nil {
			return u
		}
		sh.mu.Lock()
		evictOne(sh.users)
		sh.users[string(key)] = u
		sh.mu.Unlock()
		return u
	}
	d.b = d.b[len(key):]
	return u
}

// string decodes a string as d.string does.
func (t *Intern) string(d *decoder) string {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	raw := d.b[:n]
	d.b = d.b[n:]
	if n == 0 {
		return ""
	}
	sh := t.shard(raw)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s, ok := sh.strs[string(raw)]; ok {
		return s
	}
	evictOne(sh.strs)
	s := string(raw)
	sh.strs[s] = s
	return s
}

// strings decodes a list as d.strings does, appended to names; it returns
// names and the list (nil when empty), which shares names' array.
func (t *Intern) strings(d *decoder, names []string) ([]string, []string) {
	n := d.count()
	if n == 0 {
		return names, nil
	}
	start := len(names)
	for range n {
		names = append(names, t.string(d))
	}
	return names, names[start:len(names):len(names)]
}

// evictOne makes room in a full shard map for one more entry.
func evictOne[V any](m map[string]V) {
	if len(m) < internCapacity/internShards {
		return
	}
	for k := range m {
		delete(m, k)
		return
	}
}
