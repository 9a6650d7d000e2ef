package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/clock"
)

// Defaults of WorkloadConfig.
const (
	DefaultMaxRequests = 1_000_000
	defaultIDPrefix    = "u"
)

// ErrBadWorkloadConfig is returned by NewWorkload for a configuration it
// cannot use.
var ErrBadWorkloadConfig = errors.New("chaos: invalid workload configuration")

// WorkloadConfig configures a Workload.
type WorkloadConfig struct {
	Pool     *Pool    // sends the updates; required
	Tokens   *Tokens  // mints the users' tokens; required
	Channels []string // channels the clients use; required, more than ChannelsPerClient

	Users             int // simulated users; required
	ClientsPerUser    int // clients (tabs) per user; 0 = 1
	ChannelsPerClient int // channels each client is in at once; 0 = 1

	// Heartbeat is the pause between a client's updates (±10%); required
	// and shorter than Timeout.
	Heartbeat time.Duration
	// Churn is the mean pause between a client's moves (leave one channel,
	// enter another in the same update); 0 = clients never move.
	Churn time.Duration
	// Vanish is the probability that a move is instead a silent stop (a
	// closed tab whose leave never arrived): the client lingers until its
	// timeout. 0 = never.
	Vanish float64
	// Ramp spreads the clients' first updates; 0 = all at once.
	Ramp time.Duration

	// Timeout is the channels' configured client timeout; required.
	Timeout time.Duration
	// MaxUsers is the channels' configured max_users; 0 = no cap. With a
	// cap, a present answered false is expected (Stats.Full), and the
	// model judges every answer (Model.CapJudgements).
	MaxUsers int
	// StaleApply: see ModelConfig.StaleApply.
	StaleApply time.Duration
	// Slack: see ModelConfig.Slack.
	Slack time.Duration

	// Duration bounds the run: clients stop after it; required.
	Duration time.Duration
	// MaxRequests bounds the updates sent; 0 = DefaultMaxRequests.
	MaxRequests int64
	// IDPrefix starts every user id ("<prefix><n>"); "" = "u". Workloads
	// sharing channels need distinct prefixes.
	IDPrefix string
	Seed     uint64       // randomness; the same seed makes the same choices
	Clock    clock.Clock  // timestamps of the model; nil = clock.Real
	Logger   *slog.Logger // nil = slog.Default()
}

func (c *WorkloadConfig) validate() error {
	if c.ClientsPerUser == 0 {
		c.ClientsPerUser = 1
	}
	if c.ChannelsPerClient == 0 {
		c.ChannelsPerClient = 1
	}
	if c.MaxRequests == 0 {
		c.MaxRequests = DefaultMaxRequests
	}
	if c.IDPrefix == "" {
		c.IDPrefix = defaultIDPrefix
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.Pool == nil, c.Tokens == nil:
		return fmt.Errorf("%w: Pool and Tokens are required", ErrBadWorkloadConfig)
	case c.Users <= 0, c.ClientsPerUser < 0, c.ChannelsPerClient < 0:
		return fmt.Errorf("%w: Users, ClientsPerUser and ChannelsPerClient must be positive", ErrBadWorkloadConfig)
	case len(c.Channels) <= c.ChannelsPerClient:
		return fmt.Errorf("%w: need more channels than ChannelsPerClient", ErrBadWorkloadConfig)
	case c.ChannelsPerClient > maxChannelsPerCall:
		return fmt.Errorf("%w: at most %d channels per client", ErrBadWorkloadConfig, maxChannelsPerCall)
	case c.Heartbeat <= 0 || c.Heartbeat >= c.Timeout:
		return fmt.Errorf("%w: need 0 < Heartbeat < Timeout", ErrBadWorkloadConfig)
	case c.Duration <= 0, c.Churn < 0, c.Ramp < 0, c.Vanish < 0 || c.Vanish > 1, c.MaxUsers < 0:
		return fmt.Errorf("%w: negative duration or probability out of range", ErrBadWorkloadConfig)
	}
	return nil
}

// maxChannelsPerCall is the API's limit of channels in one list.
const maxChannelsPerCall = 50

