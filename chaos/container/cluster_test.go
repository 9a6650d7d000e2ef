package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDocker answers commands from a table keyed by "name arg arg ..." and
// records every command it saw.
type fakeDocker struct {
	mu      sync.Mutex
	answers map[string]string // command line -> stdout
	failing map[string]bool   // command lines that fail
	seen    []command
}

func (f *fakeDocker) run(_ context.Context, cmd command) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, cmd)
	line := strings.Join(append([]string{cmd.name}, cmd.args...), " ")
	if f.failing[line] {
		return nil, fmt.Errorf("%w: %s", ErrCommand, line)
	}
	return []byte(f.answers[line]), nil
}

// lines returns the command lines seen, in order.
func (f *fakeDocker) lines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.seen {
		out = append(out, strings.Join(append([]string{c.name}, c.args...), " "))
	}
	return out
}

const (
	testID   = "4413420df5c8a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a"
	psNode2  = "docker ps -a -q --no-trunc --filter label=com.docker.compose.project=chaos-test --filter label=com.docker.compose.service=node2"
	networks = `{"chaos-test_presence":{"IPAMConfig":{"IPv4Address":"172.28.0.12"},"Aliases":["4413420df5c8","node2"],"IPAddress":"172.28.0.12"}}`
)

func newTestCluster(t *testing.T, f *fakeDocker) *Cluster {
	t.Helper()
	c, err := New(Config{
		Compose: []string{"docker", "compose"}, File: "cluster.yml", Project: "chaos-test",
		Env: []string{"PRESENCE_DEV=false"}, Services: []string{"node2"}, AdminToken: "admin",
	})
	if err != nil {
		t.Fatal(err)
	}
	c.run = f.run
	return c
}

func TestNewRejectsBadConfig(t *testing.T) {
	good := Config{Compose: []string{"docker-compose"}, File: "f.yml", Project: "p", AdminToken: "a"}
	for name, mutate := range map[string]func(*Config){
		"no compose":      func(c *Config) { c.Compose = nil },
		"no file":         func(c *Config) { c.File = "" },
		"no admin token":  func(c *Config) { c.AdminToken = "" },
		"upper case name": func(c *Config) { c.Project = "Chaos" },
		"empty project":   func(c *Config) { c.Project = "" },
		"short grace":     func(c *Config) { c.StopGrace = time.Millisecond },
	} {
		cfg := good
		mutate(&cfg)
		if _, err := New(cfg); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%s: New = %v, want ErrBadConfig", name, err)
		}
	}
	c, err := New(good)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Services(); !slices.Equal(got, []string{"node1", "node2", "node3"}) {
		t.Errorf("default services %v", got)
	}
}

func TestDetectComposePrefersThePlugin(t *testing.T) {
	f := &fakeDocker{}
	got, err := detectCompose(context.Background(), f.run, "")
	if err != nil || !slices.Equal(got, []string{"docker", "compose"}) {
		t.Errorf("with the plugin: %v, %v", got, err)
	}
	f = &fakeDocker{failing: map[string]bool{"docker compose version": true}}
	got, err = detectCompose(context.Background(), f.run, "")
	if err != nil || !slices.Equal(got, []string{"docker-compose"}) {
		t.Errorf("without the plugin: %v, %v", got, err)
	}
	f = &fakeDocker{failing: map[string]bool{"docker compose version": true, "docker-compose version": true}}
	if _, err := detectCompose(context.Background(), f.run, ""); !errors.Is(err, ErrNoCompose) {
		t.Errorf("without any: %v, want ErrNoCompose", err)
	}
}

