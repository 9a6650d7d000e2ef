package chaos

import (
	"strings"
	"testing"
	"time"
)

func TestChecksRecordEveryComparison(t *testing.T) {
	node := newFakeNode(t)
	channels := ChannelNames("t", "room", 5)
	w := startTestWorkload(t, []string{node.URL()}, channels)
	w.Stop() // a frozen model
	tb := &recordingTB{TB: t}
	checks := &Checks{T: tb, Checker: newTestChecker(t, []string{node.URL()}, w, channels), Began: time.Now()}
	if res := checks.Converge("clean", 5*time.Second); !res.OK() {
		t.Fatalf("Converge against a correct node: %v", res)
	}
	node.set(func(f *fakeNode) { f.ghost = "nobody" })
	if res := checks.CheckNow("ghosts"); res.Ghosts != len(channels) {
		t.Fatalf("CheckNow: %v, want a ghost in every channel", res)
	}
	if s := checks.Summary; s.Ghosts != int64(len(channels)) || s.UsersChecked == 0 || s.OK() {
		t.Errorf("summary %+v: want both comparisons added", s)
	}
	if len(tb.errors) != 0 {
		t.Errorf("a comparison that read every channel failed the test: %v", tb.errors)
	}
	node.set(func(f *fakeNode) { f.unavail = true })
	checks.Converge("down", 50*time.Millisecond)
	if len(tb.errors) != 1 || !strings.HasPrefix(tb.errors[0], "down: ") {
		t.Errorf("errors %v, want the unreadable comparison", tb.errors)
	}
}
