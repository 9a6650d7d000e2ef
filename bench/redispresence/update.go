package redispresence

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/presencehq/presence/bench/discourse"
)

// updateRequest is a validated /presence/update body.
type updateRequest struct {
	ClientID string
	Present  []string
	Leave    []string
}

// parseUpdate reads and validates {"client_id": "...", "present_channels":
// [...], "leave_channels": [...]}, the node's JSON body, with the node's
// messages. Unknown fields are ignored; lists may be null or omitted.
func parseUpdate(body io.Reader, limit int64) (updateRequest, error) {
	data, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return updateRequest{}, fmt.Errorf("%w: body over %d bytes", ErrTooLarge, limit)
		}
		return updateRequest{}, invalid("unreadable body")
	}
	if int64(len(data)) > limit {
		return updateRequest{}, fmt.Errorf("%w: body over %d bytes", ErrTooLarge, limit)
	}
	var raw struct {
		ClientID json.RawMessage `json:"client_id"`
		Present  json.RawMessage `json:"present_channels"`
		Leave    json.RawMessage `json:"leave_channels"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return updateRequest{}, invalid("body is not a JSON object")
	}
	var req updateRequest
	if raw.ClientID == nil || json.Unmarshal(raw.ClientID, &req.ClientID) != nil {
		return updateRequest{}, invalid("client_id must be a non-empty string")
	}
	if req.ClientID == "" || len(req.ClientID) > MaxClientIDBytes {
		return updateRequest{}, invalid("client_id must be a non-empty string of at most %d bytes", MaxClientIDBytes)
	}
	if req.Present, err = channelList(raw.Present, "present_channels"); err != nil {
		return updateRequest{}, err
	}
	if req.Leave, err = channelList(raw.Leave, "leave_channels"); err != nil {
		return updateRequest{}, err
	}
	return req, nil
}

// channelList decodes an optional array of strings of at most
// MaxChannelsPerList entries, without repeats.
func channelList(raw json.RawMessage, field string) ([]string, error) {
	var list []string
	if raw != nil && json.Unmarshal(raw, &list) != nil {
		return nil, invalid("%s must be an array of strings", field)
	}
	if len(list) > MaxChannelsPerList {
		return nil, invalid("too many %s (at most %d)", field, MaxChannelsPerList)
	}
	return dedupe(list), nil
}

func dedupe(list []string) []string {
	out := list[:0]
	for i, name := range list {
		repeated := false
		for _, earlier := range list[:i] {
			if earlier == name {
				repeated = true
				break
			}
		}
		if !repeated {
			out = append(out, name)
		}
	}
	return out
}

// handleUpdate is POST /presence/update: the present channels are marked
// (Discourse's present script), then the leave channels left, all in one
// round trip to Redis. The answer maps each present channel to whether it
// exists: {"/demo/a": true}. Channels that do not exist are not sent to
// Redis; leaves of them are ignored, as the node does.
func (s *Server) handleUpdate(w http.ResponseWriter, r *http.Request) {
	user, err := s.auth.userID(r)
	if err != nil {
		s.writeError(w, err)
		return
	}
	req, err := parseUpdate(r.Body, s.cfg.MaxBody)
	if err != nil {
		s.writeError(w, err)
		return
	}
	answer := make(map[string]bool, len(req.Present))
	ops := make([]discourse.Op, 0, len(req.Present)+len(req.Leave))
	for _, ch := range req.Present {
		ok := s.exists(ch)
		answer[ch] = ok
		if ok {
			ops = append(ops, discourse.Op{Channel: ch, UserID: user, ClientID: req.ClientID})
		}
	}
	for _, ch := range req.Leave {
		if s.exists(ch) {
			ops = append(ops, discourse.Op{Leave: true, Channel: ch, UserID: user, ClientID: req.ClientID})
		}
	}
	if err := s.apply(r, ops); err != nil {
		s.writeError(w, err)
		return
	}
	body, err := json.Marshal(answer)
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// apply runs the scripts of ops: a single one as its own call, several in
// one pipeline.
func (s *Server) apply(r *http.Request, ops []discourse.Op) error {
	ctx, now := r.Context(), s.cfg.Now()
	var err error
	switch len(ops) {
	case 0:
		return nil
	case 1:
		if op := ops[0]; op.Leave {
			_, err = s.store.Leave(ctx, op.Channel, op.UserID, op.ClientID)
		} else {
			_, err = s.store.Present(ctx, op.Channel, op.UserID, op.ClientID, now)
		}
	default:
		results := make([]discourse.Result, len(ops))
		err = s.store.Pipeline(ctx, ops, now, results)
		for _, res := range results {
			if err == nil {
				err = res.Err
			}
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// exists reports whether a channel exists: a valid name of a configured
// prefix.
func (s *Server) exists(channel string) bool {
	p, ok := channelPrefix(channel)
	if !ok {
		return false
	}
	_, ok = s.prefixes[p]
	return ok
}
