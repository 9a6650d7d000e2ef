package ring

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

func TestNewNormalisesMembers(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"nil", nil, []string{}},
		{"empty names only", []string{"", ""}, []string{}},
		{"sorted", []string{"a", "b", "c"}, []string{"a", "b", "c"}},
		{"unsorted", []string{"c", "a", "b"}, []string{"a", "b", "c"}},
		{"duplicates", []string{"b", "a", "b", "a", "b"}, []string{"a", "b"}},
		{"empty name dropped", []string{"x", "", "y"}, []string{"x", "y"}},
		{"case matters", []string{"Node", "node"}, []string{"Node", "node"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(7, tt.in)
			if got := r.Members(); !slices.Equal(got, tt.want) {
				t.Fatalf("Members() = %q, want %q", got, tt.want)
			}
			if r.Len() != len(tt.want) {
				t.Fatalf("Len() = %d, want %d", r.Len(), len(tt.want))
			}
			if r.Epoch() != 7 {
				t.Fatalf("Epoch() = %d, want 7", r.Epoch())
			}
		})
	}
}

func TestNewDoesNotRetainInput(t *testing.T) {
	in := []string{"b", "a"}
	r := New(1, in)
	in[0], in[1] = "x", "y"
	if got := r.Members(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("ring changed with its input: %q", got)
	}
	if !slices.Equal(in, []string{"x", "y"}) {
		t.Fatalf("New reordered its input: %q", in)
	}
}

func TestMembersReturnsCopy(t *testing.T) {
	r := New(1, []string{"a", "b"})
	m := r.Members()
	m[0] = "zzz"
	if got := r.Members(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("mutating Members() changed the ring: %q", got)
	}
}

