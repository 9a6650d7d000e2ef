package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// recapChildEnv makes TestRecapChild run: it fails on purpose, in a child
// process of TestRecapRepeatsFailuresAtTheEnd.
const recapChildEnv = "TESTKIT_RECAP_CHILD"

func TestRecapChild(t *testing.T) {
	if os.Getenv(recapChildEnv) == "" {
		t.Skip("run by TestRecapRepeatsFailuresAtTheEnd in a child process")
	}
	r := NewRecap(t)
	r.Cleanup(func() { r.Log("node logs: a long dump") })
	var tb testing.TB = r // the way the suites pass it on
	tb.Errorf("round %d: a user was lost", 3)
	tb.Log("later output")
	tb.Error("webhook gap\nline 2")
}

func TestRecapRepeatsFailuresAtTheEnd(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestRecapChild$", "-test.v")
	cmd.Env = append(os.Environ(), recapChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the child test passed, want it to fail:\n%s", out)
	}
	text := string(out)
	recap := strings.Index(text, "TestRecapChild failed on 2 check(s), repeated from above:")
	dump := strings.Index(text, "node logs: a long dump")
	fail := strings.Index(text, "--- FAIL: TestRecapChild")
	if recap < 0 || dump < 0 || fail < 0 || !(dump < recap && recap < fail) {
		t.Fatalf("want the recap after the other cleanups' output and before --- FAIL:\n%s", text)
	}
	tail := text[recap:fail]
	for _, want := range []string{"1. round 3: a user was lost", "2. webhook gap", "line 2"} {
		if !strings.Contains(tail, want) {
			t.Errorf("recap lacks %q:\n%s", want, tail)
		}
	}
	if strings.Contains(tail, "later output") {
		t.Errorf("recap repeats a log line:\n%s", tail)
	}
	// Reported where the test called it, not inside the wrapper.
	at := fmt.Sprintf("recap_test.go:%d: round 3: a user was lost", lineOf(t, "recap_test.go", `tb.Errorf("round %d: a user was lost", 3)`))
	if !strings.Contains(text, at) {
		t.Errorf("the failure is not reported as %q:\n%s", at, text)
	}
}

// lineOf returns the number of the line of file that holds code.
func lineOf(t *testing.T, file, code string) int {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(string(src), "\n") {
		if strings.Contains(line, code) && !strings.Contains(line, "lineOf") {
			return i + 1
		}
	}
	t.Fatalf("%s has no line with %q", file, code)
	return 0
}

func TestRecapKeepsALongFailureShort(t *testing.T) {
	r := &Recap{T: t}
	r.note(strings.Repeat("line\n", 40))
	got := r.recorded()
	if len(got) != 1 || strings.Count(got[0], "\n") != recapLines || !strings.HasSuffix(got[0], "(28 more lines above)") {
		t.Fatalf("failures = %q, want %d lines and a count of the rest", got, recapLines)
	}
}