// WorkloadStats counts what the clients did.
type WorkloadStats struct {
	Clients  int   // simulated clients
	Entered  int64 // clients whose first present was acknowledged (or refused by a cap)
	Updates  int64 // updates sent (each may take several HTTP attempts)
	Failed   int64 // updates no node accepted within the pool's budget
	Rejected int64 // updates answered with a 4xx, or present channels answered false without a cap
	Full     int64 // present channels answered false by capped channels (WorkloadConfig.MaxUsers)
	Moves    int64 // channel moves (leave one, enter another)
	Vanished int64 // clients that stopped silently
}

// Workload runs simulated clients against a cluster and records them in
// its Model.
type Workload struct {
	cfg   WorkloadConfig
	model *Model

	cancel context.CancelFunc
	wg     sync.WaitGroup

	entered, updates, failed, rejected, full, moves, vanished atomic.Int64
	clientsDone                                               atomic.Int64
}

// NewWorkload validates cfg and returns a Workload that has not started.
func NewWorkload(cfg WorkloadConfig) (*Workload, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	model, err := NewModel(ModelConfig{Timeout: cfg.Timeout, StaleApply: cfg.StaleApply, Slack: cfg.Slack, MaxUsers: cfg.MaxUsers})
	if err != nil {
		return nil, err
	}
	return &Workload{cfg: cfg, model: model}, nil
}

// Model returns the model the clients record into.
func (w *Workload) Model() *Model { return w.model }

// Clients is the number of simulated clients.
func (w *Workload) Clients() int { return w.cfg.Users * w.cfg.ClientsPerUser }

// Start launches the clients; they run until Stop, ctx ends or Duration
// passes. Call it once.
func (w *Workload) Start(ctx context.Context) error {
	ctx, w.cancel = context.WithTimeout(ctx, w.cfg.Duration)
	for u := range w.cfg.Users {
		id := Identity{
			ID:       fmt.Sprintf("%s%d", w.cfg.IDPrefix, u),
			Username: fmt.Sprintf("%s_user%d", w.cfg.IDPrefix, u),
			Name:     fmt.Sprintf("User %s%d", w.cfg.IDPrefix, u),
		}
		token, err := w.cfg.Tokens.Mint(id)
		if err != nil {
			w.Stop()
			return err
		}
		for k := range w.cfg.ClientsPerUser {
			c := &client{
				w:     w,
				id:    fmt.Sprintf("%s-%d", id.ID, k),
				user:  id.ID,
				token: token,
				rng:   rand.New(rand.NewPCG(w.cfg.Seed, uint64(u*w.cfg.ClientsPerUser+k))),
			}
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				defer w.clientsDone.Add(1)
				c.run(ctx)
			}()
		}
	}
	return nil
}

// Stop stops every client (silently: no leaves) and waits for them.
func (w *Workload) Stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
}

// WaitEntered waits until every client still running has had its first
// present acknowledged (or, with a cap, answered), or ctx ends.
func (w *Workload) WaitEntered(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if w.entered.Load()+w.clientsDone.Load() >= int64(w.Clients()) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("chaos: %d of %d clients entered: %w", w.entered.Load(), w.Clients(), ctx.Err())
		case <-t.C:
		}
	}
}

// Stats returns the counters so far.
func (w *Workload) Stats() WorkloadStats {
	return WorkloadStats{
		Clients:  w.Clients(),
		Entered:  w.entered.Load(),
		Updates:  w.updates.Load(),
		Failed:   w.failed.Load(),
		Rejected: w.rejected.Load(),
		Full:     w.full.Load(),
		Moves:    w.moves.Load(),
		Vanished: w.vanished.Load(),
	}
}

// client is one simulated browser tab. It sends one update at a time.
type client struct {
	w           *Workload
	id, user    string
	token       string
	rng         *rand.Rand
	channels    []string // channels it is in
	retryLeaves []string // leaves that failed, sent again with the next update
	entered     bool
}

