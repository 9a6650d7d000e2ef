package presence

import (
	"testing"
)

// fillBacklog pushes messages with ids first..last, published at milli(id).
func fillBacklog(b *backlog, first, last int64, milli func(id int64) int64) {
	for id := first; id <= last; id++ {
		b.push(&Message{ID: id, PublishedAtUnixMilli: milli(id)}, milli(id))
	}
}

func checkContiguous(t *testing.T, b *backlog, lastID int64) {
	t.Helper()
	for i := range b.len() {
		if want := lastID - int64(b.len()-1-i); b.at(i).ID != want {
			t.Fatalf("message %d has id %d, want %d", i, b.at(i).ID, want)
		}
	}
}

func TestBacklogKeepsLastThousandOldMessages(t *testing.T) {
	var b backlog
	fillBacklog(&b, 1, 1500, func(int64) int64 { return 0 })
	// Pushing at a time when all of them are older than 10 minutes prunes to
	// the newest 1000 (plus the one pushed).
	now := int64(BacklogMinAgeSeconds*1000 + 1)
	b.push(&Message{ID: 1501, PublishedAtUnixMilli: now}, now)
	if b.len() != BacklogMinMessages+1 {
		t.Fatalf("len %d, want %d", b.len(), BacklogMinMessages+1)
	}
	checkContiguous(t, &b, 1501)
}

func TestBacklogKeepsYoungMessagesBeyondThousand(t *testing.T) {
	var b backlog
	fillBacklog(&b, 1, 5000, func(id int64) int64 { return id }) // all within 5 s
	if b.len() != 5000 {
		t.Fatalf("len %d, want every young message (5000)", b.len())
	}
	checkContiguous(t, &b, 5000)
}

func TestBacklogHardCap(t *testing.T) {
	var b backlog
	fillBacklog(&b, 1, backlogHardCap+2500, func(int64) int64 { return 0 })
	if b.len() != backlogHardCap {
		t.Fatalf("len %d, want the hard cap %d", b.len(), backlogHardCap)
	}
	checkContiguous(t, &b, backlogHardCap+2500)
}

func TestBacklogAgesOutThenShrinks(t *testing.T) {
	var b backlog
	fillBacklog(&b, 1, backlogHardCap, func(int64) int64 { return 0 })
	later := int64(BacklogMinAgeSeconds*1000) + 1
	fillBacklog(&b, backlogHardCap+1, backlogHardCap+10, func(int64) int64 { return later })
	if b.len() != BacklogMinMessages+1 {
		t.Fatalf("len %d after aging, want %d", b.len(), BacklogMinMessages+1)
	}
	if len(b.buf) > 4*b.len() {
		t.Fatalf("capacity %d was not given back (%d messages held)", len(b.buf), b.len())
	}
	checkContiguous(t, &b, backlogHardCap+10)
}

func TestBacklogSince(t *testing.T) {
	var b backlog
	fillBacklog(&b, 101, 110, func(int64) int64 { return 0 })
	cases := []struct {
		name   string
		after  int64
		upTo   int64
		wantOK bool
		want   []int64
	}{
		{"all", 100, 110, true, []int64{101, 102, 103, 104, 105, 106, 107, 108, 109, 110}},
		{"up to an older id", 105, 108, true, []int64{106, 107, 108}},
		{"up to the oldest", 100, 101, true, []int64{101}},
		{"at the limit", 108, 108, true, nil},
		{"beyond the limit", 109, 108, false, nil},
		{"tail", 107, 110, true, []int64{108, 109, 110}},
		{"up to date", 110, 110, true, nil},
		{"older than backlog", 99, 110, false, nil},
		{"newer than last id", 111, 110, false, nil},
		{"zero", 0, 110, false, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msgs, ok := b.since(c.after, c.upTo)
			if ok != c.wantOK || len(msgs) != len(c.want) {
				t.Fatalf("since(%d) = %d msgs, %v; want %v, %v", c.after, len(msgs), ok, c.want, c.wantOK)
			}
			for i, m := range msgs {
				if m.ID != c.want[i] {
					t.Fatalf("message %d id %d, want %d", i, m.ID, c.want[i])
				}
			}
		})
	}
}

func TestBacklogSinceEmpty(t *testing.T) {
	var b backlog
	if _, ok := b.since(5, 5); !ok {
		t.Fatal("an up-to-date cursor of an empty channel must not resync")
	}
	if _, ok := b.since(4, 5); ok {
		t.Fatal("a cursor behind an empty backlog must resync")
	}
}

func TestBacklogRingWraps(t *testing.T) {
	var b backlog
	fillBacklog(&b, 1, backlogHardCap+37, func(int64) int64 { return 0 })
	msgs, ok := b.since(backlogHardCap+30, backlogHardCap+37)
	if !ok || len(msgs) != 7 || msgs[0].ID != backlogHardCap+31 {
		t.Fatalf("since across the wrap: ok %v, %d msgs", ok, len(msgs))
	}
	all := b.all()
	if len(all) != backlogHardCap || all[0].ID != 38 {
		t.Fatalf("all: %d msgs starting at %d", len(all), all[0].ID)
	}
}
