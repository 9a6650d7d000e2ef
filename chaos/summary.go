package chaos

import (
	"fmt"
	"strings"
	"testing"
)

// Summary adds up the comparisons and stream checks of a run.
type Summary struct {
	UsersChecked int64
	Lost         int64
	Ghosts       int64
	Missing      int64 // channels answered null
	Messages     int64
	Resyncs      int64
	Violations   int64
	// OverCap counts channels read with more users than their cap, and
	// CapViolations the answers to presents the cap cannot explain (see
	// Model.CapJudgements); Refused the presents a cap refused.
	OverCap       int64
	CapViolations int64
	Refused       int64
	Examples      []string
}

// AddCheck adds one comparison (the final one of a Converge).
func (s *Summary) AddCheck(r CheckResult) {
	s.UsersChecked += int64(r.UsersChecked)
	s.Lost += int64(r.Lost)
	s.Ghosts += int64(r.Ghosts)
	s.Missing += int64(r.Missing)
	s.OverCap += int64(r.OverCap)
	s.addExamples(r.Examples)
}

// AddCaps takes the model's judgements of a capped workload's presents.
func (s *Summary) AddCaps(m *Model) {
	refused, violations, examples := m.CapJudgements()
	s.Refused += refused
	s.CapViolations += violations
	s.addExamples(examples)
}

// SetStreams takes the stream counters (totals of the whole run).
func (s *Summary) SetStreams(st StreamStats) {
	s.Messages, s.Resyncs, s.Violations = st.Messages, st.Resyncs, st.Violations
	s.addExamples(st.Examples)
}

func (s *Summary) addExamples(ex []string) {
	for _, e := range ex {
		if len(s.Examples) >= 3*maxExamples {
			return
		}
		s.Examples = append(s.Examples, e)
	}
}

// OK reports whether nothing was lost, invented, missing or violated.
func (s Summary) OK() bool {
	return s.Lost == 0 && s.Ghosts == 0 && s.Missing == 0 && s.Violations == 0 && s.OverCap == 0 && s.CapViolations == 0
}

// String is the summary line.
func (s Summary) String() string {
	line := fmt.Sprintf("chaos: users checked %d, lost %d, ghosts %d, messages %d, resyncs %d, violations %d",
		s.UsersChecked, s.Lost, s.Ghosts, s.Messages, s.Resyncs, s.Violations)
	if s.Missing > 0 {
		line += fmt.Sprintf(", missing channels %d", s.Missing)
	}
	if s.Refused > 0 || s.OverCap > 0 || s.CapViolations > 0 {
		line += fmt.Sprintf(", refused by max_users %d, over max_users %d, cap violations %d", s.Refused, s.OverCap, s.CapViolations)
	}
	return line
}

// Require logs the summary line and fails t when anything was lost,
// invented, missing or violated.
func Require(t testing.TB, s Summary) {
	t.Helper()
	t.Log(s.String())
	if !s.OK() {
		t.Errorf("%s\nexamples:\n  %s", s.String(), strings.Join(s.Examples, "\n  "))
	}
}
