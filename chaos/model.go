package chaos

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Defaults of ModelConfig.
const (
	DefaultSlack = time.Second
	// expiryPrecision is how late a node may expire a client (the contract's
	// one-second precision).
	expiryPrecision = time.Second
)

// farFuture stands for "unbounded": an attempt still in flight may take
// effect at any later time.
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// ErrBadModelConfig is returned by NewModel for a configuration it cannot use.
var ErrBadModelConfig = errors.New("chaos: invalid model configuration")

// Expectation is what the model says about a user in a channel.
type Expectation int

// The three answers of the model.
const (
	MustBeAbsent Expectation = iota
	MayBePresent
	MustBePresent
)

func (e Expectation) String() string {
	switch e {
	case MustBePresent:
		return "must be present"
	case MayBePresent:
		return "may be present"
	}
	return "must be absent"
}

// ModelConfig configures a Model.
type ModelConfig struct {
	// Timeout is the channels' configured client timeout; required.
	Timeout time.Duration
	// StaleApply is how long after a request failed a node may still apply
	// it (a paused node resuming with the request in its socket); 0 means
	// a failed request was applied, if at all, before its failure was seen.
	StaleApply time.Duration
	// Slack widens every "may" window and narrows every "must" window, for
	// scheduling noise between a node and the test; 0 = DefaultSlack.
	Slack time.Duration
	// MaxUsers is the channels' max_users; 0 = no cap. With a cap the
	// model also judges the answer of every present (CapViolations).
	MaxUsers int
	// RefreshLag is how long after its answer a heartbeat (a present of a
	// client present already) may still be missing from the channel's
	// replica: nodes coalesce such refreshes and send them every
	// replication interval. A node crashing within it may undo the
	// heartbeat's extension of the client's expiry (the promoted copy has
	// the one before), which shows when the client sends nothing more
	// (its tab closed). 0 means DefaultRefreshLag.
	RefreshLag time.Duration
	// PromotionGrace is how much later than its expiry a client may leave
	// when a crash made another node promote the copy it was in: the nodes
	// move a promoted copy's expiries later by their replication interval
	// (the refreshes the dead owner may not have sent). 0 means
	// DefaultPromotionGrace.
	PromotionGrace time.Duration
}

// DefaultRefreshLag is the nodes' replication interval with a margin.
const DefaultRefreshLag = 1500 * time.Millisecond

// DefaultPromotionGrace is the nodes' replication interval
// (router.DefaultReplicationInterval), by which a promoted copy's
// expiries move later.
const DefaultPromotionGrace = time.Second

// Model records every update a Workload's clients send and what they were
// answered. It is safe for concurrent use.
type Model struct {
	cfg ModelConfig

	mu       sync.Mutex
	channels map[string]map[string]*slot // channel -> client -> slot
	userOf   map[string]string           // client -> user
	caps     capJudgements               // with MaxUsers
	crashes  []time.Time                 // NoteCrash
}

// capJudgements counts what the model found of the answers to presents
// into capped channels.
type capJudgements struct {
	refused    int64    // presents answered false
	violations int64    // answers the cap cannot explain
	examples   []string // a few of them, for the report
}

// slot is one client's history in one channel. Each client sends one
// request at a time, so at most one attempt per slot is in flight.
type slot struct {
	ackSent, ackAt time.Time // latest present answered true: sent and answered
	// beats are the presents answered true since the client's latest
	// enter (that enter first, at most maxBeats): each but the enter
	// found the client present (a heartbeat).
	beats          []beat
	leaveStart     time.Time // start of the latest leave attempt
	leaveSent      time.Time // latest leave answered: sent
	leaveAckAt     time.Time // and answered
	presentApplyBy time.Time // latest time a finished present may take effect
	leaveApplyBy   time.Time // latest time a finished leave may take effect
	presentPending bool
	leavePending   bool
}

