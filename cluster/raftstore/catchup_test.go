package raftstore

import (
	"testing"
	"time"
)

func TestCatchUpWatcherTransfersOnlyForALongOutageWithMissedWrites(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	long := t0.Add(catchUpOutage)
	short := t0.Add(catchUpOutage - time.Millisecond)
	cases := []struct {
		name    string
		resume  time.Time
		writes  uint64 // at the resume; 5 when the outage began
		leader  bool
		want    bool
		contact time.Time
	}{
		{"long outage, writes missed, leader", long, 6, true, true, t0},
		{"short outage", short, 6, true, false, t0},
		{"no writes during the outage", long, 5, true, false, t0},
		{"not the leader any more", long, 6, false, false, t0},
		{"never contacted: the outage starts at the first failure", long, 6, true, true, time.Time{}},
	}
	for _, tc := range cases {
		w := newCatchUpWatcher()
		w.failed("n2", tc.contact, t0, 5)
		// Later failures of the same outage move neither its start nor its
		// write count.
		w.failed("n2", t0.Add(time.Second), t0.Add(time.Second), 6)
		if got := w.resumed("n2", tc.resume, tc.writes, tc.leader); got != tc.want {
			t.Errorf("%s: resumed = %v, want %v", tc.name, got, tc.want)
		}
		if w.resumed("n2", tc.resume.Add(time.Minute), tc.writes+1, true) {
			t.Errorf("%s: a second resume without a new outage asked for a transfer", tc.name)
		}
	}
	w := newCatchUpWatcher()
	w.failed("n3", t0, t0, 1)
	w.reset()
	if w.resumed("n3", long, 2, true) {
		t.Error("an outage noted before leadership was lost asked for a transfer")
	}
	if w.resumed("n4", long, 2, true) {
		t.Error("a resume without a noted outage asked for a transfer")
	}
	w.failed("n5", t0, t0, 1)
	w.removed("n5")
	w.failed("n5", long, long, 2) // added back, then failing again: a new outage
	if w.resumed("n5", long.Add(time.Second), 3, true) {
		t.Error("an outage noted before the server was removed counted for its return")
	}
}
