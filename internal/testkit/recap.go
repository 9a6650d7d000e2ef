package testkit

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// Recap is a test whose failures are repeated at its very end. A long
// test (the process chaos suites print every node's log when they fail)
// buries the message of its failure under later output, and a CI excerpt
// around the "--- FAIL" line then shows logs but not why the test failed.
// Pass it wherever a testing.TB is wanted; failures reported through it
// are both logged at once, as usual, and recapped.
type Recap struct {
	*testing.T

	mu       sync.Mutex
	failures []string
}

// recapLines bounds the lines of one failure in the recap (the full
// message is in the output above it).
const recapLines = 12

// NewRecap wraps t. Call it first in the test: the recap is printed by the
// first cleanup registered, which runs after all the others.
func NewRecap(t *testing.T) *Recap {
	r := &Recap{T: t}
	t.Cleanup(r.print)
	return r
}

// Error is testing.T's Error, recapped.
func (r *Recap) Error(args ...any) {
	r.T.Helper()
	r.note(fmt.Sprint(args...))
	r.T.Error(args...)
}

// Errorf is testing.T's Errorf, recapped.
func (r *Recap) Errorf(format string, args ...any) {
	r.T.Helper()
	r.note(fmt.Sprintf(format, args...))
	r.T.Errorf(format, args...)
}

// Fatal is testing.T's Fatal, recapped.
func (r *Recap) Fatal(args ...any) {
	r.T.Helper()
	r.note(fmt.Sprint(args...))
	r.T.Fatal(args...)
}

// Fatalf is testing.T's Fatalf, recapped.
func (r *Recap) Fatalf(format string, args ...any) {
	r.T.Helper()
	r.note(fmt.Sprintf(format, args...))
	r.T.Fatalf(format, args...)
}

func (r *Recap) note(msg string) {
	lines := strings.Split(strings.TrimRight(msg, "\n"), "\n")
	if len(lines) > recapLines {
		lines = append(lines[:recapLines], fmt.Sprintf("(%d more lines above)", len(lines)-recapLines))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, strings.Join(lines, "\n"))
}

// recorded returns the failures reported through r so far.
func (r *Recap) recorded() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.failures...)
}

func (r *Recap) print() {
	failures := r.recorded()
	if len(failures) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s failed on %d check(s), repeated from above:", r.Name(), len(failures))
	for i, f := range failures {
		fmt.Fprintf(&b, "\n  %d. %s", i+1, strings.ReplaceAll(f, "\n", "\n     "))
	}
	r.T.Log(b.String())
}
