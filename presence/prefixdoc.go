package presence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"regexp/syntax"
	"strconv"
)

// Limits of prefix documents and channel configs. They keep a document's
// memory and matching cost bounded whatever an admin or callback sends.
const (
	MaxPrefixDocumentBytes = 1 << 20 // a whole document, as JSON
	MaxConfigBytes         = 1 << 20 // a config object, e.g. a callback answer
	MaxRules               = 1000    // rules in one document
	MaxConfigIDs           = 10000   // entries in one allowed_*_ids list
	MaxIDBytes             = 128     // one user or group id
	MaxMatchBytes          = 4096    // the source of one match expression
	MaxMatchSize           = 5000    // estimated program size of one match expression
	MaxDocumentMatchSize   = 100000  // estimated program size of all rules together
	MaxCallbackURLBytes    = 2048
	DefaultCacheSeconds    = 10
	MaxCacheSeconds        = 600
)

// PrefixDocument is the configuration of one channel prefix, as stored by
// Raft: rules tried in order, then an optional HTTP callback. Build one with
// ParsePrefixDocument; a parsed document is immutable and safe for
// concurrent use.
type PrefixDocument struct {
	// Rules are tried in order; the first whose Match matches the whole
	// channel name gives the channel's config.
	Rules []Rule
	// Callback is asked when no rule matches; nil means the channel then does
	// not exist.
	Callback *Callback
	// Webhook receives the events of every channel of the prefix; nil
	// means none.
	Webhook *Webhook
}

// Rule maps channel names matching an RE2 expression to a config.
type Rule struct {
	// Match is the expression as written; it must match the whole name.
	Match  string
	Config Config
	re     *regexp.Regexp
}

// Callback is the HTTP endpoint asked for channels no rule matches.
type Callback struct {
	// URL is an absolute http or https URL, kept as written.
	URL string
	// CacheSeconds is how long an answer is cached per channel, 0..600
	// (DefaultCacheSeconds when the document omits it; 0 disables caching).
	CacheSeconds int
}

// invalidError is a validation failure named by its JSON path. It prints
// without the sentinel's text because admins read it in the 400 body.
type invalidError struct {
	path string
	msg  string
}

func (e *invalidError) Error() string {
	if e.path == "" {
		return e.msg
	}
	return e.path + ": " + e.msg
}

func (e *invalidError) Unwrap() error { return ErrInvalid }

func invalidf(path, format string, args ...any) error {
	return &invalidError{path: path, msg: fmt.Sprintf(format, args...)}
}

