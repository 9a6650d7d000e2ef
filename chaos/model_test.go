package chaos

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// at is t0 plus s seconds.
func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func newTestModel(t *testing.T, stale time.Duration) *Model {
	t.Helper()
	m, err := NewModel(ModelConfig{Timeout: 60 * time.Second, StaleApply: stale, Slack: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// expectAt reads what the model says of user u in channel ch for a read
// served exactly at s.
func expectAt(m *Model, ch, u string, s float64) Expectation {
	return m.Expect(ch, at(s), at(s))[u]
}

type probe struct {
	at   float64
	want Expectation
}

func checkProbes(t *testing.T, m *Model, ch, u string, probes []probe) {
	t.Helper()
	for _, p := range probes {
		if got := expectAt(m, ch, u, p.at); got != p.want {
			t.Errorf("%s in %s at %vs: %v, want %v", u, ch, p.at, got, p.want)
		}
	}
}

func TestModelAcknowledgedPresentExpires(t *testing.T) {
	m := newTestModel(t, 0)
	a := m.Begin("c1", "u1", []string{"/a"}, nil, at(0))
	checkProbes(t, m, "/a", "u1", []probe{{0.5, MayBePresent}})
	a.Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(1)})
	checkProbes(t, m, "/a", "u1", []probe{
		{0.5, MayBePresent},   // before the answer: maybe not applied yet
		{1, MustBePresent},    // answered
		{58.9, MustBePresent}, // sent at 0, timeout 60, slack 1
		{59.5, MayBePresent},
		{62.9, MayBePresent}, // answered at 1: expires by 1+60+1 (precision), +1 slack
		{63, MustBeAbsent},
	})
	if got := expectAt(m, "/b", "u1", 10); got != MustBeAbsent {
		t.Errorf("a channel the client never entered: %v", got)
	}
}

func TestModelReadWindowMustCoverTheAnswer(t *testing.T) {
	m := newTestModel(t, 0)
	m.Begin("c1", "u1", []string{"/a"}, nil, at(0)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(2)})
	// A read that may have been served before the answer arrived.
	if got := m.Expect("/a", at(1), at(3))["u1"]; got != MayBePresent {
		t.Errorf("read over [1,3]: %v, want %v", got, MayBePresent)
	}
	// A read that may have been served after the timeout.
	if got := m.Expect("/a", at(50), at(70))["u1"]; got != MayBePresent {
		t.Errorf("read over [50,70]: %v, want %v", got, MayBePresent)
	}
}

func TestModelLeave(t *testing.T) {
	m := newTestModel(t, 0)
	m.Begin("c1", "u1", []string{"/a"}, nil, at(0)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(1)})
	leave := m.Begin("c1", "u1", nil, []string{"/a"}, at(10))
	checkProbes(t, m, "/a", "u1", []probe{
		{9.9, MustBePresent}, // read before the leave was sent
		{10.5, MayBePresent}, // while it is in flight
	})
	leave.Done(Outcome{OK: true, At: at(11)})
	checkProbes(t, m, "/a", "u1", []probe{
		{9.9, MayBePresent}, // judged after the leave: conservative
		{10.5, MayBePresent},
		{11, MustBeAbsent}, // acknowledged
		{30, MustBeAbsent},
	})
}

func TestModelFailedPresentMayApplyLate(t *testing.T) {
	m := newTestModel(t, 20*time.Second)
	m.Begin("c1", "u1", []string{"/a"}, nil, at(0)).Done(Outcome{At: at(3)})
	checkProbes(t, m, "/a", "u1", []probe{
		{1, MayBePresent},
		{84, MayBePresent}, // failed at 3, stale 20, timeout 60, precision 1
		{85.1, MustBeAbsent},
	})
	// A leave acknowledged before the stale window closed does not end it.
	m.Begin("c1", "u1", nil, []string{"/a"}, at(10)).Done(Outcome{OK: true, At: at(11)})
	checkProbes(t, m, "/a", "u1", []probe{{12, MayBePresent}})
	// A leave sent after the stale window does.
	m.Begin("c1", "u1", nil, []string{"/a"}, at(24)).Done(Outcome{OK: true, At: at(25)})
	checkProbes(t, m, "/a", "u1", []probe{{25, MustBeAbsent}})
}

