package presence

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestBackendOverAnEngine(t *testing.T) {
	r := newEngineRig(t, configFunc(cappedConfigs))
	b := NewBackend(r.e)
	ctx := context.Background()
	sam, ann, kim := &User{ID: "7", Username: "sam"}, &User{ID: "9", Username: "ann"}, &User{ID: "5"}
	for _, u := range []*User{sam, ann} {
		if ok, err := b.Present(ctx, u, "server", "/capcount/a"); err != nil || !ok {
			t.Fatalf("present %s: %v %v", u.ID, ok, err)
		}
	}
	if ok, err := b.Present(ctx, kim, "server", "/capcount/a"); err != nil || ok {
		t.Fatalf("a third user in a channel of 2: %v %v", ok, err)
	}
	if ids, err := b.UserIDs(ctx, "/capcount/a"); err != nil || !slices.Equal(ids, []string{"7", "9"}) {
		t.Fatalf("user ids of a count-only channel: %v %v", ids, err)
	}
	if n, err := b.Count(ctx, "/capcount/a"); err != nil || n != 2 {
		t.Fatalf("count: %d %v", n, err)
	}
	for _, ch := range []string{"/nope/a", "bad"} {
		if _, err := b.State(ctx, ch); !errors.Is(err, ErrNotFound) {
			t.Fatalf("state of %q: %v, want ErrNotFound", ch, err)
		}
		if _, err := b.UserIDs(ctx, ch); !errors.Is(err, ErrNotFound) {
			t.Fatalf("user ids of %q: %v, want ErrNotFound", ch, err)
		}
	}
	if err := b.Leave(ctx, "9", "server", "/capcount/a"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Present(ctx, kim, "server", "/capcount/a"); err != nil || !ok {
		t.Fatalf("refused below the cap after a leave: %v %v", ok, err)
	}
	if v, err := b.CanView(ctx, nil, "/priv/a"); err != nil || v {
		t.Fatalf("anonymous can view a private channel: %v %v", v, err)
	}
	if e, err := b.CanEnter(ctx, &User{ID: "3", Groups: []string{"staff"}}, "/priv/a"); err != nil || !e {
		t.Fatalf("staff cannot enter: %v %v", e, err)
	}
	if acc, err := b.Can(ctx, sam, "/capcount/a"); err != nil || acc.MaxUsers != 2 || !acc.CountOnly {
		t.Fatalf("can: %+v %v", acc, err)
	}
	if err := b.Clear(ctx, "/capcount/a"); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Count(ctx, "/capcount/a"); n != 0 {
		t.Fatalf("%d users after clear", n)
	}
	// Any number of channels: leaves and reads go in chunks the Service takes.
	many := make([]string, max(MaxInspectChannels, MaxLeaveChannels)+3)
	for i := range many {
		many[i] = fmt.Sprintf("/pub/%d", i)
	}
	got, err := b.Update(ctx, sam, "tab", many[:3], many)
	if err != nil || len(got) != 3 || !got[many[0]] {
		t.Fatalf("update with %d leaves: %v %v", len(many), got, err)
	}
	states, err := b.States(ctx, append(many, "/nope/x"))
	if err != nil || len(states) != len(many)+1 || states["/nope/x"] != nil || states[many[0]].Count != 0 {
		t.Fatalf("states of %d channels: %d, %v", len(many)+1, len(states), err)
	}
}
