package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// adminTimeout bounds one admin call.
const adminTimeout = 10 * time.Second

// Admin calls one node's operational endpoints (/readyz and /admin/*).
type Admin struct {
	URL    string       // node base URL
	Token  string       // admin bearer token
	Client *http.Client // nil = a client with a 10 s timeout
}

// ClusterView is the answer of GET /admin/cluster.
type ClusterView struct {
	Members []MemberView `json:"members"`
	Raft    struct {
		Leader  string   `json:"leader"`
		Servers []string `json:"servers"`
		Voters  []string `json:"voters"`
	} `json:"raft"`
}

// MemberView is one member of a ClusterView.
type MemberView struct {
	Name  string `json:"name"`
	HTTP  string `json:"http"`
	State string `json:"state"`
}

// Alive returns the names of the members in state "alive".
func (v ClusterView) Alive() []string {
	var out []string
	for _, m := range v.Members {
		if m.State == "alive" {
			out = append(out, m.Name)
		}
	}
	return out
}

// OwnerView is the answer of GET /admin/owner.
type OwnerView struct {
	Channel  string   `json:"channel"`
	Owner    string   `json:"owner"`
	Replicas []string `json:"replicas"`
}

// Ready returns nil when the node answers /readyz with 200.
func (a Admin) Ready(ctx context.Context) error {
	status, body, err := a.do(ctx, http.MethodGet, "/readyz", nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("%s/readyz: %d %s", a.URL, status, body)
	}
	return nil
}

// Cluster returns the node's view of members and Raft.
func (a Admin) Cluster(ctx context.Context) (ClusterView, error) {
	var v ClusterView
	return v, a.getJSON(ctx, "/admin/cluster", &v)
}

// Owner returns the node's view of who owns channel.
func (a Admin) Owner(ctx context.Context, channel string) (OwnerView, error) {
	var v OwnerView
	return v, a.getJSON(ctx, "/admin/owner?channel="+url.QueryEscape(channel), &v)
}

// PutPrefix stores doc for prefix and returns the stored (canonical)
// document; the node answers after the Raft commit.
func (a Admin) PutPrefix(ctx context.Context, prefix string, doc []byte) ([]byte, error) {
	status, body, err := a.do(ctx, http.MethodPut, "/admin/prefixes/"+url.PathEscape(prefix), doc)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("PUT %s/admin/prefixes/%s: %d %s", a.URL, prefix, status, body)
	}
	return body, nil
}

// GetPrefix returns the status and body of GET /admin/prefixes/{prefix}.
func (a Admin) GetPrefix(ctx context.Context, prefix string) (int, []byte, error) {
	return a.do(ctx, http.MethodGet, "/admin/prefixes/"+url.PathEscape(prefix), nil)
}

func (a Admin) getJSON(ctx context.Context, path string, v any) error {
	status, body, err := a.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s%s: %d %s", a.URL, path, status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s%s: %w", a.URL, path, err)
	}
	return nil
}

func (a Admin) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.URL+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := a.Client
	if client == nil {
		client = &http.Client{Timeout: adminTimeout}
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	return resp.StatusCode, bytes.TrimSpace(data), err
}

// PublicPrefixDocument returns a prefix document with one rule: every
// channel of prefix is public with the given client timeout.
func PublicPrefixDocument(prefix string, timeout time.Duration) []byte {
	return fmt.Appendf(nil, `{"rules": [{"match": "/%s/.+", "config": {"public": true, "timeout": %d}}]}`,
		prefix, int(timeout/time.Second))
}

// CappedPrefixDocument is PublicPrefixDocument with max_users: at most
// maxUsers users in each channel at once.
func CappedPrefixDocument(prefix string, timeout time.Duration, maxUsers int) []byte {
	return fmt.Appendf(nil, `{"rules": [{"match": "/%s/.+", "config": {"public": true, "timeout": %d, "max_users": %d}}]}`,
		prefix, int(timeout/time.Second), maxUsers)
}

// ChannelNames returns n channel names "/<prefix>/<label>-<i>".
func ChannelNames(prefix, label string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("/%s/%s-%d", prefix, label, i)
	}
	return out
}

// SameJSON reports whether two JSON documents are equal as values.
func SameJSON(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	ca, _ := json.Marshal(va)
	cb, _ := json.Marshal(vb)
	return string(ca) == string(cb)
}