// beat is a present answered true: sent and answered; refresh when it
// found the client present already.
type beat struct {
	sent, at time.Time
	refresh  bool
}

// maxBeats bounds a slot's beats: a client's stay of many heartbeats keeps
// the latest ones (the older ones matter only if every later one was
// undone by a crash).
const maxBeats = 16

// NewModel returns an empty model.
func NewModel(cfg ModelConfig) (*Model, error) {
	if cfg.Timeout <= 0 || cfg.StaleApply < 0 || cfg.Slack < 0 || cfg.MaxUsers < 0 || cfg.PromotionGrace < 0 {
		return nil, ErrBadModelConfig
	}
	if cfg.Slack == 0 {
		cfg.Slack = DefaultSlack
	}
	if cfg.RefreshLag == 0 {
		cfg.RefreshLag = DefaultRefreshLag
	}
	if cfg.PromotionGrace == 0 {
		cfg.PromotionGrace = DefaultPromotionGrace
	}
	return &Model{cfg: cfg, channels: map[string]map[string]*slot{}, userOf: map[string]string{}}, nil
}

// Attempt is one update in flight; finish it with Done.
type Attempt struct {
	m              *Model
	client         string
	present, leave []string
	sent           time.Time
}

// Begin records that client (of user) sends an update at sent: present
// channels first, then leave channels, as the API applies them.
func (m *Model) Begin(client, user string, present, leave []string, sent time.Time) *Attempt {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.userOf[client] = user
	for _, ch := range present {
		m.slot(ch, client).presentPending = true
	}
	for _, ch := range leave {
		s := m.slot(ch, client)
		s.leavePending = true
		s.leaveStart = sent
	}
	return &Attempt{m: m, client: client, present: present, leave: leave, sent: sent}
}

// Outcome is how an update ended.
type Outcome struct {
	// OK: a node answered 200; Answer then maps each present channel to
	// its true or false.
	OK     bool
	Answer map[string]bool
	// Late: an earlier attempt of the call may have reached a node (it
	// timed out or got a 5xx) and may still take effect up to StaleApply
	// after At, even though a later attempt succeeded.
	Late bool
	At   time.Time // when the caller saw the outcome
}

// Done records the outcome of the update. A failed or Late update may still
// take effect until At plus StaleApply.
func (a *Attempt) Done(o Outcome) {
	m := a.m
	m.mu.Lock()
	defer m.mu.Unlock()
	applyBy := o.At
	if !o.OK || o.Late {
		applyBy = o.At.Add(m.cfg.StaleApply)
	}
	if o.OK && m.cfg.MaxUsers > 0 {
		for _, ch := range a.present {
			m.judgeCap(ch, a, o)
		}
	}
	for _, ch := range a.present {
		s := m.slot(ch, a.client)
		s.presentPending = false
		if o.OK && o.Answer[ch] {
			refresh := !s.ackAt.IsZero() && !s.leaveAckAt.After(s.ackAt)
			if !refresh {
				s.beats = s.beats[:0]
			}
			s.beats = append(s.beats, beat{sent: a.sent, at: o.At, refresh: refresh})
			if len(s.beats) > maxBeats {
				s.beats = slices.Delete(s.beats, 0, len(s.beats)-maxBeats)
			}
			s.ackSent, s.ackAt = a.sent, o.At
		}
		if !o.OK || o.Answer[ch] || o.Late {
			s.presentApplyBy = later(s.presentApplyBy, applyBy)
		}
	}
	for _, ch := range a.leave {
		s := m.slot(ch, a.client)
		s.leavePending = false
		s.leaveApplyBy = later(s.leaveApplyBy, applyBy)
		if o.OK {
			s.leaveSent, s.leaveAckAt = a.sent, o.At
		}
	}
}

