// Package discourse implements, on Redis, the presence algorithm of
// Discourse's PresenceChannel, so the load tool can compare a Redis-backed
// presence store with ours under the same workload.
//
// Per channel there is a sorted set of "user_id client_id" members scored by
// their expiry time (Unix milliseconds) and a hash counting each user's
// clients. Present adds or refreshes a member and counts a new one; the user
// entered when the count goes 0 -> 1. Leave removes a member and decrements;
// the user left when the count reaches 0 (and the field is deleted). Expire
// removes every member whose score is at or below now; ExpireDue runs it on
// the channels that Discourse's global channel list says have clients due.
// Each operation is one Lua script run with EVALSHA, so it is atomic on the
// server, and a change is published on the channel's Pub/Sub topic by the
// same script. A heartbeat of a present client costs one ZADD.
//
// Left out of Discourse's scripts: the mutex that orders its MessageBus
// publications (publishing inside the script orders them), the message
// backlog MessageBus keeps, and the EXPIREAT refresh of both keys on every
// heartbeat (a garbage collector for channels nobody sweeps; the sweeper
// empties them here, and Redis deletes empty keys).
package discourse

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrBadTimeout is returned by New for a non-positive client timeout.
var ErrBadTimeout = errors.New("discourse: timeout must be positive")

// The scripts keep, besides each channel's sorted set and hash, Discourse's
// global list of channels (a sorted set scored by the expiry of each
// channel's oldest client, so that a sweeper finds the channels with clients
// due without knowing every channel), and publish every change on the
// channel's topic as Discourse's publish_message does (user ids only; a
// server resolves them to users). Publishing inside the script keeps the
// messages in the order of the changes without Discourse's mutex.

// updateChannelListLua re-scores the channel in the global list by its
// oldest client, or drops it when the channel is empty. KEYS[1] is the
// channel's sorted set, KEYS[3] the list, channel the channel's name.
const updateChannelListLua = `
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #oldest > 0 then
  redis.call('ZADD', KEYS[3], oldest[2], channel)
else
  redis.call('ZREM', KEYS[3], channel)
end
`

// presentLua: KEYS zset, hash, channel list, topic; ARGV expiry, user id,
// client id, channel. Returns 1 when the user entered the channel. A
// heartbeat of a present client is one ZADD.
const presentLua = `
local member = ARGV[2] .. " " .. ARGV[3]
if redis.call('ZADD', KEYS[1], ARGV[1], member) == 1 then
  redis.call('ZADD', KEYS[3], 'NX', ARGV[1], ARGV[4])
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then
    redis.call('PUBLISH', KEYS[4], cjson.encode({entering_user_ids = {ARGV[2]}}))
    return 1
  end
end
return 0
`

// leaveLua: KEYS zset, hash, channel list, topic; ARGV user id, client id,
// channel. Returns 1 when the user left the channel.
const leaveLua = `
local channel = ARGV[3]
if redis.call('ZREM', KEYS[1], ARGV[1] .. " " .. ARGV[2]) == 0 then
  return 0
end
` + updateChannelListLua + `
if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('PUBLISH', KEYS[4], cjson.encode({leaving_user_ids = {ARGV[1]}}))
  return 1
end
return 0
`

// expireLua: KEYS zset, hash, channel list, topic; ARGV now, channel.
// Returns the ids of the users whose last client expired. A member is
// "user_id client_id"; user ids hold no space, client ids may.
const expireLua = `
local channel = ARGV[2]
local left = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  redis.call('ZREM', KEYS[1], member)
  local user = string.match(member, '^[^ ]+')
  if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
    redis.call('HDEL', KEYS[2], user)
    table.insert(left, user)
  end
end
` + updateChannelListLua + `
if #left > 0 then
  redis.call('PUBLISH', KEYS[4], cjson.encode({leaving_user_ids = left}))
end
return left
`

// Config sets up a Store.
type Config struct {
	// KeyPrefix starts every key, so runs do not see each other's state.
	// Zero value: keys start with "presence:".
	KeyPrefix string
	// Timeout is how long a client stays present without a heartbeat.
	// Required.
	Timeout time.Duration
}

// Store runs the presence scripts against one Redis server.
type Store struct {
	rdb     *redis.Client
	prefix  string
	timeout time.Duration
	present *redis.Script
	leave   *redis.Script
	expire  *redis.Script
}

// New loads the scripts into the server and returns a Store.
func New(ctx context.Context, rdb *redis.Client, cfg Config) (*Store, error) {
	if cfg.Timeout <= 0 {
		return nil, ErrBadTimeout
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = "presence:"
	}
	s := &Store{
		rdb:     rdb,
		prefix:  cfg.KeyPrefix,
		timeout: cfg.Timeout,
		present: redis.NewScript(presentLua),
		leave:   redis.NewScript(leaveLua),
		expire:  redis.NewScript(expireLua),
	}
	if err := s.load(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) load(ctx context.Context) error {
	for _, sc := range []*redis.Script{s.present, s.leave, s.expire} {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return fmt.Errorf("discourse: load script: %w", err)
		}
	}
	return nil
}

