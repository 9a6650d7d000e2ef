package server_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testcluster"
	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/server"
)

// dashboardFile is the Grafana dashboard operators import (docs/operations.md),
// as failures name it.
const dashboardFile = "deploy/grafana/presence-dashboard.json"

// The dashboard's queries are held against what a running node exports:
// a metric renamed or removed in the code, or misspelt in a panel, fails
// here instead of showing an empty panel in production.

// grafanaDashboard is the part of Grafana's dashboard JSON model the test
// reads.
type grafanaDashboard struct {
	Title         string         `json:"title"`
	UID           string         `json:"uid"`
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type grafanaPanel struct {
	Title      string         `json:"title"`
	Type       string         `json:"type"`
	Datasource *grafanaSource `json:"datasource"`
	Targets    []struct {
		Expr       string         `json:"expr"`
		Datasource *grafanaSource `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's
}

type grafanaSource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// dashboardQuery is one PromQL expression and the panel it belongs to.
type dashboardQuery struct{ panel, expr string }

func loadDashboard(t *testing.T) (grafanaDashboard, []dashboardQuery) {
	t.Helper()
	raw, err := os.ReadFile("../" + dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var queries []dashboardQuery
	var walk func([]grafanaPanel)
	walk = func(panels []grafanaPanel) {
		for _, p := range panels {
			walk(p.Panels)
			for _, target := range p.Targets {
				queries = append(queries, dashboardQuery{panel: p.Title, expr: target.Expr})
				for _, src := range []*grafanaSource{p.Datasource, target.Datasource} {
					if src == nil || src.Type != "prometheus" || src.UID != "${datasource}" {
						t.Errorf("%s: panel %q: datasource %+v, want the ${datasource} variable", dashboardFile, p.Title, src)
					}
				}
			}
		}
	}
	walk(d.Panels)
	return d, queries
}

func TestGrafanaDashboardModel(t *testing.T) {
	d, queries := loadDashboard(t)
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 36 {
		t.Errorf("%s: title %q, uid %q, schemaVersion %d: want a titled dashboard with a uid, schema 36 or later", dashboardFile, d.Title, d.UID, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Name == "datasource" && v.Query != "prometheus" {
			t.Errorf("%s: the datasource variable lists %v, want prometheus", dashboardFile, v.Query)
		}
	}
	if vars["datasource"] != "datasource" || vars["instance"] != "query" {
		t.Errorf("%s: variables %v, want a datasource variable \"datasource\" and a query variable \"instance\"", dashboardFile, vars)
	}
	if len(queries) == 0 {
		t.Fatalf("%s has no query", dashboardFile)
	}
	for _, q := range queries {
		selectors, err := promqlSelectors(q.expr)
		if err != nil {
			t.Errorf("%s: panel %q: %v in %s", dashboardFile, q.panel, err, q.expr)
			continue
		}
		for _, s := range selectors {
			if !slices.Contains(s.matchers, `instance=~"$instance"`) {
				t.Errorf("%s: panel %q: %s is not filtered by the node variable (instance=~\"$instance\")", dashboardFile, q.panel, s.metric)
			}
		}
	}
}

func TestGrafanaDashboardQueriesExportedMetrics(t *testing.T) {
	_, queries := loadDashboard(t)
	// One stream per user, so that the exercise can have one refused.
	c := testcluster.Start(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.MaxStreamsPerUser = 1 }))
	c.WaitReady()
	n := c.Node(0)
	exercise(t, c, n)

	families := scrapeFamilies(t, n.URL()+"/metrics")
	queried := map[string]bool{}
	for _, q := range queries {
		selectors, err := promqlSelectors(q.expr)
		if err != nil {
			t.Fatalf("%s: panel %q: %v", dashboardFile, q.panel, err)
		}
		for _, s := range selectors {
			family, ok := exportedFamily(families, s.metric)
			if !ok {
				t.Errorf("%s: panel %q queries %s, which a running node does not export (GET /metrics)", dashboardFile, q.panel, s.metric)
				continue
			}
			queried[family] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(families)) {
		if strings.HasPrefix(name, "presence_") && !queried[name] {
			t.Errorf("a node exports %s (%s) but no panel of %s shows it: add one (and a line in docs/operations.md)", name, families[name], dashboardFile)
		}
	}

	// The Raft gauges of a node that bootstrapped alone: it leads.
	values := scrapeValues(t, n.URL()+"/metrics")
	for sample, want := range map[string]float64{
		`presence_raft_state{state="leader"}`:   1,
		`presence_raft_state{state="follower"}`: 0,
		`presence_raft_leader_known`:            1,
		`presence_raft_voters`:                  1,
	} {
		if got, ok := values[sample]; !ok || got != want {
			t.Errorf("%s = %v (exported: %v), want %v", sample, got, ok, want)
		}
	}
	if values["presence_raft_term"] < 1 {
		t.Errorf("presence_raft_term = %v, want a term of at least 1", values["presence_raft_term"])
	}
}

// exercise drives a node through what the dashboard watches: a prefix
// write, a heartbeat, a read, a subscription with a message and a stream
// refused by a limit, so that every metric a deployment shows has been
// touched (a labelled counter is exported from its first child on).
func exercise(t *testing.T, c *testcluster.Cluster, n *testcluster.Node) {
	t.Helper()
	putPrefix(t, c, 0, "m", publicPrefix)
	user := n.Client(testcluster.Token("1"))
	stream, err := user.Subscribe(map[string]int64{"/m/dash": -1}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if status, body, err := user.Do(http.MethodGet, "/presence/subscribe?channels="+url.QueryEscape(`{"/m/dash":-1}`), nil); err != nil || status != http.StatusTooManyRequests {
		t.Fatalf("a second stream of a user limited to one: %d %s %v, want 429", status, body, err)
	}
	c.WaitFor(settleTimeout, func() error {
		got, err := user.Update("tab", []string{"/m/dash"}, nil)
		if err != nil || !got["/m/dash"] {
			return fmt.Errorf("update: %v %v", got, err)
		}
		return stream.WaitEvents(time.Second, func(evs []testcluster.Event) error {
			for _, ev := range evs {
				if ev.Event == "message" {
					return nil
				}
			}
			return fmt.Errorf("no message yet in %d events", len(evs))
		})
	})
	if _, err := user.Get("/m/dash"); err != nil {
		t.Fatal(err)
	}
	// A prefix with a webhook, and an event delivered to it.
	receiver := testkit.NewEndpoint(t, http.StatusOK, nil)
	putPrefix(t, c, 0, "hook", `{"rules":[{"match":"/hook/.+","config":{"public":true}}],`+
		`"webhook":{"url":"`+receiver.URL+`","secret":"dashboard"}}`)
	if got, err := user.Update("tab", []string{"/hook/dash"}, nil); err != nil || !got["/hook/dash"] {
		t.Fatalf("update of a webhook's channel: %v %v", got, err)
	}
	c.WaitFor(settleTimeout, func() error {
		if receiver.Requests() == 0 {
			return fmt.Errorf("no webhook request yet")
		}
		return nil
	})
}

// scrapeFamilies returns the metric families of a /metrics answer in the
// text format, by name, with their type.
func scrapeFamilies(t *testing.T, url string) map[string]string {
	t.Helper()
	families := map[string]string{}
	for _, line := range scrape(t, url) {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			families[name] = typ
		}
	}
	if len(families) == 0 {
		t.Fatalf("%s: no metric family", url)
	}
	return families
}

// scrapeValues returns the samples of a /metrics answer by series.
func scrapeValues(t *testing.T, url string) map[string]float64 {
	t.Helper()
	values := map[string]float64{}
	for _, line := range scrape(t, url) {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		values[line[:i]] = v
	}
	return values
}

func scrape(t *testing.T, url string) []string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// exportedFamily returns the family a queried series belongs to: its own
// name, or for name_bucket, name_sum and name_count the histogram (or
// summary, for _sum and _count) it is part of.
func exportedFamily(families map[string]string, metric string) (string, bool) {
	if _, ok := families[metric]; ok {
		return metric, true
	}
	for suffix, types := range map[string][]string{
		"_bucket": {"histogram"},
		"_sum":    {"histogram", "summary"},
		"_count":  {"histogram", "summary"},
	} {
		base, ok := strings.CutSuffix(metric, suffix)
		if ok && slices.Contains(types, families[base]) {
			return base, true
		}
	}
	return "", false
}