func TestUpLearnsURLsAndPassesEnvironment(t *testing.T) {
	f := &fakeDocker{answers: map[string]string{
		psNode2:                               testID + "\n",
		"docker port " + testID + " 8080/tcp": "127.0.0.1:8082\n[::1]:8082\n",
	}}
	c := newTestCluster(t, f)
	if err := c.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.URL("node2"); got != "http://127.0.0.1:8082" {
		t.Errorf("URL = %q", got)
	}
	if got := f.lines()[0]; got != "docker compose -f cluster.yml -p chaos-test up -d --remove-orphans" {
		t.Errorf("first command %q", got)
	}
	if !slices.Equal(f.seen[0].env, []string{"PRESENCE_DEV=false"}) {
		t.Errorf("compose environment %v", f.seen[0].env)
	}
	if err := c.Down(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if got := f.lines()[len(f.seen)-1]; got != "docker compose -f cluster.yml -p chaos-test down --remove-orphans -t 15 -v" {
		t.Errorf("down command %q", got)
	}
}

// TestOverridesAndRun: override files follow the compose file, each with
// its -f, in every command; Run starts a one-off container of a service.
func TestOverridesAndRun(t *testing.T) {
	f := &fakeDocker{answers: map[string]string{}}
	c, err := New(Config{
		Compose: []string{"docker-compose"}, File: "cluster.yml", Overrides: []string{"tls.yml"},
		Project: "chaos-test", Services: []string{"node2"}, AdminToken: "admin",
	})
	if err != nil {
		t.Fatal(err)
	}
	c.run = f.run
	if _, err := c.Run(context.Background(), "tls", "ca", "--dir", "/tls"); err != nil {
		t.Fatal(err)
	}
	if err := c.Down(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"docker-compose -f cluster.yml -f tls.yml -p chaos-test run --rm tls ca --dir /tls",
		"docker-compose -f cluster.yml -f tls.yml -p chaos-test down --remove-orphans -t 15 -v",
	}
	if got := f.lines(); !slices.Equal(got, want) {
		t.Errorf("commands %q, want %q", got, want)
	}
}

func TestIDNeedsExactlyOneContainer(t *testing.T) {
	f := &fakeDocker{answers: map[string]string{}}
	c := newTestCluster(t, f)
	if _, err := c.ID(context.Background(), "node2"); !errors.Is(err, ErrNoContainer) {
		t.Errorf("none: %v, want ErrNoContainer", err)
	}
	f.answers[psNode2] = "a\nb\n"
	if _, err := c.ID(context.Background(), "node2"); err == nil {
		t.Error("two containers: no error")
	}
}

func TestStopReportsExitCode(t *testing.T) {
	f := &fakeDocker{answers: map[string]string{
		psNode2: testID,
		"docker inspect -f {{.State.ExitCode}} " + testID: "0\n",
	}}
	c := newTestCluster(t, f)
	exit, err := c.Stop(context.Background(), "node2")
	if err != nil || exit.Code != 0 {
		t.Fatalf("Stop = %v, %v", exit, err)
	}
	if !slices.Contains(f.lines(), "docker stop -t 15 "+testID) {
		t.Errorf("no docker stop with the grace period in %v", f.lines())
	}
	f.answers["docker inspect -f {{.State.ExitCode}} "+testID] = "137\n"
	if exit, _ := c.Stop(context.Background(), "node2"); exit.Code != 137 {
		t.Errorf("killed after the grace: code %d", exit.Code)
	}
}

func TestDisconnectThenConnectRestoresAddressAndAlias(t *testing.T) {
	f := &fakeDocker{answers: map[string]string{
		psNode2: testID,
		"docker inspect -f {{json .NetworkSettings.Networks}} " + testID: networks,
	}}
	c := newTestCluster(t, f)
	att, err := c.Disconnect(context.Background(), "node2")
	if err != nil {
		t.Fatal(err)
	}
	want := Attachment{Network: "chaos-test_presence", IP: "172.28.0.12", Aliases: []string{"node2"}}
	if att.Network != want.Network || att.IP != want.IP || !slices.Equal(att.Aliases, want.Aliases) {
		t.Errorf("attachment %+v, want %+v", att, want)
	}
	if err := c.Connect(context.Background(), "node2", att); err != nil {
		t.Fatal(err)
	}
	lines := f.lines()
	for _, w := range []string{
		"docker network disconnect chaos-test_presence " + testID,
		"docker network connect --ip 172.28.0.12 --alias node2 chaos-test_presence " + testID,
	} {
		if !slices.Contains(lines, w) {
			t.Errorf("missing %q in %v", w, lines)
		}
	}
}

func TestParseAttachmentNeedsOneNetwork(t *testing.T) {
	for _, in := range []string{`{}`, `{"a":{},"b":{}}`, `not json`} {
		if _, err := parseAttachment([]byte(in), testID); err == nil {
			t.Errorf("%s: no error", in)
		}
	}
	att, err := parseAttachment([]byte(`{"n":{"IPAMConfig":null,"Aliases":null}}`), testID)
	if err != nil || att.Network != "n" || att.IP != "" || att.Aliases != nil {
		t.Errorf("dynamic address: %+v, %v", att, err)
	}
}

func TestParsePort(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8081\n":          "http://127.0.0.1:8081",
		"0.0.0.0:9000\n":            "http://127.0.0.1:9000",
		"[::]:9000\n0.0.0.0:9000\n": "http://127.0.0.1:9000",
		"[::]:9000\n":               "http://[::1]:9000",
	} {
		if got, err := parsePort([]byte(in)); err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := parsePort(nil); err == nil {
		t.Error("nothing published: no error")
	}
}

func TestSaveLogsSkipsMissingContainers(t *testing.T) {
	f := &fakeDocker{answers: map[string]string{
		psNode2:                    testID,
		"docker logs -t " + testID: "line 1\nline 2\n",
	}}
	c := newTestCluster(t, f)
	c.cfg.Services = []string{"node2", "node9"}
	dir := filepath.Join(t.TempDir(), "logs")
	if err := c.SaveLogs(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "node2.log"))
	if err != nil || string(got) != "line 1\nline 2\n" {
		t.Errorf("node2.log: %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node9.log")); !os.IsNotExist(err) {
		t.Errorf("node9.log exists without a container: %v", err)
	}
}

