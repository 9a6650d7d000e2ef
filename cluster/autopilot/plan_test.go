package autopilot

import (
	"slices"
	"testing"
	"time"
)

func TestVoters(t *testing.T) {
	cases := []struct{ n, maxVoters, want int }{
		{0, 5, 1}, {1, 5, 1}, {2, 5, 1}, {3, 5, 3}, {4, 5, 3}, {5, 5, 5}, {6, 5, 5}, {7, 5, 5},
		{9, 7, 7}, {3, 1, 1}, {8, 9, 7},
	}
	for _, c := range cases {
		if got := Voters(c.n, c.maxVoters); got != c.want {
			t.Errorf("Voters(%d, %d) = %d, want %d", c.n, c.maxVoters, got, c.want)
		}
	}
}

func TestPlanSuffrage(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	v := func(id string) candidate { return candidate{id: id, voter: true, alive: true} }
	dead := func(id string) candidate { return candidate{id: id, voter: true} }
	ready := func(id string, since int) candidate {
		return candidate{id: id, alive: true, stable: true, healthySince: at(since)}
	}
	green := func(id string) candidate { return candidate{id: id, alive: true} } // not stable yet
	cases := []struct {
		name            string
		servers         []candidate
		promote, demote []string
	}{
		{"three voters stay", []candidate{v("a"), v("b"), v("c")}, nil, nil},
		{"a fourth stays a non-voter", []candidate{v("a"), v("b"), v("c"), ready("d", 0)}, nil, nil},
		{"a fourth and fifth are promoted", []candidate{v("a"), v("b"), v("c"), ready("e", 1), ready("d", 2)},
			[]string{"e", "d"}, nil},
		{"capped at five, the longest stable first",
			[]candidate{v("a"), v("b"), v("c"), ready("f", 3), ready("d", 2), ready("e", 2), ready("g", 0)},
			[]string{"g", "d"}, nil},
		{"a non-voter not yet stable waits", []candidate{v("a"), v("b"), v("c"), ready("d", 0), green("e")}, nil, nil},
		{"a failed voter's replacement is promoted before it is reaped",
			[]candidate{v("a"), v("b"), v("c"), v("d"), dead("e"), ready("f", 0), ready("g", 0)}, []string{"f"}, nil},
		{"four voters: one is demoted, not the leader", []candidate{v("a"), v("b"), v("c"), v("d")}, nil, []string{"c"}},
		{"no demotion while a voter is down", []candidate{v("a"), v("b"), v("c"), v("d"), dead("e")}, nil, nil},
		{"two voters are kept", []candidate{v("a"), v("b")}, nil, nil},
		{"one voter and a stable non-voter stay", []candidate{v("a"), ready("b", 0)}, nil, nil},
		{"a lone voter with two stable non-voters", []candidate{v("a"), ready("b", 0), ready("c", 0)},
			[]string{"b", "c"}, nil},
		{"six voters: one demoted", []candidate{v("a"), v("b"), v("c"), v("d"), v("e"), v("f")}, nil, []string{"f"}},
	}
	for _, c := range cases {
		promote, demote := planSuffrage(c.servers, "d", 5)
		if !slices.Equal(promote, c.promote) || !slices.Equal(demote, c.demote) {
			t.Errorf("%s: promote %v demote %v, want %v and %v", c.name, promote, demote, c.promote, c.demote)
		}
	}
}

func TestCapRemovals(t *testing.T) {
	planned := []removal{{id: "a", voter: true}, {id: "b"}, {id: "c", voter: true}, {id: "d", voter: true},
		{id: "e"}, {id: "f", voter: true, left: true}}
	var got []string
	for _, r := range capRemovals(planned, 5) {
		got = append(got, r.id)
	}
	if want := []string{"a", "b", "c", "e", "f"}; !slices.Equal(got, want) {
		t.Fatalf("capRemovals of 5 voters = %v, want %v", got, want)
	}
	if out := capRemovals([]removal{{id: "a", voter: true}}, 2); len(out) != 0 {
		t.Fatalf("removing one of two voters, failed, allowed: %v", out)
	}
	if out := capRemovals([]removal{{id: "a", voter: true, left: true}}, 2); len(out) != 1 {
		t.Fatalf("removing one of two voters that left refused: %v", out)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Self: "n1", MaxVoters: 4},
		{Self: "n1", MaxVoters: -1},
		{Self: "n1", BootstrapExpect: -1},
		{Self: "n1", ReapAfter: -time.Second},
	} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
	cfg := Config{Self: "n1"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxVoters != DefaultMaxVoters || cfg.BootstrapExpect != 1 || cfg.ReapAfter != DefaultReapAfter ||
		cfg.Stabilization != DefaultStabilization || cfg.Clock == nil || cfg.Logger == nil {
		t.Fatalf("defaults not filled: %+v", cfg)
	}
}
