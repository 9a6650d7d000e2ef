package fanout

import (
	"context"
	"sync"
	"time"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// feedFillers bounds the catch-up fetches run at once after a ring change.
const feedFillers = 16

// A catch-up that could not reach the channel's holder is tried again after
// feedRetry, doubling with each failure in a row up to feedRetryMax (wall
// time: it paces network calls), so that a holder unreachable for long
// (every node stopping) is not asked four times a second per channel.
const (
	feedRetry    = 250 * time.Millisecond
	feedRetryMax = 2 * time.Second
)

// viewerID is the user id under which a node fetches missed messages of a
// restricted channel for its hub (see viewerFor).
const viewerID = "\x00router"

// feed is the single entrance of messages into the node's hub, for the
// channels that have local subscribers: messages of channels held here and
// messages pushed by remote owners. Per channel it drops duplicates and, on a
// gap (the owner changed, a push was lost), fetches the missing messages from
// the owner before going on, so subscribers only resync when the owner cannot
// prove continuity. It also tells owners when the last local subscriber of a
// channel is gone.
type feed struct {
	cfg   *Config
	hub   *presence.Hub
	mu    sync.RWMutex
	gen   uint64 // generation counter of local registrations
	chans map[string]*feedChan

	workMu sync.Mutex
	work   []feedWork
	wake   chan struct{}
}

// feedWork is an interest change to tell an owner (off), or a channel whose
// owner changed, whose interest is registered again and gap filled.
type feedWork struct {
	channel string
	gen     uint64
	refresh bool // else: off
}

// feedChan is one channel with local subscribers.
type feedChan struct {
	gen uint64 // registration generation; fixed

	mu       sync.Mutex
	last     int64 // last id given to the hub; 0 before anything is known
	live     bool  // last comes from a delivered message, not a catch-up
	audience *presence.Config
	filling  bool
	held     []*presence.Message // arrived during a fill, in order
	failures int                 // catch-ups failed in a row
}

func (f *feed) init(cfg *Config) {
	f.cfg = cfg
	// Generations start at the clock, so a restarted node's registrations
	// are newer than its previous incarnation's at every owner.
	f.gen = uint64(max(cfg.Clock.Now().UnixNano(), 0))
	f.chans = make(map[string]*feedChan)
	f.wake = make(chan struct{}, 1)
}

// onChannel is the hub's OnChannel hook; it runs under the hub's lock.
func (f *feed) onChannel(channel string, subscribed bool) {
	f.mu.Lock()
	if subscribed {
		f.gen++
		f.chans[channel] = &feedChan{gen: f.gen}
		f.mu.Unlock()
		return
	}
	fc := f.chans[channel]
	delete(f.chans, channel)
	f.mu.Unlock()
	if fc != nil {
		f.queue(feedWork{channel: channel, gen: fc.gen})
	}
}

// genOf returns the registration generation of channel, 0 if none.
func (f *feed) genOf(channel string) uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if fc := f.chans[channel]; fc != nil {
		return fc.gen
	}
	return 0
}

// observe learns a channel's position from a subscriber's catch-up, until
// messages flow: the lowest position wins, so no subscriber misses one.
func (f *feed) observe(channel string, cu presence.Catchup) {
	f.mu.RLock()
	fc := f.chans[channel]
	f.mu.RUnlock()
	if fc == nil || cu.Unavailable {
		return
	}
	fc.mu.Lock()
	if !fc.live && (fc.last == 0 || cu.LastID < fc.last) {
		fc.last = cu.LastID
	}
	if n := len(cu.Messages); n > 0 && cu.Messages[n-1].Audience != nil {
		fc.audience = cu.Messages[n-1].Audience
	}
	fc.mu.Unlock()
}