// fakeNode serves the admin endpoints Ready reads.
func fakeNode(t *testing.T, ready bool, cluster string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			if !ready {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		case "/admin/cluster":
			fmt.Fprint(w, cluster)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// clusterJSON answers /admin/cluster; voters are the servers but for
// nonvoters.
func clusterJSON(leader string, alive, servers []string, nonvoters ...string) string {
	var members []string
	for _, m := range alive {
		members = append(members, fmt.Sprintf(`{"name":%q,"http":"x","state":"alive"}`, m))
	}
	var voters []string
	for _, s := range servers {
		if !slices.Contains(nonvoters, s) {
			voters = append(voters, s)
		}
	}
	list := func(names []string) string {
		b, _ := json.Marshal(append([]string{}, names...))
		return string(b)
	}
	return fmt.Sprintf(`{"members":[%s],"raft":{"leader":%q,"servers":%s,"voters":%s}}`,
		strings.Join(members, ","), leader, list(servers), list(voters))
}

func TestReady(t *testing.T) {
	both := []string{"a", "b"}
	cases := []struct {
		name   string
		a, b   string
		readyB bool
		ok     bool
	}{
		{"agree", clusterJSON("a", both, both), clusterJSON("a", both, both), true, true},
		{"b not ready", clusterJSON("a", both, both), clusterJSON("a", both, both), false, false},
		{"two leaders", clusterJSON("a", both, both), clusterJSON("b", both, both), true, false},
		{"leader not running", clusterJSON("c", both, both), clusterJSON("c", both, both), true, false},
		{"b not alive", clusterJSON("a", []string{"a"}, both), clusterJSON("a", both, both), true, false},
		{"b not a server", clusterJSON("a", both, []string{"a"}), clusterJSON("a", both, []string{"a"}), true, false},
		{"b a non-voter", clusterJSON("a", both, both, "b"), clusterJSON("a", both, both, "b"), true, true},
		{"a stopped voter", clusterJSON("a", both, []string{"a", "b", "c"}), clusterJSON("a", both, []string{"a", "b", "c"}), true, false},
		{"no voter", clusterJSON("a", both, both, "a", "b"), clusterJSON("a", both, both, "a", "b"), true, false},
	}
	for _, tc := range cases {
		c, err := New(Config{Compose: []string{"x"}, File: "f", Project: "p", AdminToken: "t", Services: both})
		if err != nil {
			t.Fatal(err)
		}
		c.urls["a"], c.urls["b"] = fakeNode(t, true, tc.a), fakeNode(t, tc.readyB, tc.b)
		err = c.Ready(context.Background(), both)
		if (err == nil) != tc.ok {
			t.Errorf("%s: Ready = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestWaitReadyGivesUpWithTheReason(t *testing.T) {
	c, err := New(Config{Compose: []string{"x"}, File: "f", Project: "p", AdminToken: "t", Services: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	c.urls["a"] = fakeNode(t, false, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.WaitReady(ctx, []string{"a"}); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "503") {
		t.Errorf("WaitReady = %v, want ErrNotReady with the /readyz answer", err)
	}
}