// run enters, then heartbeats and moves until ctx ends or the client
// vanishes.
func (c *client) run(ctx context.Context) {
	cfg := &c.w.cfg
	c.channels = c.pick(cfg.ChannelsPerClient, nil)
	if cfg.Ramp > 0 && !sleep(ctx, time.Duration(c.rng.Int64N(int64(cfg.Ramp)))) {
		return
	}
	c.update(ctx, c.channels, nil)
	nextBeat := time.Now().Add(c.jitter(cfg.Heartbeat))
	nextMove := c.nextMove()
	for {
		wake := nextBeat
		if nextMove.Before(wake) {
			wake = nextMove
		}
		if !sleep(ctx, time.Until(wake)) {
			return
		}
		if !nextMove.After(time.Now()) {
			nextMove = c.nextMove()
			if c.rng.Float64() < cfg.Vanish {
				c.w.vanished.Add(1)
				return
			}
			if !c.move(ctx) {
				return
			}
		} else if !c.update(ctx, c.channels, nil) {
			return
		}
		nextBeat = time.Now().Add(c.jitter(cfg.Heartbeat))
	}
}

// move leaves one channel and enters another in one update.
func (c *client) move(ctx context.Context) bool {
	i := c.rng.IntN(len(c.channels))
	old := c.channels[i]
	c.channels[i] = c.pick(1, c.channels)[0]
	c.w.moves.Add(1)
	return c.update(ctx, c.channels, []string{old})
}

// update sends present and leave (plus leaves that failed before) and
// records it in the model. It returns false when the client must stop.
func (c *client) update(ctx context.Context, present, leave []string) bool {
	w := c.w
	if w.updates.Add(1) > w.cfg.MaxRequests {
		return false
	}
	leave = append(c.retryLeaves, leave...)
	leave = slices.DeleteFunc(slices.Clone(leave), func(ch string) bool { return slices.Contains(present, ch) })
	c.retryLeaves = nil
	present = slices.Clone(present)
	body, _ := json.Marshal(map[string]any{"client_id": c.id, "present_channels": present, "leave_channels": leave})
	attempt := w.model.Begin(c.id, c.user, present, leave, w.cfg.Clock.Now())
	resp, err := w.cfg.Pool.Do(ctx, Request{
		Method: http.MethodPost, Path: "/presence/update", Body: body,
		ContentType: "application/json", Token: c.token,
	})
	var answer map[string]bool
	ok := err == nil && resp.Status == http.StatusOK && json.Unmarshal(resp.Body, &answer) == nil
	attempt.Done(Outcome{OK: ok, Answer: answer, Late: resp.Late, At: w.cfg.Clock.Now()})
	switch {
	case err != nil && ctx.Err() != nil: // stopped: not a failure of the cluster
	case err != nil:
		w.failed.Add(1)
		w.cfg.Logger.Debug("chaos: update failed", "client", c.id, "err", err)
	case !ok:
		w.rejected.Add(1)
		w.cfg.Logger.Warn("chaos: update rejected", "client", c.id, "status", resp.Status, "body", string(resp.Body))
	}
	if !ok {
		c.retryLeaves = leave
		return true
	}
	capped := w.cfg.MaxUsers > 0
	for _, ch := range present {
		switch {
		case answer[ch]:
		case capped:
			w.full.Add(1)
		default:
			w.rejected.Add(1)
		}
	}
	if !c.entered && (answer[present[0]] || capped) {
		c.entered = true
		w.entered.Add(1)
	}
	return true
}

// pick returns n distinct channels not in exclude.
func (c *client) pick(n int, exclude []string) []string {
	var out []string
	for len(out) < n {
		ch := c.w.cfg.Channels[c.rng.IntN(len(c.w.cfg.Channels))]
		if !slices.Contains(out, ch) && !slices.Contains(exclude, ch) {
			out = append(out, ch)
		}
	}
	return out
}

// jitter returns d ±10%.
func (c *client) jitter(d time.Duration) time.Duration {
	return d*9/10 + time.Duration(c.rng.Int64N(int64(d)/5+1))
}

// nextMove draws the time of the next move (exponential pauses).
func (c *client) nextMove() time.Time {
	if c.w.cfg.Churn == 0 {
		return farFuture
	}
	return time.Now().Add(time.Duration(c.rng.ExpFloat64() * float64(c.w.cfg.Churn)))
}
