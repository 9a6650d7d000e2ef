package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"strings"

	"github.com/presencehq/presence/presence"
)

// The inputs of the /server/ endpoints (the application's backend),
// validated here so that the fuzz targets reach them without HTTP. Every
// error wraps presence.ErrInvalid and names the field.

// serverUpdateRequest is a validated POST /server/presence/update body:
// an update (the rules of /presence/update) on behalf of User.
type serverUpdateRequest struct {
	User *presence.User
	updateRequest
}

// serverUpdateJSON is the shape of the body; fields stay raw so that each
// is checked for its exact type (a null where a string belongs is an
// error, not "").
type serverUpdateJSON struct {
	User     json.RawMessage `json:"user"`
	ClientID json.RawMessage `json:"client_id"`
	Present  json.RawMessage `json:"present_channels"`
	Leave    json.RawMessage `json:"leave_channels"`
}

// serverUserJSON is the shape of the user object.
type serverUserJSON struct {
	ID             json.RawMessage `json:"id"`
	Username       json.RawMessage `json:"username"`
	Name           json.RawMessage `json:"name"`
	AvatarTemplate json.RawMessage `json:"avatar_template"`
	Groups         json.RawMessage `json:"groups"`
}

// parseServerUpdate validates {"user": {...}, "client_id": "...",
// "present_channels": [...], "leave_channels": [...]}. Unlike the
// browsers' update it is strict about unknown fields: a backend's typo
// ("present_channel") must not pass silently.
func parseServerUpdate(data []byte) (serverUpdateRequest, error) {
	var raw serverUpdateJSON
	if err := decodeStrict(data, &raw, ""); err != nil {
		return serverUpdateRequest{}, err
	}
	u, err := parseServerUser(raw.User)
	if err != nil {
		return serverUpdateRequest{}, err
	}
	req := serverUpdateRequest{User: u}
	if err := json.Unmarshal(raw.ClientID, &req.ClientID); err != nil || raw.ClientID == nil || string(raw.ClientID) == "null" {
		return serverUpdateRequest{}, invalid("client_id must be a non-empty string")
	}
	if req.Present, err = jsonStrings(raw.Present, fieldPresent); err != nil {
		return serverUpdateRequest{}, err
	}
	if req.Leave, err = jsonStrings(raw.Leave, fieldLeave); err != nil {
		return serverUpdateRequest{}, err
	}
	return req, req.validate()
}

// parseServerUser validates the user an update acts for: what a user
// token's claims carry (sub, username, name, avatar_template, groups).
func parseServerUser(raw json.RawMessage) (*presence.User, error) {
	if raw == nil || string(raw) == "null" {
		return nil, invalid("user is required")
	}
	var f serverUserJSON
	if err := decodeStrict(raw, &f, "user"); err != nil {
		return nil, err
	}
	u := &presence.User{}
	var id *string
	if json.Unmarshal(f.ID, &id) != nil || id == nil || *id == "" || len(*id) > presence.MaxUserIDBytes {
		return nil, invalid("user.id must be a string of 1..%d bytes", presence.MaxUserIDBytes)
	}
	u.ID = *id
	for _, field := range []struct {
		name string
		raw  json.RawMessage
		to   *string
	}{{"username", f.Username, &u.Username}, {"name", f.Name, &u.Name}, {"avatar_template", f.AvatarTemplate, &u.AvatarTemplate}} {
		if field.raw == nil {
			continue
		}
		var s *string
		if json.Unmarshal(field.raw, &s) != nil || s == nil {
			return nil, invalid("user.%s must be a string", field.name)
		}
		*field.to = *s
	}
	groups, err := jsonStrings(f.Groups, "user.groups")
	if err != nil {
		return nil, err
	}
	if u.Groups, err = checkGroups(groups, "user.groups"); err != nil {
		return nil, err
	}
	return u, nil
}

// checkGroups checks group ids as a config's allowed_group_ids holds them:
// 1..MaxIDBytes bytes each. An empty list is nil.
func checkGroups(groups []string, field string) ([]string, error) {
	for i, g := range groups {
		if g == "" || len(g) > presence.MaxIDBytes {
			return nil, invalid("%s[%d] must be a non-empty string of at most %d bytes", field, i, presence.MaxIDBytes)
		}
	}
	if len(groups) == 0 {
		return nil, nil
	}
	return groups, nil
}

// decodeStrict decodes one JSON object into v (a struct of raw fields),
// refusing unknown fields and trailing data. where names the object in
// messages ("" for the body).
func decodeStrict(data []byte, v any, where string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	prefix := ""
	if where != "" {
		prefix = where + ": "
	}
	if err := dec.Decode(v); err != nil {
		if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return invalid("%sunknown field %s", prefix, field)
		}
		if where == "" {
			return invalid("body is not a JSON object")
		}
		return invalid("%s must be a JSON object", where)
	}
	if first := bytes.TrimSpace(data); len(first) == 0 || first[0] != '{' {
		// null decodes into a struct without error.
		if where == "" {
			return invalid("body is not a JSON object")
		}
		return invalid("%s must be a JSON object", where)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("%sunexpected data after the object", prefix)
	}
	return nil
}

// parseServerChannels reads the channels of GET /server/presence/get:
// channels[] and channels, duplicates removed, 1..MaxInspectChannels.
func parseServerChannels(q url.Values) ([]string, error) {
	names := dedupe(append(q["channels[]"], q["channels"]...))
	switch {
	case len(names) == 0:
		return nil, invalid("channels is required")
	case len(names) > presence.MaxInspectChannels:
		return nil, invalid("too many channels (at most %d)", presence.MaxInspectChannels)
	}
	return names, nil
}

// parseCanQuery reads GET /server/presence/can?channel=&user_id=&groups[]=:
// the channel (required, exactly once) and the user (nil without user_id:
// an anonymous visitor). Groups need a user: an anonymous visitor has none.
func parseCanQuery(q url.Values) (string, *presence.User, error) {
	channel, err := oneChannel(q)
	if err != nil {
		return "", nil, err
	}
	groups := append(q["groups[]"], q["groups"]...)
	ids, ok := q["user_id"]
	if !ok {
		if len(groups) > 0 {
			return "", nil, invalid("groups need a user_id (an anonymous visitor has no groups)")
		}
		return channel, nil, nil
	}
	if len(ids) != 1 || ids[0] == "" || len(ids[0]) > presence.MaxUserIDBytes {
		return "", nil, invalid("user_id must be given once, 1..%d bytes", presence.MaxUserIDBytes)
	}
	u := &presence.User{ID: ids[0]}
	if u.Groups, err = checkGroups(groups, "groups"); err != nil {
		return "", nil, err
	}
	return channel, u, nil
}

// oneChannel reads the channel parameter of can and clear: required,
// exactly once. Its name is not checked: an invalid name is a channel
// that does not exist.
func oneChannel(q url.Values) (string, error) {
	chs := q["channel"]
	if len(chs) != 1 || chs[0] == "" {
		return "", invalid("channel must be given exactly once")
	}
	return chs[0], nil
}