func TestModelFailedLeaveBlocksMustUntilANewerPresent(t *testing.T) {
	m := newTestModel(t, 5*time.Second)
	m.Begin("c1", "u1", []string{"/a"}, nil, at(0)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(1)})
	m.Begin("c1", "u1", nil, []string{"/a"}, at(2)).Done(Outcome{At: at(4)})
	m.Begin("c1", "u1", []string{"/a"}, nil, at(5)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(6)})
	// The failed leave may apply until 9, after the present sent at 5.
	checkProbes(t, m, "/a", "u1", []probe{{7, MayBePresent}})
	m.Begin("c1", "u1", []string{"/a"}, nil, at(10)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(11)})
	checkProbes(t, m, "/a", "u1", []probe{{11, MustBePresent}})
}

func TestModelRejectedPresentIsAbsent(t *testing.T) {
	m := newTestModel(t, 0)
	m.Begin("c1", "u1", []string{"/a"}, nil, at(0)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": false}, At: at(1)})
	checkProbes(t, m, "/a", "u1", []probe{{2, MustBeAbsent}})
}

func TestModelUserIsPresentWhenAnyClientIs(t *testing.T) {
	m := newTestModel(t, 0)
	m.Begin("c1", "u1", []string{"/a"}, nil, at(0)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(1)})
	m.Begin("c2", "u1", []string{"/a"}, nil, at(0)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(1)})
	m.Begin("c1", "u1", nil, []string{"/a"}, at(2)).Done(Outcome{OK: true, At: at(3)})
	checkProbes(t, m, "/a", "u1", []probe{{4, MustBePresent}})
	m.Begin("c2", "u1", nil, []string{"/a"}, at(5)).Done(Outcome{OK: true, At: at(6)})
	checkProbes(t, m, "/a", "u1", []probe{{6, MustBeAbsent}})
	must, may := m.Counts(at(7))
	if must != 0 || may != 0 {
		t.Errorf("Counts at 7, after every leave: must %d, may %d", must, may)
	}
}

func TestModelCounts(t *testing.T) {
	m := newTestModel(t, 0)
	m.Begin("c1", "u1", []string{"/a", "/b"}, nil, at(0)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true, "/b": true}, At: at(1)})
	m.Begin("c2", "u2", []string{"/a"}, nil, at(0))
	must, may := m.Counts(at(2))
	if must != 2 || may != 1 {
		t.Errorf("Counts: must %d, may %d; want 2 and 1", must, may)
	}
	if got := m.Channels(); len(got) != 2 || got[0] != "/a" || got[1] != "/b" {
		t.Errorf("Channels: %v", got)
	}
}

func TestNewModelRejectsBadConfig(t *testing.T) {
	for _, cfg := range []ModelConfig{{}, {Timeout: time.Second, StaleApply: -1}, {Timeout: time.Second, Slack: -1}} {
		if _, err := NewModel(cfg); !errors.Is(err, ErrBadModelConfig) {
			t.Errorf("NewModel(%+v): %v, want ErrBadModelConfig", cfg, err)
		}
	}
}

func TestModelLateAttemptsWidenTheWindows(t *testing.T) {
	m := newTestModel(t, 10*time.Second)
	// Acknowledged at 1, but an earlier attempt may still apply until 11.
	m.Begin("c1", "u1", []string{"/a"}, nil, at(0)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, Late: true, At: at(1)})
	checkProbes(t, m, "/a", "u1", []probe{{1, MustBePresent}, {72.9, MayBePresent}, {73, MustBeAbsent}})
	// A leave sent before 11 cannot end it; one sent after can.
	m.Begin("c1", "u1", nil, []string{"/a"}, at(5)).Done(Outcome{OK: true, At: at(6)})
	checkProbes(t, m, "/a", "u1", []probe{{7, MayBePresent}})
	m.Begin("c1", "u1", nil, []string{"/a"}, at(12)).Done(Outcome{OK: true, Late: true, At: at(13)})
	checkProbes(t, m, "/a", "u1", []probe{{13, MustBeAbsent}})
	// The late leave may apply until 23: a present sent before then is not certain.
	m.Begin("c1", "u1", []string{"/a"}, nil, at(20)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(21)})
	checkProbes(t, m, "/a", "u1", []probe{{22, MayBePresent}})
	m.Begin("c1", "u1", []string{"/a"}, nil, at(24)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(25)})
	checkProbes(t, m, "/a", "u1", []probe{{25, MustBePresent}})
}