// ParsePrefixDocument parses and validates a prefix document. It is strict:
// unknown or duplicate fields (matched case-sensitively), wrong types, values
// out of range and trailing data are errors wrapping ErrInvalid whose message
// names the offending field, e.g. "rules[1].match: invalid regex: ...".
func ParsePrefixDocument(data []byte) (*PrefixDocument, error) {
	if len(data) > MaxPrefixDocumentBytes {
		return nil, invalidf("", "document larger than %d bytes", MaxPrefixDocumentBytes)
	}
	d := &PrefixDocument{}
	err := eachMember(data, "", func(key string, val json.RawMessage) error {
		switch key {
		case "rules":
			return d.parseRules(val)
		case "callback":
			return d.parseCallback(val)
		case "webhook":
			return d.parseWebhook(val)
		}
		return invalidf("", "unknown field %q", key)
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

func (d *PrefixDocument) parseRules(val json.RawMessage) error {
	var raws []json.RawMessage
	if err := json.Unmarshal(val, &raws); err != nil {
		return invalidf("rules", "must be an array of rules")
	}
	if len(raws) > MaxRules {
		return invalidf("rules", "at most %d rules", MaxRules)
	}
	total := 0
	for i, raw := range raws {
		path := "rules[" + strconv.Itoa(i) + "]"
		rule, size, err := parseRule(raw, path)
		if err != nil {
			return err
		}
		if total += size; total > MaxDocumentMatchSize {
			return invalidf(path+".match", "the rules' expressions are too large together")
		}
		d.Rules = append(d.Rules, rule)
	}
	return nil
}

func parseRule(raw json.RawMessage, path string) (Rule, int, error) {
	var r Rule
	var size int
	var hasMatch, hasConfig bool
	err := eachMember(raw, path, func(key string, val json.RawMessage) error {
		var err error
		switch key {
		case "match":
			hasMatch = true
			r.Match, r.re, size, err = parseMatch(val, path+".match")
		case "config":
			hasConfig = true
			var c *Config
			c, err = parseConfig(val, path+".config")
			if c != nil {
				r.Config = *c
			}
		default:
			err = invalidf(path, "unknown field %q", key)
		}
		return err
	})
	switch {
	case err != nil:
		return Rule{}, 0, err
	case !hasMatch:
		return Rule{}, 0, invalidf(path+".match", "required")
	case !hasConfig:
		return Rule{}, 0, invalidf(path+".config", "required")
	}
	return r, size, nil
}

// parseMatch compiles an RE2 expression anchored to the whole channel name.
// The source is first parsed alone so that input such as "a)|(b" or an open
// \Q quote cannot escape the anchoring group, and its size is bounded
// before compiling.
func parseMatch(val json.RawMessage, path string) (string, *regexp.Regexp, int, error) {
	src, err := decodeString(val, path)
	if err != nil {
		return "", nil, 0, err
	}
	if src == "" {
		return "", nil, 0, invalidf(path, "must not be empty")
	}
	if len(src) > MaxMatchBytes {
		return "", nil, 0, invalidf(path, "longer than %d bytes", MaxMatchBytes)
	}
	tree, err := syntax.Parse(src, syntax.Perl)
	if err != nil {
		return "", nil, 0, invalidf(path, "invalid regex: %v", err)
	}
	// With every \Q quote closed, a trailing \E is a stray escape and fails;
	// if it parses, a quote was open and would swallow the closing ")$".
	if _, err := syntax.Parse(src+`\E`, syntax.Perl); err == nil {
		return "", nil, 0, invalidf(path, `invalid regex: \Q quote without closing \E`)
	}
	size := matchSize(tree, MaxMatchSize)
	if size > MaxMatchSize {
		return "", nil, 0, invalidf(path, "regex too large")
	}
	re, err := regexp.Compile(`^(?:` + src + `)$`)
	if err != nil {
		return "", nil, 0, invalidf(path, "invalid regex: %v", err)
	}
	return src, re, size, nil
}

// matchSize estimates the compiled program size of re, saturating just above
// limit. Repetitions multiply: x{1000}y{1000}... is thousands of
// instructions per few bytes of source, which is what the estimate catches.
func matchSize(re *syntax.Regexp, limit int) int {
	n := 1
	switch re.Op {
	case syntax.OpLiteral:
		n = len(re.Rune)
	case syntax.OpRepeat:
		times := re.Max
		if times < 0 {
			times = re.Min + 1
		}
		sub := matchSize(re.Sub[0], limit)
		if times > 0 && sub > limit/times {
			return limit + 1
		}
		n = times*sub + 1
	default:
		for _, s := range re.Sub {
			n += matchSize(s, limit)
		}
	}
	return min(n, limit+1)
}

func (d *PrefixDocument) parseCallback(val json.RawMessage) error {
	if isNull(val) {
		return nil
	}
	c := &Callback{CacheSeconds: DefaultCacheSeconds}
	hasURL := false
	err := eachMember(val, "callback", func(key string, val json.RawMessage) error {
		switch key {
		case "url":
			hasURL = true
			u, err := parseHTTPURL(val, "callback.url", MaxCallbackURLBytes)
			c.URL = u
			return err
		case "cache_seconds":
			n, err := decodeInt(val, "callback.cache_seconds", 0, MaxCacheSeconds)
			c.CacheSeconds = n
			return err
		}
		return invalidf("callback", "unknown field %q", key)
	})
	if err != nil {
		return err
	}
	if !hasURL {
		return invalidf("callback.url", "required")
	}
	d.Callback = c
	return nil
}

// parseHTTPURL reads an absolute http or https URL of at most maxBytes.
func parseHTTPURL(val json.RawMessage, path string, maxBytes int) (string, error) {
	s, err := decodeString(val, path)
	if err != nil {
		return "", err
	}
	if len(s) > maxBytes {
		return "", invalidf(path, "longer than %d bytes", maxBytes)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", invalidf(path, "invalid URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.Opaque != "" {
		return "", invalidf(path, "must be an absolute http or https URL")
	}
	return s, nil
}

// ParseConfig parses and validates a channel config object strictly (see
// ParsePrefixDocument): the config of a rule and a callback's answer.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > MaxConfigBytes {
		return nil, invalidf("", "config larger than %d bytes", MaxConfigBytes)
	}
	return parseConfig(data, "")
}

func parseConfig(data []byte, path string) (*Config, error) {
	c := &Config{}
	err := eachMember(data, path, func(key string, val json.RawMessage) error {
		var err error
		switch key {
		case "public":
			c.Public, err = decodeBool(val, join(path, key))
		case "count_only":
			c.CountOnly, err = decodeBool(val, join(path, key))
		case "timeout":
			c.Timeout, err = decodeTimeout(val, join(path, key))
		case "max_users":
			c.MaxUsers, err = decodeMaxUsers(val, join(path, key))
		case "allowed_user_ids":
			c.AllowedUserIDs, err = decodeIDs(val, join(path, key))
		case "allowed_group_ids":
			c.AllowedGroupIDs, err = decodeIDs(val, join(path, key))
		default:
			err = invalidf(path, "unknown field %q", key)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// decodeTimeout reads a timeout written in JSON: 1..3600. An explicit 0 is
// rejected rather than read as "the default": an admin who writes it means
// something (no timeout, or expire at once) that the contract does not
// offer, and storing it as {} would silently give 60 s. Leaving the field
// out is how a document asks for the default.
func decodeTimeout(val json.RawMessage, path string) (int, error) {
	return decodeInt(val, path, MinTimeoutSeconds, MaxTimeoutSeconds)
}

// decodeMaxUsers reads a cap written in JSON: 1..MaxUsersLimit. As for the
// timeout, 0 is rejected rather than read as "no cap" (an admin writing it
// may mean "nobody"); leaving the field out is how a config has no cap.
func decodeMaxUsers(val json.RawMessage, path string) (int, error) {
	return decodeInt(val, path, 1, MaxUsersLimit)
}

// checkGoConfig reports what a config built in Go (a registered function's
// answer) has out of the contract's range; there the zero values are the
// defaults (a struct field cannot tell "absent" from 0): the default
// timeout, and no cap.
func checkGoConfig(c *Config) error {
	switch {
	case c.Timeout != 0 && (c.Timeout < MinTimeoutSeconds || c.Timeout > MaxTimeoutSeconds):
		return invalidf("timeout", "must be 0 (the default) or %d..%d, got %d", MinTimeoutSeconds, MaxTimeoutSeconds, c.Timeout)
	case c.MaxUsers < 0 || c.MaxUsers > MaxUsersLimit:
		return invalidf("max_users", "must be 0 (no cap) or 1..%d, got %d", MaxUsersLimit, c.MaxUsers)
	}
	return nil
}

// decodeIDs accepts null as an empty list: Go programs answering callbacks
// often marshal nil slices that way. Empty lists become nil so that parsing
// canonical output gives an equal config.
func decodeIDs(val json.RawMessage, path string) ([]string, error) {
	var ids []*string
	if err := json.Unmarshal(val, &ids); err != nil {
		return nil, invalidf(path, "must be an array of strings")
	}
	if len(ids) > MaxConfigIDs {
		return nil, invalidf(path, "at most %d ids", MaxConfigIDs)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		switch {
		case id == nil:
			return nil, invalidf(path+"["+strconv.Itoa(i)+"]", "must be a string")
		case *id == "" || len(*id) > MaxIDBytes:
			return nil, invalidf(path+"["+strconv.Itoa(i)+"]", "must be a non-empty string of at most %d bytes", MaxIDBytes)
		}
		out[i] = *id
	}
	return out, nil
}

func decodeBool(val json.RawMessage, path string) (bool, error) {
	var b *bool
	if err := json.Unmarshal(val, &b); err != nil || b == nil {
		return false, invalidf(path, "must be true or false")
	}
	return *b, nil
}

func decodeString(val json.RawMessage, path string) (string, error) {
	var s *string
	if err := json.Unmarshal(val, &s); err != nil || s == nil {
		return "", invalidf(path, "must be a string")
	}
	return *s, nil
}

func decodeInt(val json.RawMessage, path string, lo, hi int) (int, error) {
	var n *int64
	if err := json.Unmarshal(val, &n); err != nil || n == nil || *n < int64(lo) || *n > int64(hi) {
		return 0, invalidf(path, "must be an integer %d..%d", lo, hi)
	}
	return int(*n), nil
}

func isNull(val json.RawMessage) bool {
	return string(bytes.TrimSpace(val)) == "null"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// eachMember calls fn for every member of the JSON object data, in order,
// with its exact key. Unlike encoding/json's struct decoding it rejects
// duplicate keys, does not fold case, and rejects anything after the object.
func eachMember(data []byte, path string, fn func(key string, val json.RawMessage) error) error {
	where := path
	if where == "" {
		where = "document"
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil && !errors.Is(err, io.EOF) {
		return syntaxError(where, err)
	}
	if delim, ok := tok.(json.Delim); !ok || delim != '{' {
		return invalidf(path, "must be a JSON object")
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return syntaxError(where, err)
		}
		key, _ := tok.(string) // Token only yields strings in key position
		if seen[key] {
			return invalidf(path, "duplicate field %q", key)
		}
		seen[key] = true
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return syntaxError(join(path, key), err)
		}
		if err := fn(key, val); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return syntaxError(where, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalidf(path, "unexpected data after the object")
	}
	return nil
}

func syntaxError(where string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return invalidf(where, "invalid JSON: unexpected end of input")
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return invalidf(where, "invalid JSON at byte %d: %v", se.Offset, se)
	}
	return invalidf(where, "invalid JSON: %v", err)
}

// Canonical JSON shapes: every field present except an absent callback or
// webhook, so that cache_seconds 0 and the default stay distinct.
type ruleJSON struct {
	Match  string  `json:"match"`
	Config *Config `json:"config"`
}

type callbackJSON struct {
	URL          string `json:"url"`
	CacheSeconds int    `json:"cache_seconds"`
}

type documentJSON struct {
	Rules    []ruleJSON    `json:"rules"`
	Callback *callbackJSON `json:"callback,omitempty"`
	Webhook  *webhookJSON  `json:"webhook,omitempty"`
}

// Bytes renders the document as canonical JSON, the webhook's secret
// included (what Raft stores): parsing it gives an equal document, which
// renders to the same bytes.
func (d *PrefixDocument) Bytes() []byte {
	return d.render(false)
}

// RedactedBytes renders the canonical JSON of Bytes with the webhook's
// secret replaced by RedactedSecret: what admin reads show.
func (d *PrefixDocument) RedactedBytes() []byte {
	return d.render(true)
}

func (d *PrefixDocument) render(redact bool) []byte {
	out := documentJSON{Rules: make([]ruleJSON, len(d.Rules))}
	for i := range d.Rules {
		out.Rules[i] = ruleJSON{Match: d.Rules[i].Match, Config: &d.Rules[i].Config}
	}
	if d.Callback != nil {
		out.Callback = &callbackJSON{URL: d.Callback.URL, CacheSeconds: d.Callback.CacheSeconds}
	}
	if w := d.Webhook; w != nil {
		secret := w.Secret
		if redact {
			secret = RedactedSecret
		}
		out.Webhook = w.json(secret)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	// Only strings, bools, ints and their lists: encoding cannot fail.
	_ = enc.Encode(out)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// MarshalJSON renders the canonical JSON of Bytes, secret included.
func (d *PrefixDocument) MarshalJSON() ([]byte, error) { return d.Bytes(), nil }

// UnmarshalJSON parses like ParsePrefixDocument, so a document embedded in a
// larger JSON value is validated just as strictly.
func (d *PrefixDocument) UnmarshalJSON(data []byte) error {
	parsed, err := ParsePrefixDocument(data)
	if err != nil {
		return err
	}
	*d = *parsed
	return nil
}

// match returns the config of the first rule matching channel.
func (d *PrefixDocument) match(channel string) (*Config, bool) {
	for i := range d.Rules {
		if d.Rules[i].re.MatchString(channel) {
			return &d.Rules[i].Config, true
		}
	}
	return nil, false
}
