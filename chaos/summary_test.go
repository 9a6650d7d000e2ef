package chaos

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// recordingTB captures failures instead of failing the test.
type recordingTB struct {
	testing.TB
	errors []string
}

func (r *recordingTB) Helper()         {}
func (r *recordingTB) Log(args ...any) {}
func (r *recordingTB) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func TestSummaryLineAndRequire(t *testing.T) {
	var s Summary
	s.AddCheck(CheckResult{UsersChecked: 10, Lost: 0})
	s.AddCheck(CheckResult{UsersChecked: 5})
	s.SetStreams(StreamStats{Messages: 40, Resyncs: 2})
	want := "chaos: users checked 15, lost 0, ghosts 0, messages 40, resyncs 2, violations 0"
	if s.String() != want {
		t.Errorf("summary %q, want %q", s.String(), want)
	}
	tb := &recordingTB{TB: t}
	Require(tb, s)
	if len(tb.errors) != 0 {
		t.Errorf("Require failed a clean run: %v", tb.errors)
	}

	for _, bad := range []Summary{{Lost: 1}, {Ghosts: 1}, {Violations: 1}, {Missing: 1}} {
		tb := &recordingTB{TB: t}
		bad.addExamples([]string{"lost: u1 in /a"})
		Require(tb, bad)
		if len(tb.errors) != 1 || !strings.Contains(tb.errors[0], "lost: u1 in /a") {
			t.Errorf("Require(%+v): %v, want one failure with the examples", bad, tb.errors)
		}
	}
}

func TestPublicPrefixDocument(t *testing.T) {
	var doc struct {
		Rules []struct {
			Match  string `json:"match"`
			Config struct {
				Public  bool `json:"public"`
				Timeout int  `json:"timeout"`
			} `json:"config"`
		} `json:"rules"`
	}
	if err := json.Unmarshal(PublicPrefixDocument("chaos", 45*time.Second), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Rules) != 1 || doc.Rules[0].Match != "/chaos/.+" || !doc.Rules[0].Config.Public || doc.Rules[0].Config.Timeout != 45 {
		t.Errorf("document %+v", doc)
	}
	if got := ChannelNames("p", "room", 2); len(got) != 2 || got[1] != "/p/room-1" {
		t.Errorf("ChannelNames: %v", got)
	}
	if !SameJSON([]byte(`{"a": 1, "b": [true]}`), []byte(`{"b":[true],"a":1}`)) || SameJSON([]byte(`{"a": 1}`), []byte(`{"a": 2}`)) {
		t.Error("SameJSON compares values")
	}
}