func newCappedModel(t *testing.T, maxUsers int) *Model {
	t.Helper()
	m, err := NewModel(ModelConfig{Timeout: 60 * time.Second, Slack: time.Second, MaxUsers: maxUsers})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// presentAt records client (of user) sending a present of ch at s,
// answered with admitted at s+0.1.
func presentAt(m *Model, client, user, ch string, s float64, admitted bool) {
	m.Begin(client, user, []string{ch}, nil, at(s)).Done(Outcome{OK: true, Answer: map[string]bool{ch: admitted}, At: at(s + 0.1)})
}

func TestModelJudgesAnswersByTheCap(t *testing.T) {
	cases := map[string]struct {
		steps      func(m *Model)
		violations int64
	}{
		"a new user refused from a full channel": {func(m *Model) {
			presentAt(m, "a1", "a", "/c", 0, true)
			presentAt(m, "b1", "b", "/c", 1, true)
			presentAt(m, "z1", "z", "/c", 2, false)
		}, 0},
		"a new user admitted into a full channel": {func(m *Model) {
			presentAt(m, "a1", "a", "/c", 0, true)
			presentAt(m, "b1", "b", "/c", 1, true)
			presentAt(m, "z1", "z", "/c", 2, true)
		}, 1},
		"a new user refused from a channel with room": {func(m *Model) {
			presentAt(m, "a1", "a", "/c", 0, true)
			presentAt(m, "z1", "z", "/c", 2, false)
		}, 1},
		"heartbeats and second clients of present users": {func(m *Model) {
			presentAt(m, "a1", "a", "/c", 0, true)
			presentAt(m, "b1", "b", "/c", 1, true)
			presentAt(m, "a1", "a", "/c", 30, true)
			presentAt(m, "b2", "b", "/c", 31, true)
		}, 0},
		"a heartbeat refused": {func(m *Model) {
			presentAt(m, "a1", "a", "/c", 0, true)
			presentAt(m, "b1", "b", "/c", 1, true)
			presentAt(m, "b1", "b", "/c", 30, false)
		}, 1},
		"room after a leave": {func(m *Model) {
			presentAt(m, "a1", "a", "/c", 0, true)
			presentAt(m, "b1", "b", "/c", 1, true)
			m.Begin("a1", "a", nil, []string{"/c"}, at(5)).Done(Outcome{OK: true, At: at(5.1)})
			presentAt(m, "z1", "z", "/c", 6, false) // a left for sure: z must be admitted
		}, 1},
		"room after an expiry": {func(m *Model) {
			presentAt(m, "a1", "a", "/c", 0, true)
			presentAt(m, "b1", "b", "/c", 40, true)
			presentAt(m, "z1", "z", "/c", 70, true) // a expired by 62.1
		}, 0},
		"a user who may be present either way": {func(m *Model) {
			presentAt(m, "a1", "a", "/c", 0, true)
			presentAt(m, "b1", "b", "/c", 1, true)
			m.Begin("b1", "b", nil, []string{"/c"}, at(5)) // a leave in flight
			presentAt(m, "z1", "z", "/c", 6, true)
			presentAt(m, "y1", "y", "/c", 7, false)
		}, 0},
		"a late answer may admit": {func(m *Model) {
			presentAt(m, "a1", "a", "/c", 0, true)
			presentAt(m, "b1", "b", "/c", 1, true)
			m.Begin("z1", "z", []string{"/c"}, nil, at(2)).Done(Outcome{OK: true, Answer: map[string]bool{"/c": true}, Late: true, At: at(3)})
		}, 0},
		"failed requests are not judged": {func(m *Model) {
			presentAt(m, "a1", "a", "/c", 0, true)
			m.Begin("z1", "z", []string{"/c"}, nil, at(2)).Done(Outcome{At: at(3)})
		}, 0},
	}
	for name, c := range cases {
		m := newCappedModel(t, 2)
		c.steps(m)
		refused, violations, examples := m.CapJudgements()
		if violations != c.violations || int64(len(examples)) != violations {
			t.Errorf("%s: %d violations %v (%d refused), want %d", name, violations, examples, refused, c.violations)
		}
	}
	// Without a cap nothing is judged.
	m := newTestModel(t, 0)
	presentAt(m, "z1", "z", "/c", 0, false)
	if refused, violations, _ := m.CapJudgements(); refused != 0 || violations != 0 {
		t.Errorf("without a cap: %d refused, %d violations", refused, violations)
	}
	if _, err := NewModel(ModelConfig{Timeout: time.Second, MaxUsers: -1}); !errors.Is(err, ErrBadModelConfig) {
		t.Errorf("negative cap: %v", err)
	}
}

// TestModelHeartbeatJustBeforeACrashMayBeUndone: a heartbeat answered less
// than RefreshLag before a crash may be missing from the promoted copy, so
// the client must be present only until its previous present expires; an
// enter, replicated before its answer, and a heartbeat far from any crash
// keep their full window.
func TestModelHeartbeatJustBeforeACrashMayBeUndone(t *testing.T) {
	m := newTestModel(t, 0)
	present := func(client string, sent, answered float64) {
		m.Begin(client, "u-"+client, []string{"/a"}, nil, at(sent)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(answered)})
	}
	present("c1", 0, 0.1)   // enter
	present("c1", 25, 25.1) // heartbeat, crash at 25.5 below
	present("c2", 20, 20.1) // enter just before the crash: replicated before its answer
	present("c3", 0, 0.1)
	present("c3", 10, 10.1) // heartbeat long before the crash
	m.NoteCrash(at(25.5))
	checkProbes(t, m, "/a", "u-c1", []probe{{58, MustBePresent}, {60, MayBePresent}, {80, MayBePresent}})
	checkProbes(t, m, "/a", "u-c2", []probe{{78, MustBePresent}})
	checkProbes(t, m, "/a", "u-c3", []probe{{68, MustBePresent}})
}

