package load

import (
	"errors"
	"math/rand/v2"
	"testing"
)

func testPopulation(t *testing.T, cfg PopulationConfig) *Population {
	t.Helper()
	if cfg.RunID == "" {
		cfg.RunID = "t"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/demo/load/"
	}
	p, err := NewPopulation(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseMix(t *testing.T) {
	m, err := ParseMix("8, 1,1")
	if err != nil {
		t.Fatal(err)
	}
	if m != (Mix{0.8, 0.1, 0.1}) {
		t.Errorf("mix %v, want normalised 0.8/0.1/0.1", m)
	}
	for _, bad := range []string{"", "1,1", "1,-1,0", "0,0,0", "a,b,c"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
}

func TestPopulationConfigValidate(t *testing.T) {
	ok := PopulationConfig{Users: 2, ClientsPerUser: 2, Channels: 3, ChannelsPerUser: 2, ChannelsPerCall: 2}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	bad := []PopulationConfig{
		{Users: 0, ClientsPerUser: 1, Channels: 1, ChannelsPerUser: 1, ChannelsPerCall: 1},
		{Users: 1, ClientsPerUser: 65, Channels: 1, ChannelsPerUser: 1, ChannelsPerCall: 1},
		{Users: 1, ClientsPerUser: 1, Channels: 1, ChannelsPerUser: 2, ChannelsPerCall: 1},
		{Users: 1, ClientsPerUser: 1, Channels: 3, ChannelsPerUser: 2, ChannelsPerCall: 3},
	}
	for _, c := range bad {
		if err := c.Validate(); !errors.Is(err, ErrBadPopulation) {
			t.Errorf("%+v: err = %v, want ErrBadPopulation", c, err)
		}
	}
}

func TestNamesRoundTrip(t *testing.T) {
	p := testPopulation(t, PopulationConfig{RunID: "r1", Users: 10, ClientsPerUser: 1, Channels: 5, ChannelsPerUser: 1, ChannelsPerCall: 1})
	if u, ok := p.ParseUser(p.UserID(7)); !ok || u != 7 {
		t.Errorf("ParseUser(UserID(7)) = %d, %v", u, ok)
	}
	if c, ok := p.ParseChannel(p.ChannelName(4)); !ok || c != 4 {
		t.Errorf("ParseChannel(ChannelName(4)) = %d, %v", c, ok)
	}
	for _, id := range []string{"r2-u1", "r1-u10", "r1-ux", "7"} {
		if _, ok := p.ParseUser(id); ok {
			t.Errorf("ParseUser(%q) accepted", id)
		}
	}
	if _, ok := p.ParseChannel("/demo/load/5"); ok {
		t.Error("channel index out of range accepted")
	}
}

// shadow is an independent model of which clients are present.
type shadow map[[3]int]bool // user, client, channel

func (s shadow) usersIn(u, ch, clients int) int {
	n := 0
	for k := range clients {
		if s[[3]int{u, k, ch}] {
			n++
		}
	}
	return n
}

func TestNextAgreesWithAShadowModel(t *testing.T) {
	cfg := PopulationConfig{Users: 5, ClientsPerUser: 3, Channels: 4, ChannelsPerUser: 2, ChannelsPerCall: 2, Mix: Mix{0.4, 0.3, 0.3}}
	p := testPopulation(t, cfg)
	model := shadow{}
	rng := rand.New(rand.NewPCG(7, 7))
	var op Op
	kinds := map[Kind]int{}
	for i := range 5000 {
		if !p.Next(rng, &op) {
			t.Fatalf("step %d: nothing picked although nothing is busy", i)
		}
		kinds[op.Kind]++
		if op.Kind != Heartbeat && len(op.Pairs) != 1 {
			t.Fatalf("%v carries %d channels, want 1", op.Kind, len(op.Pairs))
		}
		for j, ch := range op.Channels {
			key := [3]int{op.User, op.Client, ch}
			if model[key] == (op.Kind == Enter) {
				t.Fatalf("step %d: %v of client %v, but the model says present=%v", i, op.Kind, key, model[key])
			}
			wantEntering := op.Kind == Enter && model.usersIn(op.User, ch, cfg.ClientsPerUser) == 0
			if op.Entering[j] != wantEntering {
				t.Fatalf("step %d: Entering=%v, want %v", i, op.Entering[j], wantEntering)
			}
			// Let every tenth call fail, as a 429 would: nothing changes.
			op.Applied[j] = i%10 != 0
			if op.Applied[j] {
				model[key] = op.Kind != Leave
			}
		}
		p.Finish(&op)
	}
	present := 0
	for _, v := range model {
		if v {
			present++
		}
	}
	if got := p.PresentSlots(); got != present {
		t.Errorf("PresentSlots %d, model %d", got, present)
	}
	if kinds[Heartbeat] == 0 || kinds[Enter] == 0 || kinds[Leave] == 0 {
		t.Errorf("kinds drawn %v, want all three", kinds)
	}
}

func TestBusyMembershipsAreNotPickedTwice(t *testing.T) {
	p := testPopulation(t, PopulationConfig{Users: 1, ClientsPerUser: 1, Channels: 1, ChannelsPerUser: 1, ChannelsPerCall: 1, Mix: Mix{0, 1, 0}})
	rng := rand.New(rand.NewPCG(1, 1))
	var a, b Op
	if !p.Next(rng, &a) {
		t.Fatal("first pick failed")
	}
	if p.Next(rng, &b) {
		t.Fatalf("picked %+v while the only membership is busy", b)
	}
	a.Applied[0] = true
	p.Finish(&a)
	if !p.Next(rng, &b) || b.Kind == Enter {
		t.Fatalf("after the enter, got %+v, want a heartbeat or leave", b)
	}
}

func TestWarmupEntersEveryoneAndCleanupLeaves(t *testing.T) {
	cfg := PopulationConfig{Users: 3, ClientsPerUser: 2, Channels: 4, ChannelsPerUser: 3, ChannelsPerCall: 1}
	p := testPopulation(t, cfg)
	var op Op
	calls, entering := 0, 0
	for p.NextWarmup(&op) {
		calls++
		if op.Kind != Enter || len(op.Channels) != cfg.ChannelsPerUser {
			t.Fatalf("warmup op %+v", op)
		}
		for i := range op.Applied {
			op.Applied[i] = true
			if op.Entering[i] {
				entering++
			}
		}
		p.Finish(&op)
	}
	if calls != cfg.Users*cfg.ClientsPerUser {
		t.Errorf("%d warmup calls, want one per client (%d)", calls, cfg.Users*cfg.ClientsPerUser)
	}
	if entering != cfg.Users*cfg.ChannelsPerUser {
		t.Errorf("%d entering memberships, want one per user and channel (%d)", entering, cfg.Users*cfg.ChannelsPerUser)
	}
	if p.PresentSlots() != p.Slots() {
		t.Errorf("after warmup %d of %d present", p.PresentSlots(), p.Slots())
	}
	for p.NextCleanup(&op) {
		for i := range op.Applied {
			op.Applied[i] = true
		}
		p.Finish(&op)
	}
	if n := p.PresentSlots(); n != 0 {
		t.Errorf("%d clients still present after cleanup", n)
	}
}
