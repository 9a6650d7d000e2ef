package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// startTestWorkload runs a fast workload against node and waits until
// every client entered.
func startTestWorkload(t *testing.T, urls []string, channels []string) *Workload {
	t.Helper()
	w, err := NewWorkload(WorkloadConfig{
		Pool: NewTestPool(t, urls), Tokens: NewTestTokens(t, testSecret), Channels: channels,
		Users: 20, ClientsPerUser: 2, ChannelsPerClient: 2,
		Heartbeat: 20 * time.Millisecond, Churn: 30 * time.Millisecond, Vanish: 0.05,
		Timeout: time.Minute, Duration: time.Minute, Seed: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.WaitEntered(ctx); err != nil {
		t.Fatal(err)
	}
	return w
}

func newTestChecker(t *testing.T, urls []string, w *Workload, channels []string) *Checker {
	t.Helper()
	c, err := NewChecker(CheckerConfig{Pool: NewTestPool(t, urls), Model: w.Model(), Channels: channels, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitMoves polls until the workload has moved clients at least n times.
func waitMoves(t *testing.T, w *Workload, n int64) {
	t.Helper()
	testkit.WaitForErr(t, 10*time.Second, func() error {
		if moves := w.Stats().Moves; moves < n {
			return fmt.Errorf("only %d moves", moves)
		}
		return nil
	})
}

func TestWorkloadAgreesWithACorrectNode(t *testing.T) {
	node := newFakeNode(t)
	channels := ChannelNames("t", "room", 120)
	w := startTestWorkload(t, []string{node.URL()}, channels)
	waitMoves(t, w, 50)
	checker := newTestChecker(t, []string{node.URL()}, w, channels)
	for range 5 {
		res, err := checker.Check(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !res.OK() || res.Channels != len(channels) {
			t.Fatalf("check against a correct node: %v %v", res, res.Examples)
		}
	}
	w.Stop()
	checkFrozen(t, checker, "against a correct node")
	node.mu.Lock()
	maxBatch := node.maxBatch
	node.mu.Unlock()
	if maxBatch != getBatch {
		t.Errorf("largest read: %d channels, want batches of %d", maxBatch, getBatch)
	}
	st := w.Stats()
	if st.Failed != 0 || st.Rejected != 0 || st.Entered != int64(w.Clients()) {
		t.Errorf("workload stats: %+v", st)
	}
}

func TestCheckerFindsLostAndGhostUsers(t *testing.T) {
	node := newFakeNode(t)
	channels := ChannelNames("t", "room", 10)
	w := startTestWorkload(t, []string{node.URL()}, channels)
	w.Stop() // a frozen model: everyone entered stays "must" for a minute
	checker := newTestChecker(t, []string{node.URL()}, w, channels)

	lostIn := ""
	now := time.Now()
	for _, ch := range channels {
		for _, e := range w.Model().Expect(ch, now, now) {
			if e == MustBePresent {
				lostIn = ch
			}
		}
	}
	if lostIn == "" {
		t.Fatal("no channel with a user that must be present")
	}
	node.set(func(f *fakeNode) { f.forget, f.ghost = lostIn, "nobody" })
	res, err := checker.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Lost == 0 || res.Ghosts != len(channels) || res.OK() {
		t.Errorf("result %v, want lost users in %s and a ghost in every channel", res, lostIn)
	}
	if len(res.Examples) == 0 || !strings.Contains(strings.Join(res.Examples, " "), "ghost: nobody") {
		t.Errorf("examples: %v", res.Examples)
	}

	node.set(func(f *fakeNode) { f.forget, f.ghost = "", "" })
	res, err = checker.Converge(context.Background(), 5*time.Second)
	if err != nil || !res.OK() {
		t.Errorf("after the repair: %v, %v", res, err)
	}
}

func TestConvergeReportsTheLastComparison(t *testing.T) {
	node := newFakeNode(t)
	channels := ChannelNames("t", "room", 5)
	w := startTestWorkload(t, []string{node.URL()}, channels)
	w.Stop()
	node.set(func(f *fakeNode) { f.ghost = "nobody" })
	checker := newTestChecker(t, []string{node.URL()}, w, channels)
	res, err := checker.Converge(context.Background(), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ghosts != len(channels) || res.Attempts < 2 {
		t.Errorf("result %v: want %d ghosts after several attempts", res, len(channels))
	}
	node.set(func(f *fakeNode) { f.unavail = true })
	if _, err := checker.Converge(context.Background(), 100*time.Millisecond); !errors.Is(err, ErrNoRead) {
		t.Errorf("with every node down: %v, want ErrNoRead", err)
	}
}

func TestWorkloadFailsOverAndModelsFailures(t *testing.T) {
	up, down := newFakeNode(t), newFakeNode(t)
	down.set(func(f *fakeNode) { f.unavail = true })
	channels := ChannelNames("t", "room", 30)
	w := startTestWorkload(t, []string{down.URL(), up.URL()}, channels)
	waitMoves(t, w, 20)
	checker := newTestChecker(t, []string{down.URL(), up.URL()}, w, channels)
	res, err := checker.Check(context.Background())
	if err != nil || !res.OK() {
		t.Fatalf("through a node that answers 503 and one that works: %v, %v", res, err)
	}
	w.Stop()
	checkFrozen(t, checker, "through a node that answers 503 and one that works")
}

// checkFrozen checks a stopped workload, whose acknowledged users all stay
// "must be present" for the channel timeout. A check while the workload runs
// may rightly find no user it can require: every client heartbeats every
// 20 ms, and a heartbeat answered during the read leaves that client only a
// "may" (the model judges on the latest history), so a slow read under -race
// requires nobody and proves nothing about loss.
func checkFrozen(t *testing.T, checker *Checker, what string) {
	t.Helper()
	res, err := checker.Check(context.Background())
	if err != nil || !res.OK() || res.UsersChecked == 0 {
		t.Fatalf("%s, workload stopped: %v, %v %v", what, res, err, res.Examples)
	}
}

func TestNewWorkloadValidates(t *testing.T) {
	pool, _ := NewPool(PoolConfig{URLs: []string{"http://127.0.0.1:1"}})
	tokens, _ := NewTokens(testSecret)
	good := WorkloadConfig{
		Pool: pool, Tokens: tokens, Channels: []string{"/a/1", "/a/2"}, Users: 1,
		Heartbeat: time.Second, Timeout: time.Minute, Duration: time.Minute,
	}
	if _, err := NewWorkload(good); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	bad := []func(c *WorkloadConfig){
		func(c *WorkloadConfig) { c.Pool = nil },
		func(c *WorkloadConfig) { c.Users = 0 },
		func(c *WorkloadConfig) { c.Channels = c.Channels[:1] },
		func(c *WorkloadConfig) { c.Heartbeat = c.Timeout },
		func(c *WorkloadConfig) { c.Duration = 0 },
		func(c *WorkloadConfig) { c.Vanish = 2 },
	}
	for i, mutate := range bad {
		cfg := good
		mutate(&cfg)
		if _, err := NewWorkload(cfg); !errors.Is(err, ErrBadWorkloadConfig) {
			t.Errorf("bad config %d: %v, want ErrBadWorkloadConfig", i, err)
		}
	}
}

// startCappedWorkload runs a workload of 30 users (2 clients each) over 6
// channels of at most 3 users against urls.
func startCappedWorkload(t *testing.T, urls []string, channels []string) *Workload {
	t.Helper()
	w, err := NewWorkload(WorkloadConfig{
		Pool: NewTestPool(t, urls), Tokens: NewTestTokens(t, testSecret), Channels: channels,
		Users: 30, ClientsPerUser: 2, Heartbeat: 20 * time.Millisecond, Churn: 30 * time.Millisecond,
		Timeout: time.Minute, Duration: time.Minute, Seed: 11, MaxUsers: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.WaitEntered(ctx); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestCappedWorkloadAgreesWithANodeThatCaps(t *testing.T) {
	node := newFakeNode(t)
	node.set(func(f *fakeNode) { f.maxUsers = 3 })
	channels := ChannelNames("t", "cap", 6)
	w := startCappedWorkload(t, []string{node.URL()}, channels)
	waitMoves(t, w, 100)
	w.Stop()
	checker := newTestChecker(t, []string{node.URL()}, w, channels)
	checkFrozen(t, checker, "against a node that caps")
	st := w.Stats()
	refused, violations, examples := w.Model().CapJudgements()
	if st.Rejected != 0 || st.Full == 0 || refused != st.Full || violations != 0 {
		t.Fatalf("stats %+v, %d refused, %d violations %v", st, refused, violations, examples)
	}
	var s Summary
	s.AddCaps(w.Model())
	if !s.OK() || !strings.Contains(s.String(), "refused by max_users") {
		t.Fatalf("summary %s", s.String())
	}
}

func TestCappedWorkloadCatchesANodeThatIgnoresTheCap(t *testing.T) {
	node := newFakeNode(t) // no cap
	channels := ChannelNames("t", "cap", 6)
	w := startCappedWorkload(t, []string{node.URL()}, channels)
	waitCapViolations(t, w, "a node admitting everyone into channels of 3")
	w.Stop()
	res, err := newTestChecker(t, []string{node.URL()}, w, channels).Check(context.Background())
	if err != nil || res.OverCap == 0 || res.OK() {
		t.Fatalf("check: %v %v", res, err)
	}
	var s Summary
	s.AddCheck(res)
	s.AddCaps(w.Model())
	if s.OK() || s.OverCap == 0 || s.CapViolations == 0 {
		t.Fatalf("summary %s", s.String())
	}
}

func TestCappedWorkloadCatchesANodeThatRefusesTooSoon(t *testing.T) {
	node := newFakeNode(t)
	node.set(func(f *fakeNode) { f.maxUsers = 2 }) // the workload's channels take 3
	channels := ChannelNames("t", "cap", 6)
	w := startCappedWorkload(t, []string{node.URL()}, channels)
	waitCapViolations(t, w, "a node refusing the third user of channels of 3")
}

// waitCapViolations waits until the model of w has judged an answer the
// cap cannot explain. Whether one answer can be judged depends on the
// requests in flight at the time (a present in flight may or may not have
// applied), so the test waits for one instead of counting.
func waitCapViolations(t *testing.T, w *Workload, node string) {
	t.Helper()
	testkit.WaitForErr(t, 20*time.Second, func() error {
		if _, violations, _ := w.Model().CapJudgements(); violations == 0 {
			return fmt.Errorf("%s went unnoticed (%+v)", node, w.Stats())
		}
		return nil
	})
}
