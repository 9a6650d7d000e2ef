package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/presencehq/presence/presence"
)

// updateRequest is a validated /presence/update body.
type updateRequest struct {
	ClientID string
	Present  []string
	Leave    []string
	// Token is the bearer token of a form or multipart body (what
	// navigator.sendBeacon sends cannot carry a header); "" when absent.
	// It is a credential: never log it or echo it in an error.
	Token string
}

// Form field names of an update; jQuery and FormData append "[]" to lists.
const (
	fieldClientID = "client_id"
	fieldPresent  = "present_channels"
	fieldLeave    = "leave_channels"
	fieldToken    = "token"
)

// maxFormParts bounds the parts of a multipart body (beyond the byte limit),
// so tiny parts cannot make parsing expensive: every list entry, the
// client id, the token and a few fields the client may add.
const maxFormParts = presence.MaxChannelsPerCall + presence.MaxLeaveChannels + 16

// parseUpdate reads and validates an update body of at most limit bytes,
// encoded as JSON, application/x-www-form-urlencoded or multipart/form-data
// (navigator.sendBeacon sends FormData as multipart, or a Blob of any type).
// Every error wraps presence.ErrInvalid or presence.ErrTooLarge.
func parseUpdate(contentType string, body io.Reader, limit int64) (updateRequest, error) {
	buf := bodyBuffers.Get().(*[]byte)
	defer releaseBody(buf)
	data, err := readInto(body, limit, buf)
	if err != nil {
		return updateRequest{}, err
	}
	if contentType == "application/json" { // the common case, without a params map
		return parseUpdateJSON(data)
	}
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		mediaType = ""
	}
	var fields formFields
	switch {
	case mediaType == "multipart/form-data":
		fields, err = parseMultipart(data, params["boundary"])
	case mediaType == "application/json",
		mediaType != "application/x-www-form-urlencoded" && looksLikeJSON(data):
		return parseUpdateJSON(data)
	default:
		fields, err = parseURLEncoded(data)
	}
	if err != nil {
		return updateRequest{}, err
	}
	return fields.update()
}

// bodyBuffers recycles the buffers bodies are read into (every value the
// parsers keep is copied out of the body, so a buffer is free once the
// request is parsed) and update answers are written from.
var bodyBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

// maxPooledBody is the largest buffer kept for reuse.
const maxPooledBody = 64 << 10

func releaseBody(buf *[]byte) {
	if cap(*buf) <= maxPooledBody {
		*buf = (*buf)[:0]
		bodyBuffers.Put(buf)
	}
}

// readLimited reads all of body, failing with ErrTooLarge past limit bytes.
func readLimited(body io.Reader, limit int64) ([]byte, error) {
	var buf []byte
	return readInto(body, limit, &buf)
}

// readInto is readLimited into buf, which is kept grown for its next use.
func readInto(body io.Reader, limit int64, buf *[]byte) ([]byte, error) {
	data := (*buf)[:0]
	var err error
	for int64(len(data)) <= limit {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		var n int
		n, err = body.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err != nil {
			break
		}
	}
	*buf = data
	if int64(len(data)) <= limit && (err == nil || err == io.EOF) {
		return data, nil
	}
	var tooLarge *http.MaxBytesError
	switch {
	case int64(len(data)) > limit, errors.As(err, &tooLarge):
		// The second case: an http.MaxBytesReader in front of us tripped first.
		return nil, fmt.Errorf("%w: body over %d bytes", presence.ErrTooLarge, limit)
	}
	return nil, invalid("unreadable body")
}

// looksLikeJSON sniffs bodies sent without a useful content type.
func looksLikeJSON(data []byte) bool {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	return len(trimmed) > 0 && trimmed[0] == '{'
}

// parseUpdateJSON validates {"client_id": "...", "present_channels": [...],
// "leave_channels": [...]}. Unknown fields are ignored; null lists are omitted.
func parseUpdateJSON(data []byte) (updateRequest, error) {
	if req, ok := scanUpdateJSON(data); ok {
		return req, req.validate()
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
	if err := json.Unmarshal(raw.ClientID, &req.ClientID); err != nil || raw.ClientID == nil {
		return updateRequest{}, invalid("client_id must be a non-empty string")
	}
	var err error
	if req.Present, err = jsonStrings(raw.Present, fieldPresent); err != nil {
		return updateRequest{}, err
	}
	if req.Leave, err = jsonStrings(raw.Leave, fieldLeave); err != nil {
		return updateRequest{}, err
	}
	return req, req.validate()
}

// jsonStrings decodes an optional array of strings. A null entry is an
// error: encoding/json would decode it into "" and the update would answer
// for a channel named "".
func jsonStrings(raw json.RawMessage, field string) ([]string, error) {
	if raw == nil || string(raw) == "null" {
		return nil, nil
	}
	var entries []*string
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, invalid("%s must be an array of strings", field)
	}
	list := make([]string, len(entries))
	for i, e := range entries {
		if e == nil {
			return nil, invalid("%s must be an array of strings (entry %d is null)", field, i)
		}
		list[i] = *e
	}
	return list, nil
}

// formFields collects the values of the known form fields.
type formFields map[string][]string

// add records a value, folding "name[]" onto "name".
func (f formFields) add(name, value string) {
	name = strings.TrimSuffix(name, "[]")
	switch name {
	case fieldClientID, fieldPresent, fieldLeave, fieldToken:
		f[name] = append(f[name], value)
	}
}

// update turns form fields into a validated request.
func (f formFields) update() (updateRequest, error) {
	ids := f[fieldClientID]
	if len(ids) != 1 {
		return updateRequest{}, invalid("client_id must be given exactly once")
	}
	req := updateRequest{ClientID: ids[0], Present: f[fieldPresent], Leave: f[fieldLeave]}
	switch tokens := f[fieldToken]; len(tokens) {
	case 0:
	case 1:
		req.Token = tokens[0]
	default:
		return updateRequest{}, invalid("token must be given at most once")
	}
	return req, req.validate()
}

func parseURLEncoded(data []byte) (formFields, error) {
	values, err := url.ParseQuery(string(data))
	if err != nil {
		return nil, invalid("malformed form body")
	}
	fields := formFields{}
	for name, vs := range values {
		for _, v := range vs {
			fields.add(name, v)
		}
	}
	return fields, nil
}

// parseMultipart reads the parts of a multipart body in memory; the body is
// already bounded, so no part can be larger than the limit.
func parseMultipart(data []byte, boundary string) (formFields, error) {
	if boundary == "" {
		return nil, invalid("multipart body without boundary")
	}
	mr := multipart.NewReader(bytes.NewReader(data), boundary)
	fields := formFields{}
	for range maxFormParts {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return fields, nil
		}
		if err != nil {
			return nil, invalid("malformed multipart body")
		}
		value, err := io.ReadAll(part)
		if err != nil {
			return nil, invalid("malformed multipart body")
		}
		fields.add(part.FormName(), string(value))
	}
	return nil, invalid("too many multipart parts")
}

// validate applies the contract's limits.
func (r updateRequest) validate() error {
	if r.ClientID == "" || len(r.ClientID) > presence.MaxClientIDBytes {
		return invalid("client_id must be a non-empty string of at most %d bytes", presence.MaxClientIDBytes)
	}
	if len(r.Present) > presence.MaxChannelsPerCall {
		return invalid("too many present_channels (at most %d)", presence.MaxChannelsPerCall)
	}
	if len(r.Leave) > presence.MaxLeaveChannels {
		return invalid("too many leave_channels (at most %d)", presence.MaxLeaveChannels)
	}
	return nil
}
