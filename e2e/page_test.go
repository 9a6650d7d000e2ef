//go:build browser

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/presencehq/presence/internal/testkit"
)

// testPage is a minimal app on the real client. It imports
// <first url>/presence-client.js, so the module under test is the one the
// node serves, and renders every channel it follows into the DOM, which the
// tests read. It is served from its own origin, as a third-party site using
// the service would be (the nodes run --dev, which allows any origin).
// Every request of the client is logged in window.e2e.log.
const testPage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>presence e2e</title>
<link rel="icon" href="data:,">
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2230; }
  section { border: 1px solid #d0d4dc; border-radius: 8px; padding: 8px 16px; margin: 12px 0; }
  li { margin: 2px 0; }
  .meta { color: #6b7280; }
</style>
</head>
<body>
<h1 id="who">not started</h1>
<p class="meta">node in use: <span id="url">–</span>, stream connected: <span id="connected">false</span></p>
<div id="channels"></div>
<script type="module">
const log = [];
const sections = new Map();

async function loggedFetch(url, init) {
  const entry = { url: String(url), method: init?.method ?? "GET", at: Date.now(), status: 0, error: "" };
  log.push(entry);
  try {
    const res = await fetch(url, init);
    entry.status = res.status;
    return res;
  } catch (err) {
    entry.error = String(err);
    throw err;
  }
}

function render(ch) {
  const s = sections.get(ch.name);
  s.dataset.subscribed = String(ch.subscribed);
  s.dataset.countOnly = String(ch.countOnly === true);
  s.querySelector(".count").textContent = ch.count ?? -1;
  const users = ch.users ?? [];
  s.querySelector("ul").replaceChildren(...users.map((u) => {
    const li = document.createElement("li");
    li.dataset.userId = u.id;
    li.textContent = (u.name || u.username || u.id) + " (" + u.id + ")";
    return li;
  }));
}

function renderClient(client) {
  document.getElementById("url").textContent = client.url;
  document.getElementById("connected").textContent = String(client.connected);
}

window.e2e = {
  log,
  client: null,
  handles: new Map(),

  async start(opts) {
    const { PresenceClient } = await import(opts.urls[0] + "/presence-client.js");
    const options = { urls: opts.urls, token: opts.token, fetch: loggedFetch };
    if (opts.heartbeatMs) options.heartbeatMs = opts.heartbeatMs;
    Object.assign(options, opts.clientOptions);
    this.client = new PresenceClient(options);
    this.client.addEventListener("statechange", () => renderClient(this.client));
    this.client.addEventListener("error", (ev) => console.warn("presence client:", String(ev.detail)));
    document.getElementById("who").textContent = opts.name;
    renderClient(this.client);
  },

  channel(name) {
    let ch = this.handles.get(name);
    if (ch) return ch;
    ch = this.client.channel(name);
    this.handles.set(name, ch);
    const s = document.createElement("section");
    s.dataset.channel = name;
    s.innerHTML = "<h2></h2><p class=meta>count: <output class=count>-1</output></p><ul></ul>";
    s.querySelector("h2").textContent = name;
    document.getElementById("channels").append(s);
    sections.set(name, s);
    ch.addEventListener("change", () => render(ch));
    return ch;
  },

  async subscribe(name) { await this.channel(name).subscribe(); render(this.channel(name)); },
  async enter(name, opts) { await this.channel(name).enter(opts); },
  async leave(name) { await this.channel(name).leave(); },
};
</script>
</body>
</html>
`

// setupTimeout bounds the preparation of a scenario (opening pages,
// subscribing); the deadlines under test are the scenarios' own.
const setupTimeout = 20 * time.Second

// pageServer serves the test page.
type pageServer struct{ srv *httptest.Server }

func newPageServer() *pageServer {
	return &pageServer{srv: httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, testPage)
	}))}
}

func (p *pageServer) close() { p.srv.Close() }

// user is one person in a scenario: a tab with the test page and a client
// logged in as them.
type user struct {
	*tab
	id   string
	name string
	node *node // the node the client talks to first
}

// openUser mints a token for id, opens the test page in a new browser
// context and starts a client whose urls begin with urls[0].
func openUser(t *testing.T, id, name string, urls []*node, heartbeatMs int) *user {
	t.Helper()
	token, err := urls[0].token(id, name)
	if err != nil {
		t.Fatalf("token for %s from %s: %v", id, urls[0].Name, err)
	}
	tb := env.Browser(t).newUser(t, id)
	tb.mustDo("open the test page", chromedp.Navigate(env.Pages().srv.URL))
	bases := make([]string, len(urls))
	for i, n := range urls {
		bases[i] = n.URL()
	}
	tb.call("start", map[string]any{"urls": bases, "token": token, "name": name, "heartbeatMs": heartbeatMs})
	return &user{tab: tb, id: id, name: name, node: urls[0]}
}

// channelView is what the test page shows of a channel.
type channelView struct {
	Found      bool     `json:"found"`
	Subscribed bool     `json:"subscribed"`
	CountOnly  bool     `json:"countOnly"`
	Count      int      `json:"count"`
	Users      []string `json:"users"`
}

func (v channelView) String() string {
	if !v.Found {
		return "channel not on the page"
	}
	return fmt.Sprintf("subscribed=%t countOnly=%t count=%d users=%v", v.Subscribed, v.CountOnly, v.Count, v.Users)
}

// has reports whether the page lists the user id.
func (v channelView) has(id string) bool { return slices.Contains(v.Users, id) }

// view reads a channel's section from the DOM.
func (u *user) view(channel string) (channelView, error) {
	name, _ := json.Marshal(channel)
	expr := fmt.Sprintf(`(() => {
  const s = [...document.querySelectorAll("section[data-channel]")].find((e) => e.dataset.channel === %s);
  if (!s) return { found: false, subscribed: false, countOnly: false, count: -1, users: [] };
  return {
    found: true,
    subscribed: s.dataset.subscribed === "true",
    countOnly: s.dataset.countOnly === "true",
    count: Number(s.querySelector(".count").textContent),
    users: [...s.querySelectorAll("li[data-user-id]")].map((li) => li.dataset.userId),
  };
})()`, name)
	return eval[channelView](u.tab, expr)
}

// clientState is what the test page shows of its client.
type clientState struct {
	URL       string `json:"url"`
	Connected bool   `json:"connected"`
}

func (u *user) client() (clientState, error) {
	return eval[clientState](u.tab, `({
  url: document.getElementById("url").textContent,
  connected: document.getElementById("connected").textContent === "true",
})`)
}

// requestLog is one request of the client, as the test page logged it.
type requestLog struct {
	URL    string `json:"url"`
	Method string `json:"method"`
	At     int64  `json:"at"` // ms since the epoch, when the request started
	Status int    `json:"status"`
	Error  string `json:"error"`
}

func (u *user) requests() ([]requestLog, error) {
	return eval[[]requestLog](u.tab, `window.e2e.log`)
}

// waitView polls the user's DOM until cond holds for the channel, failing
// the test with what the page showed last when the deadline passes.
func (u *user) waitView(channel string, timeout time.Duration, what string, cond func(channelView) bool) {
	u.t.Helper()
	err := testkit.Poll(timeout, func() error {
		v, err := u.view(channel)
		if err != nil {
			return err
		}
		if !cond(v) {
			return fmt.Errorf("page shows %s", v)
		}
		return nil
	})
	if err != nil {
		u.screenshot("timeout")
		u.t.Fatalf("%s: %s within %s: not met: %v", u.id, what, timeout, err)
	}
}

// subscribeAndWait subscribes to a channel and waits until the page shows
// it subscribed and the event stream is open, so later changes are streamed.
func (u *user) subscribeAndWait(channel string) {
	u.t.Helper()
	u.call("subscribe", channel)
	err := testkit.Poll(setupTimeout, func() error {
		c, err := u.client()
		if err != nil {
			return err
		}
		v, err := u.view(channel)
		if err != nil {
			return err
		}
		if !c.Connected || !v.Subscribed {
			return fmt.Errorf("client %+v, channel %s", c, v)
		}
		return nil
	})
	if err != nil {
		u.t.Fatalf("%s: subscribing to %s: %v", u.id, channel, err)
	}
}