// deliver hands m to the hub in order. It reports whether the channel has
// local subscribers, and the current generation (for a push reply).
func (f *feed) deliver(m *presence.Message) (wanted bool, gen uint64) {
	f.mu.RLock()
	fc := f.chans[m.Channel]
	gen = f.gen
	f.mu.RUnlock()
	if fc == nil {
		return false, gen
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if m.Audience != nil {
		fc.audience = m.Audience
	}
	switch {
	case fc.filling:
		if len(fc.held) == presence.DefaultMaxPending {
			fc.held = fc.held[1:] // the fill is very late: the gap makes subscribers resync
		}
		fc.held = append(fc.held, m)
	case fc.last == 0 || m.ID == fc.last+1:
		f.emitLocked(fc, m)
	case m.ID <= fc.last:
		// a duplicate: pushed twice around a hand-off
	default:
		fc.held = append(fc.held, m)
		f.startFillLocked(m.Channel, fc)
	}
	return true, gen
}

func (f *feed) emitLocked(fc *feedChan, m *presence.Message) {
	fc.last, fc.live = m.ID, true
	f.hub.Publish(m)
}

// startFillLocked fetches the messages after fc.last from the owner; what
// arrives meanwhile is held.
func (f *feed) startFillLocked(channel string, fc *feedChan) {
	fc.filling = true
	after, aud := fc.last, fc.audience
	if after == 0 {
		after = -1
	}
	if !f.cfg.Go(func() { f.fill(channel, fc, after, aud) }) {
		fc.filling = false // closing: nothing is delivered any more
	}
}

// fill fetches the catch-up after after (registering this node's interest
// with the holder on the way), gives the hub what continues its sequence,
// then the held messages. Without continuity the held messages go as they
// are, and the subscriptions see the gap and resync.
func (f *feed) fill(channel string, fc *feedChan, after int64, aud *presence.Config) {
	ctx, cancel := context.WithTimeout(f.cfg.Ctx, f.cfg.CallTimeout)
	cu, err := f.cfg.Catchup(ctx, viewerFor(aud), channel, after, fc.gen)
	cancel()
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if err == nil && !cu.Unavailable && !cu.Resync {
		for _, m := range cu.Messages {
			if fc.last == 0 || m.ID == fc.last+1 {
				f.emitLocked(fc, m)
			}
		}
	}
	if err == nil && fc.last == 0 && !cu.Unavailable {
		fc.last = cu.LastID
	}
	for _, m := range fc.held {
		if m.ID > fc.last {
			f.emitLocked(fc, m)
		}
	}
	fc.held, fc.filling = nil, false
	if err == nil || f.cfg.Ctx.Err() != nil {
		fc.failures = 0
		return
	}
	// The holder was not reached (views disagreeing for a moment, a holder
	// that just died). This node's interest may be registered nowhere (the
	// owner died before its replica learned of it): without another try its
	// subscribers could hear nothing more of the channel.
	fc.failures++
	pause := min(feedRetry<<min(fc.failures-1, 8), feedRetryMax)
	f.cfg.Logger.Debug("catch-up failed; retrying", "channel", channel, "after", pause, "err", err)
	f.retryLater(feedWork{channel: channel, gen: fc.gen, refresh: true}, pause)
}

// retryLater queues w again after pause; refresh skips it if the channel's
// local subscribers are gone by then.
func (f *feed) retryLater(w feedWork, pause time.Duration) {
	f.cfg.Go(func() {
		if sleep(f.cfg.Ctx, pause) == nil {
			f.queue(w)
		}
	})
}

// viewerFor returns a user that aud lets view the channel, so that a node
// can fetch missed messages for its hub; the hub still checks each message's
// audience against each subscriber. Nil when only anonymous access applies.
func viewerFor(aud *presence.Config) *presence.User {
	switch {
	case aud == nil || aud.Public:
		return nil
	case len(aud.AllowedUserIDs) > 0:
		return &presence.User{ID: aud.AllowedUserIDs[0]}
	}
	return &presence.User{ID: viewerID, Groups: aud.AllowedGroupIDs}
}

// ownersChanged schedules, for every channel with local subscribers whose
// owner changed, a refresh: interest registered with the holder and a gap
// fill.
func (f *feed) ownersChanged(changed func(channel string) bool) {
	f.mu.RLock()
	var work []feedWork
	for ch, fc := range f.chans {
		if changed(ch) {
			work = append(work, feedWork{channel: ch, gen: fc.gen, refresh: true})
		}
	}
	f.mu.RUnlock()
	f.queue(work...)
}

func (f *feed) queue(work ...feedWork) {
	if len(work) == 0 {
		return
	}
	f.workMu.Lock()
	f.work = append(f.work, work...)
	f.workMu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// run sends queued interest changes to the owners and runs the refreshes,
// until Ctx ends.
func (f *feed) run() {
	for {
		select {
		case <-f.wake:
		case <-f.cfg.Ctx.Done():
			return
		}
		f.workMu.Lock()
		work := f.work
		f.work = nil
		f.workMu.Unlock()
		f.sendOffs(work)
		f.refresh(work)
	}
}

// sendOffs tells each owner, in one call, the channels nobody here follows.
func (f *feed) sendOffs(work []feedWork) {
	v := f.cfg.View()
	byOwner := make(map[string][]wire.InterestChange)
	for _, w := range work {
		if w.refresh {
			continue
		}
		if owner := v.Owner(w.channel); owner != f.cfg.Self.Name && owner != "" {
			byOwner[owner] = append(byOwner[owner], wire.InterestChange{Channel: w.channel, Gen: w.gen})
		}
	}
	for owner, changes := range byOwner {
		to, ok := v.Member(owner)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(f.cfg.Ctx, f.cfg.CallTimeout)
		q := wire.InterestRequest{Node: f.cfg.Self, Changes: changes}
		if _, err := f.cfg.Call(ctx, to, wire.MethodInterest, q.Encode); err != nil {
			f.cfg.Logger.Debug("unregistering interest failed; the owner learns it from its next push", "to", owner, "err", err)
		}
		cancel()
	}
}

// refresh re-registers interest and fills gaps for the channels whose owner
// changed, a few at a time.
func (f *feed) refresh(work []feedWork) {
	sem := make(chan struct{}, feedFillers)
	var wg sync.WaitGroup
	for _, w := range work {
		if !w.refresh {
			continue
		}
		f.mu.RLock()
		fc := f.chans[w.channel]
		f.mu.RUnlock()
		if fc == nil || fc.gen != w.gen {
			continue
		}
		fc.mu.Lock()
		if fc.filling {
			fc.mu.Unlock()
			continue
		}
		fc.filling = true
		after, aud := fc.last, fc.audience
		fc.mu.Unlock()
		if after == 0 {
			after = -1
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f.fill(w.channel, fc, after, aud)
		})
	}
	wg.Wait()
}
