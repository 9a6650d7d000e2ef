// Demo of the presence client: who is online, who views and who replies to a topic, a count-only
// visitor counter, and the cluster members that own each channel. Plain DOM, no framework.
// User-supplied text is only ever written with textContent.

import { PresenceClient, PresenceChannelNotFound } from "/presence-client.js";

const TOPICS = [
  { id: 1, title: "Welcome to the presence demo" },
  { id: 2, title: "What happens when a node dies?" },
  { id: 3, title: "Raft only stores configuration" },
  { id: 4, title: "Count-only channels keep secrets" },
  { id: 5, title: "Show us your cluster" },
];
const ONLINE = "/demo/online";
const VISITORS = "/demo/count/visitors";
const topicChannel = (id) => `/demo/topic/${id}`;
const replyingChannel = (id) => `/demo/topic/${id}/replying`;

const SESSION_KEY = "presence-demo-user";
const CLUSTER_REFRESH_MS = 4000;

// Every channel but the visitor counter is entered only while the user is active (the client's
// default, as Discourse's): idle for a minute, or the tab hidden for 10 s, and the user leaves;
// the next click brings them back. ?idle=N (seconds) shortens the idle time to try it quickly,
// below Discourse's 60 s minimum, which the client is told to accept for this demo.
const ACTIVITY = activityFromQuery(new URLSearchParams(location.search).get("idle"));

function activityFromQuery(value) {
  const seconds = Number(value);
  if (value == null || !Number.isFinite(seconds) || seconds < 1 || seconds > 3600) {
    return { idleSeconds: 60, client: {}, enter: {} };
  }
  const ms = Math.round(seconds * 1000);
  const activeOptions = { userUnseenTime: ms, browserHiddenTime: Math.min(ms, 10000) };
  return { idleSeconds: seconds, client: { minActiveOptions: activeOptions }, enter: { activeOptions } };
}

const $ = (id) => document.getElementById(id);

let client = null;
let me = null;
let bases = [location.origin];
const topicHandles = new Map(); // topic id -> channel followed by the topic list
let open = null; // {id, view, replying} for the topic on screen

// ---- DOM helpers ----

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

function displayName(user) {
  return user.name || user.username || user.id;
}

function initials(name) {
  const words = String(name).trim().split(/\s+/).filter(Boolean);
  const first = (w) => Array.from(w)[0] ?? "";
  if (words.length === 0) return "?";
  if (words.length === 1) return Array.from(words[0]).slice(0, 2).join("").toUpperCase();
  return (first(words[0]) + first(words.at(-1))).toUpperCase();
}

function colorFor(id) {
  let h = 0;
  for (const ch of String(id)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${h % 360} 55% 42%)`;
}

function avatar(user, size = "") {
  const node = el("span", { class: `avatar ${size}`.trim(), title: displayName(user), text: initials(displayName(user)) });
  node.style.background = colorFor(user.id);
  return node;
}

function renderPeople(list, users, emptyText = "Nobody here yet.") {
  if (!users || users.length === 0) {
    list.replaceChildren(el("li", { class: "empty muted", text: emptyText }));
    return;
  }
  const sorted = [...users].sort((a, b) => displayName(a).localeCompare(displayName(b)));
  list.replaceChildren(
    ...sorted.map((u) =>
      el("li", { class: "person" }, avatar(u), el("span", { class: "person-name", text: displayName(u) }),
        u.id === me.id ? el("span", { class: "you", text: "you" }) : null),
    ),
  );
}

function notice(text) {
  $("notice").textContent = text ?? "";
  $("notice").hidden = !text;
}

function report(err) {
  if (err instanceof PresenceChannelNotFound) {
    notice(`Channel ${err.channel} is not available: is the node running with --dev?`);
  } else {
    console.warn("presence:", err);
  }
}

// ---- talking to the development endpoints of any node ----

// Turns a member's http address into a base URL the browser can use.
function httpBase(addr) {
  if (/^https?:\/\//.test(addr)) return addr.replace(/\/+$/, "");
  const url = new URL(`${location.protocol}//${addr}`);
  if (["0.0.0.0", "[::]", ""].includes(url.hostname)) url.hostname = location.hostname;
  return url.origin;
}

// GETs a /dev path from the node the client uses, falling back to the others.
async function devFetch(path) {
  let lastErr = new Error("no node to ask");
  for (const base of new Set([client?.url, ...bases].filter(Boolean))) {
    try {
      const res = await fetch(base + path, { headers: { Accept: "application/json" } });
      if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
      return await res.json();
    } catch (err) {
      lastErr = err;
    }
  }
  throw lastErr;
}

