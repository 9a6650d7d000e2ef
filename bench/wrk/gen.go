// Package wrk prepares and reads the heartbeat benchmark that wrk drives
// (issue #17, target 1): it writes the requests (one heartbeat per call,
// each with its user's token) and the Lua script that sends them, parses
// what the script prints at the end of a run, and tabulates alternating
// runs of several servers.
package wrk

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/presencehq/presence/bench/token"
)

// Defaults of GenConfig: the workload.
const (
	DefaultUsers    = 40_000
	DefaultChannels = 1_000
	DefaultPrefix   = "/demo/hb/"
	DefaultPath     = "/presence/update"
	DefaultRunID    = "hb"
	// DefaultTokenTTL outlives any run; the node checks exp on every call.
	DefaultTokenTTL = 24 * time.Hour
)

// File names Generate writes into its directory.
const (
	RequestsFile = "requests.tsv"
	ScriptFile   = "heartbeat.lua"
)

// ErrGen marks an unusable GenConfig.
var ErrGen = errors.New("wrk: invalid configuration")

// GenConfig is the workload: user u (of Users) heartbeats channel
// Prefix + (u mod Channels) with client id <RunID>-c<u>, signed in as
// <RunID>-u<u>. Zero values take the defaults above.
type GenConfig struct {
	Users     int
	Channels  int
	Prefix    string
	Path      string // the update endpoint's path
	RunID     string // user and client ids start with it; no space, tab or quote
	JWTSecret string // required
	TokenTTL  time.Duration
	Now       func() time.Time // nil = time.Now
}

func (c *GenConfig) validate() error {
	if c.Users == 0 {
		c.Users = DefaultUsers
	}
	if c.Channels == 0 {
		c.Channels = DefaultChannels
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.RunID == "" {
		c.RunID = DefaultRunID
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = DefaultTokenTTL
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.Users < 1 || c.Channels < 1:
		return fmt.Errorf("%w: users and channels must be positive", ErrGen)
	case c.JWTSecret == "":
		return fmt.Errorf("%w: a JWT secret is required", ErrGen)
	case strings.ContainsAny(c.RunID, " \t\n\"\\"), strings.ContainsAny(c.Prefix, "\t\n\"\\"),
		strings.ContainsAny(c.Path, " \t\n\"\\"):
		return fmt.Errorf("%w: run id, prefix and path must not hold spaces (run id, path), tabs, newlines, quotes or backslashes", ErrGen)
	case c.TokenTTL < 0:
		return fmt.Errorf("%w: token TTL must be positive", ErrGen)
	}
	return nil
}

// Request is one user's heartbeat.
type Request struct {
	Token string
	Body  string
}

// Requests returns every user's heartbeat, in user order.
func Requests(cfg GenConfig) ([]Request, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	minter, err := token.NewMinter(cfg.JWTSecret, cfg.TokenTTL, cfg.Now)
	if err != nil {
		return nil, err
	}
	out := make([]Request, cfg.Users)
	for u := range cfg.Users {
		id := cfg.RunID + "-u" + strconv.Itoa(u)
		tok, err := minter.Mint(token.User{ID: id, Username: id, Name: "User " + strconv.Itoa(u)})
		if err != nil {
			return nil, err
		}
		body, err := json.Marshal(struct {
			ClientID string   `json:"client_id"`
			Present  []string `json:"present_channels"`
		}{cfg.RunID + "-c" + strconv.Itoa(u), []string{cfg.Prefix + strconv.Itoa(u%cfg.Channels)}})
		if err != nil {
			return nil, err
		}
		out[u] = Request{Token: tok, Body: string(body)}
	}
	return out, nil
}

// Generate writes RequestsFile (one "token<TAB>body" line per user) and
// ScriptFile, which reads it, into dir, and returns the script's path.
func Generate(cfg GenConfig, dir string) (string, error) {
	if err := cfg.validate(); err != nil {
		return "", err
	}
	reqs, err := Requests(cfg)
	if err != nil {
		return "", err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	reqPath := filepath.Join(dir, RequestsFile)
	if err := writeRequests(reqPath, reqs); err != nil {
		return "", err
	}
	script := filepath.Join(dir, ScriptFile)
	if err := os.WriteFile(script, []byte(Script(reqPath, cfg.Path)), 0o644); err != nil {
		return "", err
	}
	return script, nil
}

func writeRequests(path string, reqs []Request) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, r := range reqs {
		_, _ = w.WriteString(r.Token)
		_ = w.WriteByte('\t')
		_, _ = w.WriteString(r.Body)
		_ = w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Script is the wrk Lua script sending the requests of requestsPath to
// path. Each of wrk's threads takes every n-th user (n, the thread count,
// is the script's argument: wrk ... URL -- n), formats all its requests
// once, and sends them in a cycle, so a user's calls are spaced by the
// thread's whole share of users (the node allows a user 2 calls a second).
// At the end it prints one RESULT line that ParseResult reads: the counts
// of wrk's summary and latency percentiles in microseconds.
func Script(requestsPath, path string) string {
	return strings.NewReplacer("@REQUESTS@", luaQuote(requestsPath), "@PATH@", luaQuote(path)).Replace(luaScript)
}

// luaQuote is s as a Lua string literal (paths hold no newline).
func luaQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

const luaScript = `-- Heartbeats for wrk, generated by wrk-heartbeat gen: one POST per call, each
-- with its user's token and body, from the requests file (token TAB body per line).
-- Run: wrk -t2 -c64 -d10s --latency -s heartbeat.lua http://HOST:PORT/ -- 2
-- (the argument after -- is the thread count: each thread takes every n-th user).
local requests_file = @REQUESTS@
local path = @PATH@

local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local reqs, n, i = {}, 0, 0

function init(args)
  local threads = tonumber(args[1]) or 1
  local f = assert(io.open(requests_file, "r"))
  local line_no = 0
  for line in f:lines() do
    if line_no % threads == id then
      local token, body = line:match("^([^\t]+)\t(.+)$")
      if not token then error("malformed line " .. (line_no + 1) .. " of " .. requests_file) end
      n = n + 1
      reqs[n] = wrk.format("POST", path,
        {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
    end
    line_no = line_no + 1
  end
  f:close()
  if n == 0 then error("no requests for thread " .. id .. " of " .. threads) end
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d" ..
    " p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
`
