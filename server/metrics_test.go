package server

import (
	"errors"
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/cluster/raftstore"
)

// fakeRaft is a raftStatus with settable answers.
type fakeRaft struct {
	state      string
	term       uint64
	leader     string
	servers    []raftstore.Server
	serversErr error
}

func (f *fakeRaft) State() string                        { return f.state }
func (f *fakeRaft) Term() uint64                         { return f.term }
func (f *fakeRaft) Leader() (string, string)             { return f.leader, "" }
func (f *fakeRaft) Servers() ([]raftstore.Server, error) { return f.servers, f.serversErr }

// gatherGauges returns every gauge sample of reg as "name" or
// "name{label=value}" -> value.
func gatherGauges(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			out[key] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestRaftCollectorExportsTheCurrentView(t *testing.T) {
	raft := &fakeRaft{state: "Follower", term: 3, leader: "n1", servers: []raftstore.Server{
		{ID: "n1", Voter: true}, {ID: "n2", Voter: true}, {ID: "n3", Voter: false},
	}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newRaftCollector(raft))
	want := func(state string, term, known float64, voters float64) map[string]float64 {
		m := map[string]float64{"presence_raft_term": term, "presence_raft_leader_known": known}
		for _, st := range []string{"follower", "candidate", "leader", "shutdown"} {
			m["presence_raft_state{state="+st+"}"] = 0
		}
		m["presence_raft_state{state="+state+"}"] = 1
		if voters >= 0 {
			m["presence_raft_voters"] = voters
		}
		return m
	}
	check := func(what string, want map[string]float64) {
		t.Helper()
		if got := gatherGauges(t, reg); !maps.Equal(got, want) {
			t.Fatalf("%s: exported %v, want %v", what, got, want)
		}
	}
	check("follower with a leader", want("follower", 3, 1, 2))

	// Read at scrape time: a change shows at the next scrape.
	raft.state, raft.term, raft.leader = "Candidate", 4, ""
	check("candidate without a leader", want("candidate", 4, 0, 2))
	raft.state, raft.leader = "Leader", "n2"
	check("leader", want("leader", 4, 1, 2))

	// An unreadable configuration leaves the voters out instead of saying 0.
	raft.state, raft.serversErr = "Shutdown", errors.New("raft is shut down")
	check("shut down", want("shutdown", 4, 1, -1))
}
