// Package ring decides which node owns a key (a channel name) and which
// nodes hold its replicas, for a given member set and epoch. It is pure: no
// I/O, goroutines or clocks, so every node that sees the same members
// computes the same answer.
//
// # Method: rendezvous (highest random weight) hashing
//
// Every member gets a score for a key, mix(hash(key) XOR hash(member)), and
// members rank by descending score (ties, which need a 64-bit collision,
// go to the smaller name). The first is the owner, the next ones are the
// replicas. Rendezvous hashing was chosen over virtual nodes on a hash ring
// because, measured on 100,000 channel names (docs/ring-balance.md):
//
//   - Balance: each member's load is binomial, so max/mean is 1.01 for 3, 5
//     and 10 members with no tuning; a ring with 160 virtual nodes per
//     member reaches only about 1.1, and its error shrinks with the square
//     root of the virtual node count.
//   - Movement: both move only the keys that go to a joiner or leave a
//     leaver, but here the moved share is 1/(N+1) (or 1/N) up to sampling
//     noise, whereas a ring moves whatever arc share the member drew.
//   - Failover: removing the owner makes the replica the owner, and a
//     joiner that takes a key leaves the old owner as its replica, which is
//     what the replication and handoff protocol builds on.
//   - Cost: a lookup hashes the key once and mixes one word per member. It
//     is faster than a ring's binary search up to a few dozen members and
//     stays well under a microsecond at 100; New is far cheaper than
//     building and sorting N×160 ring points.
package ring

import "slices"

// Ring is the ownership map for one member set at one epoch. It is
// immutable once built and therefore safe for concurrent use. A nil *Ring
// behaves as a ring without members.
type Ring struct {
	epoch  uint64
	names  []string // distinct, non-empty, sorted ascending
	hashes []uint64 // hashes[i] is hashString(names[i])
}

// New builds the ring for epoch over members. Duplicates and empty names
// are dropped (the empty name is how the lookups say "no owner") and the
// rest are sorted, so the input order never affects the result.
func New(epoch uint64, members []string) *Ring {
	names := make([]string, 0, len(members))
	for _, m := range members {
		if m != "" {
			names = append(names, m)
		}
	}
	slices.Sort(names)
	names = slices.Clip(slices.Compact(names))
	hashes := make([]uint64, len(names))
	for i, n := range names {
		hashes[i] = hashString(n)
	}
	return &Ring{epoch: epoch, names: names, hashes: hashes}
}

// Epoch returns the epoch the ring was built for; 0 for a nil ring.
func (r *Ring) Epoch() uint64 {
	if r == nil {
		return 0
	}
	return r.epoch
}

// Members returns a copy of the member names in ascending order.
func (r *Ring) Members() []string {
	if r == nil {
		return nil
	}
	return slices.Clone(r.names)
}

// Len returns the number of members.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.names)
}

// Contains reports whether name is a member.
func (r *Ring) Contains(name string) bool {
	if r == nil {
		return false
	}
	_, found := slices.BinarySearch(r.names, name)
	return found
}

// Owner returns the member that owns key, or "" when there are no members.
// It does not allocate.
func (r *Ring) Owner(key string) string {
	if r.Len() == 0 {
		return ""
	}
	return r.names[r.owner(hashString(key))]
}

// OwnerAndReplica returns the owner of key and its first replica in one
// pass without allocating. The replica is "" when there are fewer than two
// members; otherwise it is Replicas(key, 1)[0], the member that becomes the
// owner if the owner leaves.
func (r *Ring) OwnerAndReplica(key string) (owner, replica string) {
	if r.Len() == 0 {
		return "", ""
	}
	kh := hashString(key)
	top, topScore := 0, score(kh, r.hashes[0])
	second, secondScore := -1, uint64(0)
	for i := 1; i < len(r.hashes); i++ {
		s := score(kh, r.hashes[i])
		switch {
		case before(s, i, topScore, top):
			second, secondScore = top, topScore
			top, topScore = i, s
		case second < 0 || before(s, i, secondScore, second):
			second, secondScore = i, s
		}
	}
	if second < 0 {
		return r.names[top], ""
	}
	return r.names[top], r.names[second]
}

// Replicas returns up to n distinct members that follow the owner of key in
// rank order, owner excluded: the first is the replica OwnerAndReplica
// reports, and each would become the owner if every member before it left.
// It returns nil when n <= 0 or there are fewer than two members, and at
// most Len()-1 names. Its cost grows with n × Len(), so the hot path should
// use OwnerAndReplica.
func (r *Ring) Replicas(key string, n int) []string {
	n = min(n, r.Len()-1)
	if n <= 0 {
		return nil
	}
	kh := hashString(key)
	prev := r.owner(kh)
	prevScore := score(kh, r.hashes[prev])
	out := make([]string, 0, n)
	for len(out) < n {
		next, nextScore := -1, uint64(0)
		for i, mh := range r.hashes {
			s := score(kh, mh)
			if before(prevScore, prev, s, i) && (next < 0 || before(s, i, nextScore, next)) {
				next, nextScore = i, s
			}
		}
		out = append(out, r.names[next])
		prev, prevScore = next, nextScore
	}
	return out
}

// Moved reports whether key has a different owner in r than in old, for
// instance to decide which channels to hand off after a membership change.
// A nil old ring counts as empty. It does not allocate.
func (r *Ring) Moved(old *Ring, key string) bool {
	kh := hashString(key)
	return r.ownerName(kh) != old.ownerName(kh)
}

// ownerName is the owner for a key hash, "" when there are no members.
func (r *Ring) ownerName(kh uint64) string {
	if r.Len() == 0 {
		return ""
	}
	return r.names[r.owner(kh)]
}

// owner is the index of the highest-ranked member for a key hash; the ring
// must not be empty.
func (r *Ring) owner(kh uint64) int {
	top, topScore := 0, score(kh, r.hashes[0])
	for i := 1; i < len(r.hashes); i++ {
		if s := score(kh, r.hashes[i]); before(s, i, topScore, top) {
			top, topScore = i, s
		}
	}
	return top
}

// before reports whether member a ranks before member b for one key:
// higher score first, and on equal scores the lower index (smaller name).
func before(aScore uint64, a int, bScore uint64, b int) bool {
	return aScore > bScore || (aScore == bScore && a < b)
}