// TestModelTwoHeartbeatsUndoneByTwoCrashes: each of two heartbeats was
// answered just before a crash (of the node holding the channel then), so
// both may be missing from the copy promoted last: the client must be
// present only until its enter expires. The kill test judged it by the
// heartbeat before the last one and reported it lost: k204 entered at
// 16:41:44.0, its heartbeats just before the kills at 16:42:10.8 and
// 16:42:35.2 were both undone, and it expired at 16:42:45.6.
func TestModelTwoHeartbeatsUndoneByTwoCrashes(t *testing.T) {
	m := newTestModel(t, 0)
	present := func(sent, answered float64) {
		m.Begin("c1", "u1", []string{"/a"}, nil, at(sent)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(answered)})
	}
	present(0, 0.1)   // enter
	present(25, 25.1) // heartbeat, crash at 25.5
	present(50, 50.1) // heartbeat, crash at 50.5
	m.NoteCrash(at(25.5))
	m.NoteCrash(at(50.5))
	checkProbes(t, m, "/a", "u1", []probe{{58, MustBePresent}, {60, MayBePresent}, {100, MayBePresent}})
	// A third heartbeat far from any crash is certain again.
	present(75, 75.1)
	checkProbes(t, m, "/a", "u1", []probe{{133, MustBePresent}})
}

// TestModelWidensMayAfterACrashByThePromotionGrace: a node that crashes
// while a client's present may be in its state has the copy of it
// promoted elsewhere, with expiries PromotionGrace later; a crash before
// the present could apply, or after the client expired, moves nothing.
func TestModelWidensMayAfterACrashByThePromotionGrace(t *testing.T) {
	for name, c := range map[string]struct {
		crash float64
		until float64 // the last second the client may be listed
	}{
		"no crash":                         {-1, 63},
		"a crash while the client is in":   {30, 64},
		"a crash right after the answer":   {1.5, 64},
		"a crash long before the present":  {-70, 63},
		"a crash after the client expired": {64, 63},
	} {
		t.Run(name, func(t *testing.T) {
			m := newTestModel(t, 0)
			if c.crash != -1 {
				m.NoteCrash(at(c.crash))
			}
			m.Begin("c1", "u1", []string{"/a"}, nil, at(0)).Done(Outcome{OK: true, Answer: map[string]bool{"/a": true}, At: at(1)})
			checkProbes(t, m, "/a", "u1", []probe{{c.until - 0.1, MayBePresent}, {c.until, MustBeAbsent}})
		})
	}
	// The cap judges by the same window: a present refused while the
	// first user may still be listed, its copy promoted, is explained.
	for crash, want := range map[bool]int64{false: 1, true: 0} {
		m := newCappedModel(t, 3)
		presentAt(m, "a1", "a", "/c", 0, true)
		presentAt(m, "b1", "b", "/c", 40, true)
		presentAt(m, "d1", "d", "/c", 41, true)
		if crash {
			m.NoteCrash(at(60))
		}
		presentAt(m, "z1", "z", "/c", 62.5, false) // a: answered at 0.1, listed until 62.1, 63.1 after a crash
		if _, violations, examples := m.CapJudgements(); violations != want {
			t.Errorf("crash %v: violations %d (%v), want %d", crash, violations, examples, want)
		}
	}
}