// keys are the keys of a channel's scripts: its sorted set and hash, the
// global channel list and the channel's topic.
func (s *Store) keys(channel string) []string {
	return []string{s.prefix + channel + ":zset", s.prefix + channel + ":hash", s.channelList(), s.Topic(channel)}
}

// channelList is the key of the global list of channels with clients.
// Channel names start with "/", so it cannot be a channel's key.
func (s *Store) channelList() string { return s.prefix + "channels" }

// Topic is the Redis Pub/Sub channel on which the changes of channel are
// published: {"entering_user_ids":[id]} when a user enters,
// {"leaving_user_ids":[ids]} when users leave or expire.
func (s *Store) Topic(channel string) string { return s.prefix + channel + ":messages" }

func (s *Store) expiry(now time.Time) string {
	return strconv.FormatInt(now.Add(s.timeout).UnixMilli(), 10)
}

// Present marks the client present until now+timeout and reports whether
// its user entered the channel.
func (s *Store) Present(ctx context.Context, channel, userID, clientID string, now time.Time) (bool, error) {
	n, err := s.present.Run(ctx, s.rdb, s.keys(channel), s.expiry(now), userID, clientID, channel).Int()
	return n == 1, err
}

// Leave removes the client and reports whether its user left the channel.
func (s *Store) Leave(ctx context.Context, channel, userID, clientID string) (bool, error) {
	n, err := s.leave.Run(ctx, s.rdb, s.keys(channel), userID, clientID, channel).Int()
	return n == 1, err
}

// Expire removes the clients whose expiry is at or before now and returns the
// users who left with them.
func (s *Store) Expire(ctx context.Context, channel string, now time.Time) ([]string, error) {
	return s.expire.Run(ctx, s.rdb, s.keys(channel), strconv.FormatInt(now.UnixMilli(), 10), channel).StringSlice()
}

// ExpireDue runs Expire on every channel whose oldest client is due at now,
// as Discourse's auto_leave_all does with its channel list, and returns how
// many channels it swept and how many users left. A heartbeat moves a
// client's expiry but not the list's score, so a swept channel may have
// nothing to expire; the sweep then re-scores it by its oldest client.
func (s *Store) ExpireDue(ctx context.Context, now time.Time) (channels, left int, err error) {
	due, err := s.rdb.ZRangeByScore(ctx, s.channelList(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10),
	}).Result()
	if err != nil {
		return 0, 0, fmt.Errorf("discourse: channel list: %w", err)
	}
	for _, ch := range due {
		users, err := s.Expire(ctx, ch, now)
		if err != nil {
			return channels, left, err
		}
		channels++
		left += len(users)
	}
	return channels, left, nil
}

// Count is the number of users present in the channel.
func (s *Store) Count(ctx context.Context, channel string) (int64, error) {
	return s.rdb.HLen(ctx, s.keys(channel)[1]).Result()
}

// Op is one present (heartbeat or enter) or leave of a pipeline.
type Op struct {
	Leave    bool
	Channel  string
	UserID   string
	ClientID string
}

// Result is the outcome of one Op: Changed is true when the user entered
// (present) or left (leave).
type Result struct {
	Changed bool
	Err     error
}

// Pipeline runs ops in one round trip, EVALSHA each, and fills results
// (len(results) must be len(ops)). When the server lost the scripts it loads
// them again and retries once.
func (s *Store) Pipeline(ctx context.Context, ops []Op, now time.Time, results []Result) error {
	err := s.pipeline(ctx, ops, now, results)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err := s.load(ctx); err != nil {
			return err
		}
		err = s.pipeline(ctx, ops, now, results)
	}
	return err
}

func (s *Store) pipeline(ctx context.Context, ops []Op, now time.Time, results []Result) error {
	exp := s.expiry(now)
	cmds := make([]*redis.Cmd, len(ops))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, op := range ops {
			if op.Leave {
				cmds[i] = s.leave.EvalSha(ctx, p, s.keys(op.Channel), op.UserID, op.ClientID, op.Channel)
			} else {
				cmds[i] = s.present.EvalSha(ctx, p, s.keys(op.Channel), exp, op.UserID, op.ClientID, op.Channel)
			}
		}
		return nil
	})
	for i, c := range cmds {
		n, cerr := c.Int()
		results[i] = Result{Changed: n == 1, Err: cerr}
	}
	return err
}

// Forget deletes a channel's keys (used to clean up after a benchmark).
func (s *Store) Forget(ctx context.Context, channel string) error {
	k := s.keys(channel)
	if err := s.rdb.ZRem(ctx, s.channelList(), channel).Err(); err != nil {
		return err
	}
	return s.rdb.Del(ctx, k[0], k[1]).Err()
}
