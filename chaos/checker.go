package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/presencehq/presence/clock"
)

// Defaults of CheckerConfig.
const (
	DefaultCheckInterval = 250 * time.Millisecond
	// getBatch is the API's limit of channels per GET.
	getBatch = 50
	// maxExamples bounds the descriptions kept for a report.
	maxExamples = 10
)

// ErrNoRead means a check could not read every channel from any node.
var ErrNoRead = errors.New("chaos: channels could not be read")

// CheckerConfig configures a Checker.
type CheckerConfig struct {
	Pool     *Pool    // reads through random nodes; required
	Model    *Model   // what must be; required
	Channels []string // channels to read; nil = every channel the model knows
	Token    string   // bearer token for the reads; "" = anonymous (public channels)
	// Interval is the pause between two attempts of Converge; 0 =
	// DefaultCheckInterval.
	Interval time.Duration
	Clock    clock.Clock // the workload's clock; nil = clock.Real
}

// CheckResult is the outcome of one comparison of the cluster with the model.
type CheckResult struct {
	Channels     int      // channels read
	UsersChecked int      // user-channel pairs that had to be present
	Lost         int      // of those, missing
	Ghosts       int      // user-channel pairs listed that had to be absent
	Missing      int      // channels a node answered null for
	OverCap      int      // channels read with more users than the model's MaxUsers
	Attempts     int      // comparisons made (Converge)
	Examples     []string // a few lost and ghost pairs with their history, for the report
}

// OK reports whether nothing was lost, invented or missing.
func (r CheckResult) OK() bool {
	return r.Lost == 0 && r.Ghosts == 0 && r.Missing == 0 && r.OverCap == 0
}

func (r CheckResult) String() string {
	s := fmt.Sprintf("%d channels, %d users checked, %d lost, %d ghosts, %d missing channels after %d attempt(s)",
		r.Channels, r.UsersChecked, r.Lost, r.Ghosts, r.Missing, r.Attempts)
	if r.OverCap > 0 {
		s += fmt.Sprintf(", %d over max_users", r.OverCap)
	}
	return s
}

// Checker compares the users of every channel with a model.
type Checker struct {
	cfg CheckerConfig
}

// NewChecker returns a Checker.
func NewChecker(cfg CheckerConfig) (*Checker, error) {
	if cfg.Pool == nil || cfg.Model == nil {
		return nil, errors.New("chaos: Checker needs a Pool and a Model")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultCheckInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	return &Checker{cfg: cfg}, nil
}

// channelJSON is one channel of a /presence/get answer.
type channelJSON struct {
	Count int `json:"count"`
	Users []struct {
		ID string `json:"id"`
	} `json:"users"`
}

// Check reads every channel once, in batches through random nodes, and
// compares each batch with the model for the time the batch was in flight.
func (c *Checker) Check(ctx context.Context) (CheckResult, error) {
	channels := c.cfg.Channels
	if channels == nil {
		channels = c.cfg.Model.Channels()
	}
	res := CheckResult{Attempts: 1}
	for start := 0; start < len(channels); start += getBatch {
		batch := channels[start:min(start+getBatch, len(channels))]
		if err := c.checkBatch(ctx, batch, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// checkBatch reads batch and adds its comparison to res.
func (c *Checker) checkBatch(ctx context.Context, batch []string, res *CheckResult) error {
	q := url.Values{"channels[]": batch}
	from := c.cfg.Clock.Now()
	resp, err := c.cfg.Pool.Do(ctx, Request{Method: http.MethodGet, Path: "/presence/get?" + q.Encode(), Token: c.cfg.Token})
	to := c.cfg.Clock.Now()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoRead, err)
	}
	if resp.Status != http.StatusOK {
		return fmt.Errorf("%w: %s answered %d %s", ErrNoRead, resp.URL, resp.Status, strings.TrimSpace(string(resp.Body)))
	}
	var got map[string]*channelJSON
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNoRead, resp.URL, err)
	}
	for _, ch := range batch {
		res.Channels++
		compare(ch, got[ch], c.cfg.Model.Expect(ch, from, to), resp.URL, res, c.cfg.Model.Describe)
		if limit := c.cfg.Model.MaxUsers(); limit > 0 && got[ch] != nil && len(got[ch].Users) > limit {
			// No merge of two histories happens without a partition or
			// a paused owner: one crash never makes a channel exceed
			// its cap.
			res.OverCap++
			res.example("over the cap: %s lists %d users (max_users %d) via %s", ch, len(got[ch].Users), limit, resp.URL)
		}
	}
	return nil
}

// compare adds one channel's differences from the model to res.
func compare(channel string, got *channelJSON, want map[string]Expectation, via string, res *CheckResult,
	describe func(channel, user string) string) {
	listed := map[string]bool{}
	if got == nil {
		res.Missing++
		res.example("channel %s: null via %s", channel, via)
	} else {
		for _, u := range got.Users {
			listed[u.ID] = true
		}
	}
	users := make([]string, 0, len(want))
	for u := range want {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		if want[u] != MustBePresent {
			continue
		}
		res.UsersChecked++
		if !listed[u] {
			res.Lost++
			res.example("lost: %s in %s (via %s) [%s]", u, channel, via, describe(channel, u))
		}
	}
	for u := range listed {
		if want[u] == MustBeAbsent {
			res.Ghosts++
			res.example("ghost: %s in %s (via %s) [%s]", u, channel, via, describe(channel, u))
		}
	}
}

func (r *CheckResult) example(format string, args ...any) {
	if len(r.Examples) < maxExamples {
		r.Examples = append(r.Examples, fmt.Sprintf(format, args...))
	}
}

// Converge repeats Check until one finds nothing lost, invented or missing,
// or until within has passed; it returns the last comparison. The error is
// set only when no attempt could read every channel.
func (c *Checker) Converge(ctx context.Context, within time.Duration) (CheckResult, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last CheckResult
	var lastErr error
	read := false
	for attempts := 1; ; attempts++ {
		res, err := c.Check(ctx)
		if err == nil {
			read, last = true, res
		} else {
			lastErr = err
		}
		last.Attempts = attempts
		if err == nil && res.OK() {
			return last, nil
		}
		if !sleep(ctx, c.cfg.Interval) {
			break
		}
	}
	if !read {
		return last, lastErr
	}
	return last, nil
}
