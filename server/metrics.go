package server

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/cluster/raftstore"
)

// raftStates are the values of the state label of presence_raft_state, in
// hashicorp/raft's words, lower-cased.
var raftStates = []string{"follower", "candidate", "leader", "shutdown"}

// raftStatus is what the Raft collector reads of the store; every call is a
// read of Raft's own atomics, cheap enough for each scrape.
type raftStatus interface {
	State() string
	Term() uint64
	Leader() (id, addr string)
	Servers() ([]raftstore.Server, error)
}

// raftCollector exports this node's view of Raft, read at scrape time: the
// values are always current and no goroutine has to keep them so.
type raftCollector struct {
	store                            raftStatus
	state, term, leaderKnown, voters *prometheus.Desc
}

func newRaftCollector(store raftStatus) *raftCollector {
	return &raftCollector{
		store: store,
		state: prometheus.NewDesc("presence_raft_state",
			"This node's Raft state: 1 for the current one, 0 for the others.", []string{"state"}, nil),
		term: prometheus.NewDesc("presence_raft_term",
			"This node's current Raft term; it grows with every election.", nil, nil),
		leaderKnown: prometheus.NewDesc("presence_raft_leader_known",
			"1 when this node knows a Raft leader, 0 otherwise.", nil, nil),
		voters: prometheus.NewDesc("presence_raft_voters",
			"Voters in the latest Raft configuration this node knows.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.term
	ch <- c.leaderKnown
	ch <- c.voters
}

// Collect implements prometheus.Collector.
func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	current := strings.ToLower(c.store.State())
	for _, st := range raftStates {
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, boolValue(st == current), st)
	}
	ch <- prometheus.MustNewConstMetric(c.term, prometheus.GaugeValue, float64(c.store.Term()))
	id, _ := c.store.Leader()
	ch <- prometheus.MustNewConstMetric(c.leaderKnown, prometheus.GaugeValue, boolValue(id != ""))
	servers, err := c.store.Servers()
	if err != nil {
		// The configuration is unreadable only once Raft is shut down; a
		// missing sample says "unknown" better than a made-up zero.
		return
	}
	voters := 0
	for _, srv := range servers {
		if srv.Voter {
			voters++
		}
	}
	ch <- prometheus.MustNewConstMetric(c.voters, prometheus.GaugeValue, float64(voters))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