// judgeCap holds the answer to a's present of ch against the cap, by what
// the channel certainly held while a node served it (between a.sent and
// o.At), before this present: a user already present must be admitted (a
// heartbeat, or another client of the user); a new user must be refused
// while MaxUsers others certainly were present, and admitted while fewer
// than MaxUsers others possibly were. Anything in between may go either
// way. An answer after an earlier attempt that may have applied (Late)
// may admit a user the cap would refuse: that attempt may have been first.
func (m *Model) judgeCap(ch string, a *Attempt, o Outcome) {
	user := m.userOf[a.client]
	mine := MustBeAbsent
	others := map[string]Expectation{}
	for client, s := range m.channels[ch] {
		var e Expectation
		if client == a.client {
			// What the client was before this present, which is in flight.
			pending := s.presentPending
			s.presentPending = false
			e = m.expect(s, a.sent, o.At)
			s.presentPending = pending
		} else {
			e = m.expect(s, a.sent, o.At)
		}
		if u := m.userOf[client]; u == user {
			mine = max(mine, e)
		} else {
			others[u] = max(others[u], e)
		}
	}
	must, may := 0, 0
	for _, e := range others {
		switch e {
		case MustBePresent:
			must++
		case MayBePresent:
			may++
		}
	}
	admitted := o.Answer[ch]
	if !admitted {
		m.caps.refused++
	}
	var why string
	switch {
	case mine == MustBePresent && !admitted:
		why = "refused a user who was present"
	case mine != MustBeAbsent:
	case admitted && !o.Late && must >= m.cfg.MaxUsers:
		why = fmt.Sprintf("admitted a new user while %d others were present (max_users %d)", must, m.cfg.MaxUsers)
	case !admitted && must+may < m.cfg.MaxUsers:
		why = fmt.Sprintf("refused a new user while at most %d others were present (max_users %d)", must+may, m.cfg.MaxUsers)
	}
	if why == "" {
		return
	}
	m.caps.violations++
	if len(m.caps.examples) < maxExamples {
		m.caps.examples = append(m.caps.examples, fmt.Sprintf("cap: %s in %s: %s (sent %s, answered %s)",
			user, ch, why, clockTime(a.sent), clockTime(o.At)))
	}
}

// MaxUsers is the channels' cap the model judges presents by (0: none).
func (m *Model) MaxUsers() int { return m.cfg.MaxUsers }

// CapJudgements returns how many presents were refused, how many answers
// the cap cannot explain (a user present already refused, a new user
// admitted into a channel certainly full or refused from one certainly
// not), and a few examples of those.
func (m *Model) CapJudgements() (refused, violations int64, examples []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.caps.refused, m.caps.violations, append([]string(nil), m.caps.examples...)
}

func (m *Model) slot(channel, client string) *slot {
	clients := m.channels[channel]
	if clients == nil {
		clients = map[string]*slot{}
		m.channels[channel] = clients
	}
	s := clients[client]
	if s == nil {
		s = &slot{}
		clients[client] = s
	}
	return s
}

// Expect returns, for a read of channel that the node served at some moment
// between from and to, what the model says of every user it knows there.
// Users it does not list must be absent.
func (m *Model) Expect(channel string, from, to time.Time) map[string]Expectation {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]Expectation{}
	for client, s := range m.channels[channel] {
		user := m.userOf[client]
		if e := m.expect(s, from, to); e > out[user] {
			out[user] = e
		}
	}
	return out
}

// expect judges one slot for a read served within [from, to].
func (m *Model) expect(s *slot, from, to time.Time) Expectation {
	if m.mustBePresent(s, from, to) {
		return MustBePresent
	}
	if !from.Before(m.mayBePresentUntil(s)) {
		return MustBeAbsent
	}
	return MayBePresent
}