func TestContains(t *testing.T) {
	r := New(1, []string{"node-2", "node-1"})
	for name, want := range map[string]bool{"node-1": true, "node-2": true, "node-3": false, "": false} {
		if got := r.Contains(name); got != want {
			t.Errorf("Contains(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestEmptyAndNilRings(t *testing.T) {
	for name, r := range map[string]*Ring{"nil": nil, "empty": New(3, nil), "only empty names": New(3, []string{""})} {
		t.Run(name, func(t *testing.T) {
			if got := r.Owner("/topic/1"); got != "" {
				t.Errorf("Owner = %q, want empty", got)
			}
			if o, rep := r.OwnerAndReplica("/topic/1"); o != "" || rep != "" {
				t.Errorf("OwnerAndReplica = %q, %q, want empty", o, rep)
			}
			if got := r.Replicas("/topic/1", 3); got != nil {
				t.Errorf("Replicas = %q, want nil", got)
			}
			if r.Len() != 0 || len(r.Members()) != 0 || r.Contains("") {
				t.Errorf("Len %d, Members %q, want none", r.Len(), r.Members())
			}
			if r.Moved(nil, "/topic/1") {
				t.Error("Moved between two empty rings")
			}
		})
	}
	if New(0, nil).Epoch() != 0 || (*Ring)(nil).Epoch() != 0 {
		t.Error("empty rings should report epoch 0")
	}
}

func TestOneMember(t *testing.T) {
	r := New(1, []string{"solo", "solo"})
	for _, k := range channelKeys(1000) {
		if got := r.Owner(k); got != "solo" {
			t.Fatalf("Owner(%q) = %q, want solo", k, got)
		}
		if o, rep := r.OwnerAndReplica(k); o != "solo" || rep != "" {
			t.Fatalf("OwnerAndReplica(%q) = %q, %q, want solo and none", k, o, rep)
		}
		if got := r.Replicas(k, 2); got != nil {
			t.Fatalf("Replicas(%q, 2) = %q, want nil", k, got)
		}
	}
}

func TestReplicasCount(t *testing.T) {
	r := New(1, nodeNames(5))
	tests := []struct{ n, want int }{{-1, 0}, {0, 0}, {1, 1}, {3, 3}, {4, 4}, {5, 4}, {100, 4}}
	for _, tt := range tests {
		if got := r.Replicas("/topic/42", tt.n); len(got) != tt.want {
			t.Errorf("len(Replicas(_, %d)) = %d, want %d", tt.n, len(got), tt.want)
		}
	}
}

// TestDeterminism builds rings from shuffled member lists and checks that
// every one agrees on the owner and replica of 100,000 keys.
func TestDeterminism(t *testing.T) {
	keys := channelKeys(100_000)
	members := nodeNames(10)
	ref := New(1, members)
	want := make([][2]string, len(keys))
	for i, k := range keys {
		want[i][0], want[i][1] = ref.OwnerAndReplica(k)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 5 {
		shuffled := slices.Clone(members)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		shuffled = append(shuffled, shuffled[:trial]...) // and some duplicates
		r := New(1, shuffled)
		for i, k := range keys {
			if o, rep := r.OwnerAndReplica(k); o != want[i][0] || rep != want[i][1] {
				t.Fatalf("order %q: key %q -> %q, %q, want %q, %q", shuffled, k, o, rep, want[i][0], want[i][1])
			}
		}
	}
}

// TestGolden pins concrete answers so that a change to the hash, which would
// make nodes of different versions disagree on ownership, cannot go unseen.
func TestGolden(t *testing.T) {
	hashes := []struct {
		in   string
		want uint64
	}{
		{"", 0x9353dfc8a195f3e2},
		{"a", 0xbf3880df28cc1af2},
		{"node-1", 0xda9ce04ef2213ebe},
		{"/topic/12345", 0x1ef62ffa9753d2e3},
		{"/discourse-presence/reply/98765/with-a-longer-tail", 0x00f6f722c037433d},
	}
	for _, tt := range hashes {
		if got := hashString(tt.in); got != tt.want {
			t.Errorf("hashString(%q) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
	r := New(1, nodeNames(5))
	owners := []struct{ key, owner, replica string }{
		{"/site/online", "node-1", "node-5"},
		{"/topic/1", "node-1", "node-2"},
		{"/topic/2", "node-5", "node-2"},
		{"/chat-reply/77", "node-5", "node-2"},
		{"/discourse-presence/reply/98765", "node-3", "node-2"},
		{"/a/b", "node-2", "node-1"},
	}
	for _, tt := range owners {
		if o, rep := r.OwnerAndReplica(tt.key); o != tt.owner || rep != tt.replica {
			t.Errorf("OwnerAndReplica(%q) = %q, %q, want %q, %q", tt.key, o, rep, tt.owner, tt.replica)
		}
	}
}

// TestReplicaOrder checks the rank order the replication protocol relies
// on: replicas are distinct and never the owner, the first equals the one
// OwnerAndReplica reports, and each is the owner of the ring without the
// members ranked before it.
func TestReplicaOrder(t *testing.T) {
	for _, size := range []int{2, 3, 5, 10} {
		members := nodeNames(size)
		r := New(1, members)
		for _, k := range channelKeys(2000) {
			owner, replica := r.OwnerAndReplica(k)
			if owner != r.Owner(k) {
				t.Fatalf("%d members, %q: OwnerAndReplica owner %q, Owner %q", size, k, owner, r.Owner(k))
			}
			reps := r.Replicas(k, size)
			if len(reps) != size-1 || reps[0] != replica {
				t.Fatalf("%d members, %q: Replicas %q, replica %q", size, k, reps, replica)
			}
			ranked := append([]string{owner}, reps...)
			if sorted := slices.Sorted(slices.Values(ranked)); !slices.Equal(sorted, r.Members()) {
				t.Fatalf("%d members, %q: ranking %q is not a permutation of the members", size, k, ranked)
			}
			for i := 1; i < len(ranked); i++ {
				if got := New(1, without(members, ranked[:i]...)).Owner(k); got != ranked[i] {
					t.Fatalf("%d members, %q: without %q owner is %q, want rank %d %q", size, k, ranked[:i], got, i, ranked[i])
				}
			}
		}
	}
}

func TestManyMembers(t *testing.T) {
	r := New(1, nodeNames(100))
	keys := channelKeys(100_000)
	loads := ownerLoads(r, keys)
	if len(loads) != 100 {
		t.Fatalf("keys landed on %d distinct owners, want 100", len(loads))
	}
	maxRatio, minRatio := spread(loads, len(keys))
	t.Logf("100 members, %d keys: max/mean %.3f, min/mean %.3f", len(keys), maxRatio, minRatio)
	if maxRatio > 1.25 || minRatio < 0.75 {
		t.Fatalf("100 members: max/mean %.3f, min/mean %.3f outside [0.75, 1.25]", maxRatio, minRatio)
	}
	for _, k := range keys[:500] {
		reps := r.Replicas(k, 3)
		owner, replica := r.OwnerAndReplica(k)
		if len(reps) != 3 || reps[0] != replica || slices.Contains(reps, owner) ||
			reps[0] == reps[1] || reps[1] == reps[2] || reps[0] == reps[2] {
			t.Fatalf("%q: owner %q replicas %q", k, owner, reps)
		}
	}
}

func TestMoved(t *testing.T) {
	old := New(1, nodeNames(3))
	same := New(2, nodeNames(3))
	grown := New(3, nodeNames(4))
	keys := channelKeys(10_000)
	moved := 0
	for _, k := range keys {
		if same.Moved(old, k) {
			t.Fatalf("%q moved between rings with the same members", k)
		}
		if !old.Moved(nil, k) || !(*Ring)(nil).Moved(old, k) {
			t.Fatalf("%q: a move from or to an empty ring must count", k)
		}
		if got, want := grown.Moved(old, k), grown.Owner(k) != old.Owner(k); got != want {
			t.Fatalf("%q: Moved = %v, owners %q -> %q", k, got, old.Owner(k), grown.Owner(k))
		}
		if grown.Moved(old, k) {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no key moved to the fourth member")
	}
}

func TestLookupsDoNotAllocate(t *testing.T) {
	r := New(1, nodeNames(10))
	old := New(0, nodeNames(9))
	key := "/discourse-presence/reply/12345"
	var sink string
	checks := map[string]func(){
		"Owner":           func() { sink = r.Owner(key) },
		"OwnerAndReplica": func() { sink, _ = r.OwnerAndReplica(key) },
		"Moved":           func() { _ = r.Moved(old, key) },
		"Contains":        func() { _ = r.Contains("node-3") },
	}
	for name, fn := range checks {
		if allocs := testing.AllocsPerRun(200, fn); allocs != 0 {
			t.Errorf("%s allocates %.1f times per call", name, allocs)
		}
	}
	_ = sink
}

func TestConcurrentLookups(t *testing.T) {
	r := New(1, nodeNames(5))
	keys := channelKeys(5000)
	want := make([]string, len(keys))
	for i, k := range keys {
		want[i] = r.Owner(k)
	}
	errs := make(chan string, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i, k := range keys {
				if got := r.Owner(k); got != want[i] {
					errs <- k
					return
				}
				r.OwnerAndReplica(k)
				r.Replicas(k, 2)
			}
		})
	}
	wg.Wait()
	close(errs)
	for k := range errs {
		t.Errorf("concurrent lookup of %q disagreed", k)
	}
}

// TestTiesGoToSmallerName builds a ring whose members hash alike, which
// real names do only on a 64-bit collision, to check that every lookup
// breaks equal scores the same way.
func TestTiesGoToSmallerName(t *testing.T) {
	r := &Ring{names: []string{"a", "b", "c", "d"}, hashes: []uint64{9, 9, 9, 9}}
	if o, rep := r.OwnerAndReplica("/topic/1"); o != "a" || rep != "b" {
		t.Fatalf("OwnerAndReplica = %q, %q, want a, b", o, rep)
	}
	if got := r.Owner("/topic/1"); got != "a" {
		t.Fatalf("Owner = %q, want a", got)
	}
	if got := r.Replicas("/topic/1", 3); !slices.Equal(got, []string{"b", "c", "d"}) {
		t.Fatalf("Replicas = %q, want b, c, d", got)
	}
}
