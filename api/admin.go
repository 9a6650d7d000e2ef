package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/presencehq/presence/presence"
)

// pathPrefix returns the validated {prefix} of an admin path.
func pathPrefix(r *http.Request) (string, error) {
	prefix := mux.Vars(r)["prefix"]
	if !presence.ValidPrefix(prefix) {
		return "", invalid("invalid prefix %q: use [a-zA-Z0-9_-], at most %d bytes", prefix, presence.MaxPrefixBytes)
	}
	return prefix, nil
}

// handlePutPrefix validates a prefix document and stores its canonical JSON;
// it answers after the store committed it, the webhook's secret redacted.
// A webhook secret of presence.RedactedSecret keeps the stored one.
func (s *server) handlePutPrefix(w http.ResponseWriter, r *http.Request) {
	prefix, err := pathPrefix(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	body, err := readLimited(http.MaxBytesReader(w, r.Body, s.cfg.MaxAdminBodyBytes), s.cfg.MaxAdminBodyBytes)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	doc, err := presence.ParsePrefixDocument(body)
	if err == nil && doc.KeepsStoredSecret() {
		err = doc.KeepStoredSecret(s.storedDocument(prefix))
	}
	if err != nil {
		s.writeError(w, r, fmt.Errorf("%w: %s", presence.ErrInvalid, err.Error()))
		return
	}
	if err := s.cfg.Prefixes.Put(r.Context(), prefix, doc.Bytes()); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeRawJSON(w, http.StatusOK, doc.RedactedBytes())
}

// storedDocument returns the document stored for prefix, nil when none.
func (s *server) storedDocument(prefix string) *presence.PrefixDocument {
	raw, ok := s.cfg.Prefixes.Get(prefix)
	if !ok {
		return nil
	}
	doc, err := presence.ParsePrefixDocument(raw)
	if err != nil {
		// Stored documents are canonical output of the parser.
		s.log.Error("stored prefix document does not parse", "prefix", prefix, "err", err)
		return nil
	}
	return doc
}

// redacted returns a stored document as admin reads show it: canonical,
// with its webhook's secret replaced by presence.RedactedSecret.
func redacted(raw []byte) ([]byte, error) {
	doc, err := presence.ParsePrefixDocument(raw)
	if err != nil {
		// Stored documents are canonical output of the parser: never shown
		// unparsed, since that could show a secret.
		return nil, fmt.Errorf("stored prefix document does not parse: %w", err)
	}
	return doc.RedactedBytes(), nil
}

// handleGetPrefix answers the stored document of a prefix.
func (s *server) handleGetPrefix(w http.ResponseWriter, r *http.Request) {
	prefix, err := pathPrefix(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	raw, ok := s.cfg.Prefixes.Get(prefix)
	if !ok {
		s.writeError(w, r, fmt.Errorf("%w: no document for prefix %q", presence.ErrNotFound, prefix))
		return
	}
	doc, err := redacted(raw)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeRawJSON(w, http.StatusOK, doc)
}

// handleDeletePrefix removes a prefix document: 204, or 404 when absent.
func (s *server) handleDeletePrefix(w http.ResponseWriter, r *http.Request) {
	prefix, err := pathPrefix(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.cfg.Prefixes.Delete(r.Context(), prefix); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleListPrefixes answers {"prefixes": {"<prefix>": <document>, ...}}.
func (s *server) handleListPrefixes(w http.ResponseWriter, r *http.Request) {
	docs := s.cfg.Prefixes.List()
	out := struct {
		Prefixes map[string]json.RawMessage `json:"prefixes"`
	}{Prefixes: make(map[string]json.RawMessage, len(docs))}
	for prefix, raw := range docs {
		doc, err := redacted(raw)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		out.Prefixes[prefix] = doc
	}
	writeJSON(w, http.StatusOK, out)
}

// clusterJSON is the answer of /admin/cluster.
type clusterJSON struct {
	Members []Member `json:"members"`
	Raft    RaftInfo `json:"raft"`
}

// handleCluster answers the members and the Raft view.
func (s *server) handleCluster(w http.ResponseWriter, r *http.Request) {
	out := clusterJSON{Members: s.cfg.Cluster.Members(), Raft: s.cfg.Cluster.Raft()}
	if out.Members == nil {
		out.Members = []Member{}
	}
	if out.Raft.Servers == nil {
		out.Raft.Servers = []string{}
	}
	if out.Raft.Voters == nil {
		out.Raft.Voters = []string{}
	}
	writeJSON(w, http.StatusOK, out)
}

// ownerJSON is the answer of /admin/owner.
type ownerJSON struct {
	Channel  string   `json:"channel"`
	Owner    string   `json:"owner"`
	Replicas []string `json:"replicas"`
}

// handleOwner answers which node owns ?channel= and which hold its replicas.
func (s *server) handleOwner(w http.ResponseWriter, r *http.Request) {
	channel := r.URL.Query().Get("channel")
	if !presence.ValidChannelName(channel) {
		s.writeError(w, r, invalid("channel must be a valid channel name"))
		return
	}
	owner, replicas := s.cfg.Cluster.Owner(channel)
	if replicas == nil {
		replicas = []string{}
	}
	writeJSON(w, http.StatusOK, ownerJSON{Channel: channel, Owner: owner, Replicas: replicas})
}

// handleHealthz answers 200 while the process serves.
func (s *server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReadyz answers 200 once the node is ready, 503 with the reason before.
func (s *server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if ok, reason := s.cfg.Cluster.Ready(); !ok {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Errors: []string{"not ready: " + reason}})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// writeRawJSON answers an already encoded JSON document.
func writeRawJSON(w http.ResponseWriter, status int, doc []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(doc)
	_, _ = io.WriteString(w, "\n")
}