// mustBePresent: an acknowledged present, sent after every earlier leave
// could have taken effect, read before it could expire and before the next
// leave was sent. Judged on the latest history, a read made before later
// events is judged conservatively ("may" where "must" held), never wrongly.
func (m *Model) mustBePresent(s *slot, from, to time.Time) bool {
	if s.ackAt.IsZero() || s.ackSent.Before(s.leaveApplyBy) {
		return false
	}
	last, ok := m.lastCertainBeat(s)
	if !ok {
		return false
	}
	end := last.Add(m.cfg.Timeout - m.cfg.Slack)
	if s.leaveStart.After(s.ackSent) && s.leaveStart.Before(end) {
		end = s.leaveStart
	}
	return !from.Before(s.ackAt) && to.Before(end)
}

// lastCertainBeat returns when the latest present that no crash may have
// undone was sent. A heartbeat answered less than RefreshLag before a
// crash may be missing from the promoted copy, and so may the one before
// it, before another crash: the client's expiry may be as old as the
// latest heartbeat far from every crash, or its enter (replicated before
// its answer). ok is false when every beat kept may have been undone.
func (m *Model) lastCertainBeat(s *slot) (sent time.Time, ok bool) {
	for i := len(s.beats) - 1; i >= 0; i-- {
		b := s.beats[i]
		if !b.refresh || !m.crashedBetween(b.sent, b.at.Add(m.cfg.RefreshLag)) {
			return b.sent, true
		}
	}
	return time.Time{}, false
}

// NoteCrash records that a node crashed (or froze) at at: heartbeats
// answered shortly before it may be missing from the copies it promotes
// (RefreshLag).
func (m *Model) NoteCrash(at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.crashes = append(m.crashes, at)
}

// crashedBetween reports whether a crash was noted within [from, to].
func (m *Model) crashedBetween(from, to time.Time) bool {
	for _, c := range m.crashes {
		if !c.Before(from) && !c.After(to) {
			return true
		}
	}
	return false
}

// mayBePresentUntil is the last moment the client may be listed: until its
// last present could expire, or until an acknowledged leave sent after every
// present could have taken effect. A crash from when that present could
// have been applied until it could expire may have had its copy promoted,
// which expires PromotionGrace later.
func (m *Model) mayBePresentUntil(s *slot) time.Time {
	applyBy := s.presentApplyBy
	if s.presentPending {
		applyBy = farFuture
	}
	if applyBy.IsZero() {
		return time.Time{}
	}
	until := applyBy.Add(m.cfg.Timeout + expiryPrecision + m.cfg.Slack)
	if applyBy != farFuture && m.crashedBetween(applyBy.Add(-m.cfg.Timeout), until) {
		until = until.Add(m.cfg.PromotionGrace)
	}
	if !s.leaveAckAt.IsZero() && !s.leaveSent.Before(applyBy) && s.leaveAckAt.Before(until) {
		until = s.leaveAckAt
	}
	return until
}

// Describe renders what the model knows of user's clients in channel, for
// reports: the latest acknowledged present, how late a present may still
// apply, and the latest acknowledged leave.
func (m *Model) Describe(channel, user string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var parts []string
	for client, s := range m.channels[channel] {
		if m.userOf[client] != user {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: present acked %s/%s, applies by %s, pending %v; leave acked %s/%s, applies by %s, pending %v",
			client, clockTime(s.ackSent), clockTime(s.ackAt), clockTime(s.presentApplyBy), s.presentPending,
			clockTime(s.leaveSent), clockTime(s.leaveAckAt), clockTime(s.leaveApplyBy), s.leavePending))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// clockTime renders t as a time of day with milliseconds; "-" when unset.
func clockTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("15:04:05.000")
}

// Channels returns the channels any client touched, sorted.
func (m *Model) Channels() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.channels))
	for ch := range m.channels {
		out = append(out, ch)
	}
	sort.Strings(out)
	return out
}

// Counts returns how many user-channel pairs must be, and may be, present
// at now (a read served at that instant).
func (m *Model) Counts(now time.Time) (must, may int) {
	for _, ch := range m.Channels() {
		for _, e := range m.Expect(ch, now, now) {
			switch e {
			case MustBePresent:
				must++
			case MayBePresent:
				may++
			}
		}
	}
	return must, may
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