async function fetchToken(user) {
  const q = new URLSearchParams({ user: user.id, username: user.username, name: user.name });
  const body = await devFetch(`/dev/token?${q}`);
  return body.token;
}

// ---- sign in and out ----

function slug(name) {
  const s = name.normalize("NFKD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
  return s.replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 30) || "user";
}

function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}

async function signIn(event) {
  event.preventDefault();
  const name = $("signin-name").value.trim();
  if (!name) return;
  const user = { id: slug(name), username: slug(name), name };
  $("signin-error").hidden = true;
  try {
    await fetchToken(user); // fails early, with a message, when the node is not in --dev mode
  } catch (err) {
    $("signin-error").textContent = `Could not get a token: ${err.message}`;
    $("signin-error").hidden = false;
    return;
  }
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(user));
  start(user);
}

async function signOut() {
  const c = client;
  client = null;
  sessionStorage.removeItem(SESSION_KEY);
  await c?.close();
  location.replace(location.pathname);
}

// ---- the presence channels ----

async function start(user) {
  me = user;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("me").hidden = false;
  $("me-avatar").replaceChildren(avatar(me));
  $("me-name").textContent = me.name;

  let cluster = null;
  try {
    cluster = await devFetch("/dev/cluster");
  } catch (err) {
    console.warn("cluster info unavailable:", err);
  }
  // This page's own node first; the other members are there to fail over to.
  bases = [location.origin, ...(cluster?.members ?? []).filter((m) => m.http).map((m) => httpBase(m.http))];
  client = new PresenceClient({ urls: bases, token: () => fetchToken(me), ...ACTIVITY.client });
  client.addEventListener("statechange", renderConnection);
  client.addEventListener("error", (ev) => console.warn("presence:", ev.detail));
  renderConnection();

  const online = client.channel(ONLINE);
  online.addEventListener("change", () => {
    renderPeople($("online-list"), online.users);
    $("online-count").textContent = online.count ?? 0;
    renderAway(online);
  });
  online.subscribe().catch(report);
  online.enter(ACTIVITY.enter).catch(report);

  // Visitors counts open pages, idle or not.
  const visitors = client.channel(VISITORS);
  visitors.addEventListener("change", () => {
    $("visitors").textContent = visitors.count ?? "–";
  });
  visitors.subscribe().catch(report);
  visitors.enter({ onlyWhileActive: false }).catch(report);

  renderTopicList();
  for (const t of TOPICS) {
    const ch = client.channel(topicChannel(t.id));
    topicHandles.set(t.id, ch);
    ch.addEventListener("change", () => renderTopicRow(t.id));
    ch.subscribe().catch(report); // all five go out in one GET
  }

  window.addEventListener("hashchange", route);
  route();
  refreshCluster(cluster);
  setInterval(() => refreshCluster(), CLUSTER_REFRESH_MS);
}

// Greys the user out while the client has left their channels for inactivity. The page is
// visible when they can read this, so the reason is idleness: a hidden tab comes back when shown.
function renderAway(online) {
  const away = online.present && !online.active;
  $("me").classList.toggle("away", away);
  $("me-status").textContent = away ? "away" : "";
  $("away").hidden = !away;
  if (away) {
    $("away").textContent =
      `No click, key or scroll here for ${ACTIVITY.idleSeconds} s, so you left every channel: the others no longer see you. ` +
      "Click anywhere to come back.";
  }
}

function renderTopicList() {
  $("topic-list").replaceChildren(
    ...TOPICS.map((t) =>
      el("li", { id: `topic-row-${t.id}` },
        el("a", { href: `#/topic/${t.id}`, class: "topic-row" },
          el("span", { class: "topic-title", text: t.title }),
          el("span", { class: "stack" }),
          el("span", { class: "badge", text: "0" }))),
    ),
  );
}

function renderTopicRow(id) {
  const ch = topicHandles.get(id);
  const row = $(`topic-row-${id}`);
  const users = ch.users ?? [];
  row.querySelector(".stack").replaceChildren(...users.slice(0, 4).map((u) => avatar(u, "small")));
  row.querySelector(".badge").textContent = ch.count ?? 0;
  row.classList.toggle("current", open?.id === id);
}

