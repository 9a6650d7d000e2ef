package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
)

// PrefixDocument configures the channels of one prefix (PUT
// /admin/prefixes/{prefix}): rules tried in order, then an optional
// callback.
type PrefixDocument struct {
	Rules    []Rule    `json:"rules"`
	Callback *Callback `json:"callback,omitempty"`
}

// Rule gives the channels whose whole name matches an RE2 expression a
// config.
type Rule struct {
	Match  string        `json:"match"`
	Config ChannelConfig `json:"config"`
}

// ChannelConfig is a channel's configuration; zero fields are left out
// (Timeout 0: the default, 60 s; MaxUsers 0: no cap).
type ChannelConfig struct {
	Public          bool     `json:"public,omitempty"`
	AllowedUserIDs  []string `json:"allowed_user_ids,omitempty"`
	AllowedGroupIDs []string `json:"allowed_group_ids,omitempty"`
	CountOnly       bool     `json:"count_only,omitempty"`
	Timeout         int      `json:"timeout,omitempty"`   // seconds, 1..3600
	MaxUsers        int      `json:"max_users,omitempty"` // 1..1,000,000
}

// Callback is the application's endpoint asked for channels no rule
// matches.
type Callback struct {
	URL string `json:"url"`
	// CacheSeconds is how long answers are cached per channel, 0..600;
	// nil means the server's default (10), 0 disables caching.
	CacheSeconds *int `json:"cache_seconds,omitempty"`
}

// Member is one node of the cluster's view.
type Member struct {
	Name  string `json:"name"`
	HTTP  string `json:"http"`
	State string `json:"state"`
}

// ClusterView is GET /admin/cluster.
type ClusterView struct {
	Members []Member `json:"members"`
	Raft    struct {
		Leader  string   `json:"leader"`
		Servers []string `json:"servers"`
	} `json:"raft"`
}

// Owner is GET /admin/owner: who owns a channel, who holds its replicas.
type Owner struct {
	Channel  string   `json:"channel"`
	Owner    string   `json:"owner"`
	Replicas []string `json:"replicas"`
}

func prefixPath(prefix string) string { return "/admin/prefixes/" + url.PathEscape(prefix) }

// PutPrefix stores the document of prefix through Raft and returns it as
// stored (canonical: zero fields dropped, cache_seconds written). It
// returns once the write is committed; an invalid document is an error
// matching ErrBadRequest and changes nothing.
func (cl *Client) PutPrefix(ctx context.Context, prefix string, doc PrefixDocument) (PrefixDocument, error) {
	if doc.Rules == nil {
		doc.Rules = []Rule{}
	}
	var stored PrefixDocument
	err := cl.do(ctx, call{method: http.MethodPut, path: prefixPath(prefix), body: doc, admin: true, out: &stored})
	return stored, err
}

// PutPrefixJSON stores a document given as JSON, as written (see
// PutPrefix), and returns the stored canonical JSON.
func (cl *Client) PutPrefixJSON(ctx context.Context, prefix string, doc json.RawMessage) (json.RawMessage, error) {
	var stored []byte
	err := cl.do(ctx, call{method: http.MethodPut, path: prefixPath(prefix), body: doc, admin: true, raw: &stored})
	return json.RawMessage(stored), err
}

// GetPrefix returns the document stored for prefix; ErrNotFound when none.
func (cl *Client) GetPrefix(ctx context.Context, prefix string) (PrefixDocument, error) {
	var doc PrefixDocument
	err := cl.do(ctx, call{method: http.MethodGet, path: prefixPath(prefix), admin: true, out: &doc})
	return doc, err
}

// ListPrefixes returns every stored document by prefix.
func (cl *Client) ListPrefixes(ctx context.Context) (map[string]PrefixDocument, error) {
	var out struct {
		Prefixes map[string]PrefixDocument `json:"prefixes"`
	}
	err := cl.do(ctx, call{method: http.MethodGet, path: "/admin/prefixes", admin: true, out: &out})
	return out.Prefixes, err
}

// DeletePrefix removes the document of prefix; ErrNotFound when none was
// stored.
func (cl *Client) DeletePrefix(ctx context.Context, prefix string) error {
	return cl.do(ctx, call{method: http.MethodDelete, path: prefixPath(prefix), admin: true})
}

// Cluster returns the members and the Raft view of the node that answers.
func (cl *Client) Cluster(ctx context.Context) (ClusterView, error) {
	var v ClusterView
	err := cl.do(ctx, call{method: http.MethodGet, path: "/admin/cluster", admin: true, out: &v})
	return v, err
}

// Owner returns which node owns channel and which hold its replicas.
func (cl *Client) Owner(ctx context.Context, channel string) (Owner, error) {
	var o Owner
	err := cl.do(ctx, call{method: http.MethodGet, path: "/admin/owner", query: url.Values{"channel": {channel}}, admin: true, out: &o})
	return o, err
}
