package ring

import (
	"slices"
	"strings"
	"testing"
)

// FuzzOwner checks the ring's invariants on arbitrary member sets (a
// comma-separated list) and keys: the owner is a member, the answer does
// not depend on input order, replicas are distinct non-owners in rank
// order, and a join or leave moves only what it must.
func FuzzOwner(f *testing.F) {
	f.Add("a,b,c", "/topic/1")
	f.Add("node-1", "/site/online")
	f.Add("", "")
	f.Add("x,x,,y", "/chat-reply/42")
	f.Add("n1,n2,n3,n4,n5,n6,n7,n8,n9,n10", "/discourse-presence/reply/98765/with-a-longer-tail")
	f.Fuzz(func(t *testing.T, list, key string) {
		members := strings.Split(list, ",")
		r := New(1, members)
		owner, replica := r.OwnerAndReplica(key)
		if owner != r.Owner(key) {
			t.Fatalf("OwnerAndReplica owner %q != Owner %q", owner, r.Owner(key))
		}
		if (owner == "") != (r.Len() == 0) || (owner != "" && !r.Contains(owner)) {
			t.Fatalf("owner %q of %q not a member", owner, r.Members())
		}
		checkReplicas(t, r, key, owner, replica)
		reversed := slices.Clone(members)
		slices.Reverse(reversed)
		if o, rep := New(1, reversed).OwnerAndReplica(key); o != owner || rep != replica {
			t.Fatalf("reversed input: %q, %q; want %q, %q", o, rep, owner, replica)
		}
		if owner != "" {
			checkLeave(t, r, key, owner, replica)
		}
		checkJoin(t, r, key, owner)
	})
}

func checkReplicas(t *testing.T, r *Ring, key, owner, replica string) {
	t.Helper()
	reps := r.Replicas(key, r.Len())
	if len(reps) != max(r.Len()-1, 0) {
		t.Fatalf("%d replicas for %d members", len(reps), r.Len())
	}
	if (replica == "") != (len(reps) == 0) || (len(reps) > 0 && reps[0] != replica) {
		t.Fatalf("replica %q, Replicas %q", replica, reps)
	}
	all := append([]string{owner}, reps...)
	if owner != "" && !slices.Equal(slices.Sorted(slices.Values(all)), r.Members()) {
		t.Fatalf("owner %q and replicas %q are not the members %q", owner, reps, r.Members())
	}
}

// checkLeave removes the owner: the replica must take over, and no key
// owned by someone else may be affected.
func checkLeave(t *testing.T, r *Ring, key, owner, replica string) {
	t.Helper()
	shrunk := New(2, without(r.Members(), owner))
	if got := shrunk.Owner(key); got != replica {
		t.Fatalf("owner %q left: new owner %q, want replica %q", owner, got, replica)
	}
	if !shrunk.Moved(r, key) {
		t.Fatal("owner left but Moved reports no change")
	}
}

// checkJoin adds a member: the key either stays or moves to the joiner,
// in which case the old owner becomes its replica.
func checkJoin(t *testing.T, r *Ring, key, owner string) {
	t.Helper()
	joiner := "joiner"
	for r.Contains(joiner) {
		joiner += "+"
	}
	grown := New(2, append(r.Members(), joiner))
	o, rep := grown.OwnerAndReplica(key)
	switch {
	case o == owner:
		if grown.Moved(r, key) {
			t.Fatal("owner unchanged but Moved reports a change")
		}
	case o == joiner:
		if rep != owner && owner != "" {
			t.Fatalf("key moved to joiner with replica %q, want old owner %q", rep, owner)
		}
	default:
		t.Fatalf("join of %q moved key from %q to %q", joiner, owner, o)
	}
}
