package container

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/presencehq/presence/cluster/autopilot"
)

// readyPoll paces WaitReady.
const readyPoll = 200 * time.Millisecond

// WaitReady polls Ready until it holds or ctx ends; it then wraps
// ErrNotReady around the last reason seen before the end.
func (c *Cluster) WaitReady(ctx context.Context, running []string) error {
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	var last error
	for {
		err := c.Ready(ctx, running)
		if err == nil {
			return nil
		}
		// A call cut short by ctx says less than the one before it.
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNotReady, last)
		case <-t.C:
		}
	}
}

// Ready returns nil when every node of running (a service, or a scaled
// container's node name) answers /readyz with 200, names the same Raft
// leader (one of them), sees all of them alive, lists all of them as Raft
// servers, and has only running voters, as many as autopilot aims at
// (every restarted node promoted again): a cluster that can take the next
// fault with a Raft majority left.
func (c *Cluster) Ready(ctx context.Context, running []string) error {
	wantVoters := autopilot.Voters(len(running), autopilot.DefaultMaxVoters)
	leader := ""
	for _, s := range running {
		a := c.Admin(s)
		if a.URL == "" {
			return fmt.Errorf("%s: address unknown before Up", s)
		}
		if err := a.Ready(ctx); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		view, err := a.Cluster(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		switch {
		case !slices.Contains(running, view.Raft.Leader):
			return fmt.Errorf("%s: Raft leader %q is not a running node", s, view.Raft.Leader)
		case leader != "" && view.Raft.Leader != leader:
			return fmt.Errorf("%s names leader %s, another node %s", s, view.Raft.Leader, leader)
		}
		leader = view.Raft.Leader
		alive := view.Alive()
		for _, name := range running {
			if !slices.Contains(alive, name) {
				return fmt.Errorf("%s does not see %s alive (alive: %v)", s, name, alive)
			}
			if !slices.Contains(view.Raft.Servers, name) {
				return fmt.Errorf("%s: %s is not a Raft server (servers: %v)", s, name, view.Raft.Servers)
			}
		}
		for _, name := range view.Raft.Voters {
			if !slices.Contains(running, name) {
				return fmt.Errorf("%s: Raft voter %s is not running (voters: %v)", s, name, view.Raft.Voters)
			}
		}
		if len(view.Raft.Voters) < wantVoters {
			return fmt.Errorf("%s: %d Raft voters %v, want %d", s, len(view.Raft.Voters), view.Raft.Voters, wantVoters)
		}
	}
	return nil
}
