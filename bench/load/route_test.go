package load

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeCluster answers /admin/cluster and /admin/owner for nodes named
// n0..n(k-1) at the given HTTP addresses; a channel's owner is a hash of its
// name.
func fakeCluster(t *testing.T, addrs []string, adminToken string) http.Handler {
	t.Helper()
	owner := func(ch string) string {
		h := fnv.New32a()
		h.Write([]byte(ch))
		return "n" + string(rune('0'+h.Sum32()%uint32(len(addrs))))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+adminToken {
			http.Error(w, `{"errors":["admin token required"]}`, http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/admin/cluster":
			var members []map[string]string
			for i, a := range addrs {
				members = append(members, map[string]string{"name": "n" + string(rune('0'+i)), "http": a, "state": "alive"})
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"members": members})
		case "/admin/owner":
			ch := r.URL.Query().Get("channel")
			_ = json.NewEncoder(w).Encode(map[string]any{"channel": ch, "owner": owner(ch), "replicas": []string{}})
		default:
			http.NotFound(w, r)
		}
	})
}

func TestRoutesSendCallsWhereTheyClaim(t *testing.T) {
	// Only the first URL answers (LookupOwners asks it alone); the other two
	// are addresses the fake cluster advertises. Routing is checked on the
	// indexes of the URLs.
	srv := httptest.NewServer(nil)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	urls := []string{srv.URL, "http://127.0.0.2:1", "http://127.0.0.3:1"}
	srv.Config.Handler = fakeCluster(t, []string{host, "127.0.0.2:1", "127.0.0.3:1"}, "adm")
	pop, err := NewPopulation(PopulationConfig{RunID: "r", Users: 30, ClientsPerUser: 2, Channels: 40, Prefix: "/demo/x/",
		ChannelsPerUser: 2, ChannelsPerCall: 1, Mix: Mix{1, 0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	own, err := LookupOwners(context.Background(), srv.Client(), urls, "adm", pop)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(own.Names, ",") != "n0,n1,n2" {
		t.Fatalf("names %v", own.Names)
	}
	counts := own.Counts()
	if counts[0]+counts[1]+counts[2] != 40 || counts[0] == 0 || counts[1] == 0 || counts[2] == 0 {
		t.Fatalf("owners spread %v over 3 nodes", counts)
	}
	seen := map[Route]map[int]bool{}
	for u := range 30 {
		for c := range 40 {
			op := &Op{User: u, Client: u % 2, Channels: []int{c}}
			for _, r := range []Route{RouteClient, RouteOwner, RouteOther, RouteRandom} {
				i := r.pick(op, 2, len(urls), own)
				if i < 0 || i >= len(urls) {
					t.Fatalf("route %s picked %d", r, i)
				}
				switch {
				case r == RouteOwner && i != own.Owners[c]:
					t.Fatalf("route owner sent channel %d to %d, owner %d", c, i, own.Owners[c])
				case r == RouteOther && i == own.Owners[c]:
					t.Fatalf("route other sent channel %d to its owner %d", c, i)
				case r == RouteClient && i != (u*2+u%2)%3:
					t.Fatalf("route client sent user %d to %d", u, i)
				}
				if seen[r] == nil {
					seen[r] = map[int]bool{}
				}
				seen[r][i] = true
			}
		}
	}
	for r, nodes := range seen {
		if len(nodes) != 3 {
			t.Errorf("route %s used nodes %v, want all 3", r, nodes)
		}
	}
	if own.Moved(own) != 0 {
		t.Error("an ownership differs from itself")
	}
}

func TestLookupOwnersNamesWhatIsWrong(t *testing.T) {
	srv := httptest.NewServer(nil)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	srv.Config.Handler = fakeCluster(t, []string{host, "127.0.0.9:1"}, "adm")
	pop, err := NewPopulation(PopulationConfig{RunID: "r", Users: 2, ClientsPerUser: 1, Channels: 8, Prefix: "/demo/x/",
		ChannelsPerUser: 1, ChannelsPerCall: 1, Mix: Mix{1, 0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The second node is not among the URLs: its channels have no URL.
	if _, err := LookupOwners(ctx, srv.Client(), []string{srv.URL}, "adm", pop); !errors.Is(err, ErrOwnership) {
		t.Errorf("owners outside the URLs: %v", err)
	}
	// A URL no member advertises.
	if _, err := LookupOwners(ctx, srv.Client(), []string{srv.URL, "http://127.0.0.8:1"}, "adm", pop); !errors.Is(err, ErrOwnership) {
		t.Errorf("unknown URL: %v", err)
	}
	if _, err := LookupOwners(ctx, srv.Client(), []string{srv.URL, "http://127.0.0.9:1"}, "wrong", pop); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong admin token: %v", err)
	}
}

func TestParseRoute(t *testing.T) {
	for _, name := range []string{"client", "owner", "other", "random"} {
		r, err := ParseRoute(name)
		if err != nil || r.String() != name {
			t.Errorf("ParseRoute(%q) = %v, %v", name, r, err)
		}
	}
	if _, err := ParseRoute("nearest"); err == nil {
		t.Error("unknown route accepted")
	}
}
