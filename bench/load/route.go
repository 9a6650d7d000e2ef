package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// Route says which node an operation is sent to.
type Route uint8

// The routes. Owner, Other and Random need an Ownership.
const (
	// RouteClient sends client i's calls to URLs[i mod n], as browsers
	// spread over a cluster without knowing who owns what.
	RouteClient Route = iota
	// RouteOwner sends each call to the node owning its (first) channel.
	RouteOwner
	// RouteOther sends each call to a node that does not own its channel,
	// so every call is forwarded once.
	RouteOther
	// RouteRandom sends each call to a node picked at random.
	RouteRandom
)

var routeNames = [...]string{"client", "owner", "other", "random"}

// String names the route as the --route flag does.
func (r Route) String() string { return routeNames[r] }

// ParseRoute reads a route name.
func ParseRoute(s string) (Route, error) {
	if i := slices.Index(routeNames[:], strings.TrimSpace(s)); i >= 0 {
		return Route(i), nil
	}
	return 0, fmt.Errorf("route %q: want one of %s", s, strings.Join(routeNames[:], ", "))
}

// NeedsOwners reports whether the route must know each channel's owner.
func (r Route) NeedsOwners() bool { return r == RouteOwner || r == RouteOther }

// ErrOwnership is wrapped by LookupOwners when the cluster's answers do not
// map every channel to one of the given URLs.
var ErrOwnership = errors.New("load: cannot map channel owners to the given URLs")

// Ownership maps each channel of a population to the index (into the
// URLs) of the node owning it, as the cluster said when asked.
type Ownership struct {
	Owners []int    // by channel index
	Names  []string // node name of each URL
}

// lookupWorkers bounds the concurrent /admin/owner requests.
const lookupWorkers = 16

// LookupOwners asks the first node for the members' HTTP addresses
// (GET /admin/cluster) and for the owner of every channel of pop
// (GET /admin/owner), with adminToken. Each URL must be the address a
// member advertises (host:port as in --http).
func LookupOwners(ctx context.Context, client *http.Client, urls []string, adminToken string, pop *Population) (*Ownership, error) {
	if len(urls) == 0 {
		return nil, fmt.Errorf("%w: no URLs", ErrOwnership)
	}
	byName, names, err := memberURLs(ctx, client, urls, adminToken)
	if err != nil {
		return nil, err
	}
	own := &Ownership{Owners: make([]int, pop.Config().Channels), Names: names}
	errs := make(chan error, lookupWorkers)
	next := make(chan int)
	var wg sync.WaitGroup
	for range lookupWorkers {
		wg.Go(func() {
			for c := range next {
				o, err := ownerOf(ctx, client, urls[0], adminToken, pop.ChannelName(c))
				if err == nil {
					var ok bool
					if own.Owners[c], ok = byName[o]; !ok {
						err = fmt.Errorf("%w: %s is owned by %q, which is not at any of %s", ErrOwnership, pop.ChannelName(c), o, strings.Join(urls, ", "))
					}
				}
				if err != nil {
					errs <- err
					for range next { // drain so the feeder ends
					}
					return
				}
			}
		})
	}
	for c := range own.Owners {
		select {
		case next <- c:
		case err := <-errs:
			close(next)
			wg.Wait()
			return nil, err
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	return own, nil
}

// Moved counts the channels whose owner differs between own and later.
func (own *Ownership) Moved(later *Ownership) int {
	n := 0
	for c, o := range own.Owners {
		if c >= len(later.Owners) || later.Owners[c] != o {
			n++
		}
	}
	return n
}

// Counts returns how many channels each URL's node owns.
func (own *Ownership) Counts() []int {
	out := make([]int, len(own.Names))
	for _, o := range own.Owners {
		out[o]++
	}
	return out
}

// memberURLs maps member names to URL indexes by their advertised HTTP
// address, and names each URL.
func memberURLs(ctx context.Context, client *http.Client, urls []string, adminToken string) (map[string]int, []string, error) {
	var cluster struct {
		Members []struct {
			Name string `json:"name"`
			HTTP string `json:"http"`
		} `json:"members"`
	}
	if err := getJSON(ctx, client, urls[0]+"/admin/cluster", adminToken, &cluster); err != nil {
		return nil, nil, err
	}
	byName := make(map[string]int)
	names := make([]string, len(urls))
	for i, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrOwnership, err)
		}
		for _, m := range cluster.Members {
			if m.HTTP == u.Host {
				byName[m.Name], names[i] = i, m.Name
			}
		}
		if names[i] == "" {
			return nil, nil, fmt.Errorf("%w: no member of %s advertises %s", ErrOwnership, urls[0], u.Host)
		}
	}
	return byName, names, nil
}

func ownerOf(ctx context.Context, client *http.Client, base, adminToken, channel string) (string, error) {
	var ans struct {
		Owner string `json:"owner"`
	}
	err := getJSON(ctx, client, base+"/admin/owner?channel="+url.QueryEscape(channel), adminToken, &ans)
	return ans.Owner, err
}

func getJSON(ctx context.Context, client *http.Client, u, adminToken string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s (is --admin-token right?)", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

// pick returns the URL index for op under route r over n URLs.
func (r Route) pick(op *Op, clientsPerUser, n int, own *Ownership) int {
	switch {
	case n == 1 || r == RouteClient || len(op.Channels) == 0:
		return (op.User*clientsPerUser + op.Client) % n
	case r == RouteRandom:
		return rand.IntN(n)
	}
	owner := own.Owners[op.Channels[0]]
	if r == RouteOwner {
		return owner
	}
	// Spread a user's calls over the other nodes when there are several.
	return (owner + 1 + op.User%(n-1)) % n
}