function route() {
  const m = location.hash.match(/^#\/topic\/(\d+)$/);
  const id = m && TOPICS.some((t) => t.id === Number(m[1])) ? Number(m[1]) : null;
  if ((open?.id ?? null) === id) return;
  closeTopic();
  if (id !== null) openTopic(id);
  $("topic").hidden = id === null;
  $("placeholder").hidden = id !== null;
  $("app").classList.toggle("has-topic", id !== null);
  for (const t of TOPICS) renderTopicRow(t.id);
  refreshCluster();
}

function openTopic(id) {
  // A second handle on the channel the topic list follows: they share state and presence.
  const view = client.channel(topicChannel(id));
  const replying = client.channel(replyingChannel(id));
  open = { id, view, replying };
  view.addEventListener("change", renderTopic);
  replying.addEventListener("change", renderTopic);
  $("topic-title").textContent = TOPICS.find((t) => t.id === id).title;
  $("reply").value = "";
  renderTopic();
  view.enter(ACTIVITY.enter).catch(report);
  view.subscribe().catch(report);
  replying.subscribe().catch(report);
}

function closeTopic() {
  if (!open) return;
  const { view, replying } = open;
  open = null;
  view.removeEventListener("change", renderTopic);
  replying.removeEventListener("change", renderTopic);
  view.leave().catch(report);
  view.unsubscribe();
  replying.leave().catch(report);
  replying.unsubscribe();
}

function renderTopic() {
  if (!open) return;
  const { view, replying } = open;
  renderPeople($("viewers"), view.users, view.subscribed ? "Nobody here yet." : "Loading…");
  $("viewer-count").textContent = view.count ?? 0;
  const others = (replying.users ?? []).filter((u) => u.id !== me.id);
  const names = others.map(displayName);
  let text = "Nobody is typing.";
  if (names.length === 1) text = `${names[0]} is replying…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are replying…`;
  else if (names.length > 2) text = `${names[0]}, ${names[1]} and ${names.length - 2} more are replying…`;
  $("repliers").replaceChildren(
    el("span", { class: "stack" }, ...others.slice(0, 4).map((u) => avatar(u, "small"))),
    el("span", { class: names.length ? "typing" : "muted", text }),
  );
}

// The reply box makes the user present in the replying channel while it has focus or text.
function updateReplying() {
  if (!open) return;
  const box = $("reply");
  const replying = document.activeElement === box || box.value.trim() !== "";
  (replying ? open.replying.enter(ACTIVITY.enter) : open.replying.leave()).catch(report);
}

// ---- cluster panel ----

function renderConnection() {
  if (!client) return;
  $("conn-dot").classList.toggle("on", client.connected);
  $("conn-text").textContent = client.connected ? `Live via ${client.url}` : `Reconnecting (trying ${client.url})…`;
}

function openChannels() {
  const names = [ONLINE, VISITORS, ...TOPICS.map((t) => topicChannel(t.id))];
  if (open) names.push(replyingChannel(open.id));
  return names;
}

let refreshing = false;

async function refreshCluster(prefetched = null) {
  if (!client || refreshing) return;
  refreshing = true;
  try {
    const cluster = prefetched ?? (await devFetch("/dev/cluster"));
    renderMembers(cluster);
    const owners = await Promise.all(
      openChannels().map((name) =>
        devFetch(`/dev/owner?channel=${encodeURIComponent(name)}`).catch(() => ({ channel: name, owner: "?", replicas: [] })),
      ),
    );
    renderOwners(owners);
    $("cluster-error").hidden = true;
  } catch (err) {
    $("cluster-error").textContent = `Cluster information unavailable: ${err.message}`;
    $("cluster-error").hidden = false;
  } finally {
    refreshing = false;
  }
}

function renderMembers(cluster) {
  const leader = cluster?.raft?.leader ?? "";
  const members = [...(cluster?.members ?? [])].sort((a, b) => a.name.localeCompare(b.name));
  $("members").replaceChildren(
    ...members.map((m) => {
      const used = m.http && client && httpBase(m.http) === client.url;
      return el("tr", { class: used ? "used" : "" },
        el("td", {}, el("span", { text: m.name }), m.name === leader ? el("span", { class: "tag leader", text: "leader" }) : null),
        el("td", { class: "mono", text: m.http ?? "" }, used ? el("span", { class: "tag", text: "in use" }) : null),
        el("td", {}, el("span", { class: `state state-${String(m.state).toLowerCase()}`, text: m.state ?? "?" })));
    }),
  );
}

function renderOwners(owners) {
  $("owners").replaceChildren(
    ...owners.map((o) =>
      el("tr", {},
        el("td", { class: "mono", text: o.channel }),
        el("td", { text: o.owner ?? "?" }),
        el("td", { class: "muted", text: (o.replicas ?? []).join(", ") || "–" })),
    ),
  );
}

// ---- boot ----

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
$("reply").addEventListener("focus", updateReplying);
$("reply").addEventListener("blur", updateReplying);
$("reply").addEventListener("input", updateReplying);
$("discard").addEventListener("click", () => {
  $("reply").value = "";
  $("reply").blur();
  updateReplying();
});

const saved = loadSession();
if (saved?.id && saved?.name) {
  start(saved);
} else {
  $("signin").hidden = false;
  $("signin-name").focus();
}
