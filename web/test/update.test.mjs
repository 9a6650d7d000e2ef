// Enter/leave queueing, throttling, heartbeats, retries, fail-over and page lifecycle.

import test from "node:test";
import assert from "node:assert/strict";
import { PresenceChannelNotFound, PresenceHttpError } from "../presence-client.js";
import { setup, settle, respond, snapshot, consoleOutput } from "../testsupport/fakes.mjs";

const known = { "/a": snapshot([]), "/b": snapshot([]), "/c": snapshot([]), "/d": snapshot([]) };

test("channel objects for one name share one server-side presence", async () => {
  const { client, fetch, clock } = setup({}, known);
  const a = client.channel("/a");
  const b = client.channel("/a");
  assert.notEqual(a, b);
  assert.equal(a.name, "/a");
  await Promise.all([a.enter(), b.enter()]);
  assert.equal(fetch.updates().length, 1);
  assert.deepEqual(fetch.updates()[0].json.present_channels, ["/a"]);
  assert.ok(a.present && b.present);

  await a.leave();
  await clock.advance(6000);
  assert.equal(a.present, false);
  assert.ok(fetch.updates().every((c) => c.json.leave_channels.length === 0), "one object leaving keeps the channel");

  const left = b.leave();
  await clock.advance(30000);
  await left;
  const last = fetch.updates().at(-1);
  assert.deepEqual(last.json.leave_channels, ["/a"]);
  assert.deepEqual(last.json.present_channels, []);
});

test("changes made in one task go out in one request, at once", async () => {
  const { client, fetch } = setup({}, known);
  client.channel("/a").enter();
  client.channel("/b").enter();
  client.channel("/c").enter();
  await settle();
  assert.equal(fetch.updates().length, 1);
  const call = fetch.updates()[0];
  assert.deepEqual(call.json.present_channels, ["/a", "/b", "/c"]);
  assert.equal(call.json.client_id, client.clientId);
  assert.equal(call.headers.Authorization, "Bearer tok");
  assert.equal(call.method, "POST");
});

test("enter then leave in one task is deduplicated to a leave", async () => {
  const { client, fetch } = setup({}, known);
  const a = client.channel("/a");
  const p1 = a.enter();
  const p2 = a.leave();
  await Promise.all([p1, p2]);
  assert.equal(fetch.updates().length, 1);
  assert.deepEqual(fetch.updates()[0].json.present_channels, []);
  assert.deepEqual(fetch.updates()[0].json.leave_channels, ["/a"]);
});

test("later changes are throttled to one update per second", async () => {
  const { client, fetch, clock } = setup({}, known);
  const t0 = clock.t;
  await client.channel("/a").enter();
  assert.equal(fetch.updates()[0].at, t0);

  await clock.advance(100);
  client.channel("/b").enter();
  await clock.advance(899); // t0 + 999
  assert.equal(fetch.updates().length, 1);
  await clock.advance(1); // t0 + 1000
  assert.equal(fetch.updates().length, 2);
  assert.deepEqual(fetch.updates()[1].json.present_channels, ["/a", "/b"]);

  // A change every 600 ms for 30 s (slower than the 500 ms debounce, faster than the throttle):
  // never two updates within a second, yet every change is sent within about one.
  const chans = ["/a", "/b", "/c", "/d"].map((n) => client.channel(n));
  const from = fetch.updates().length;
  for (let i = 0; i < 50; i++) {
    const ch = chans[i % 4];
    ch.present ? ch.leave() : ch.enter();
    await clock.advance(600);
  }
  const times = fetch.updates().map((c) => c.at);
  assert.ok(times.length - from >= 20, `${times.length - from} updates for 50 changes in 30 s`);
  for (let i = 1; i < times.length; i++) assert.ok(times[i] - times[i - 1] >= 1000, `updates at ${times}`);
});

test("changes are debounced by 500 ms", async () => {
  const { client, fetch, clock } = setup({}, known);
  await client.channel("/a").enter();
  const t0 = clock.t;
  await clock.advance(800);
  client.channel("/b").enter();
  await clock.advance(400); // t0 + 1200: throttle over, but the debounce is not
  assert.equal(fetch.updates().length, 1);
  client.channel("/c").enter(); // restarts the debounce
  await clock.advance(499);
  assert.equal(fetch.updates().length, 1);
  await clock.advance(1);
  assert.equal(fetch.updates().length, 2);
  assert.equal(fetch.updates()[1].at, t0 + 1700);
  assert.deepEqual(fetch.updates()[1].json.present_channels, ["/a", "/b", "/c"]);
});

test("a heartbeat goes out every 30 s while present, and stops after leaving", async () => {
  const { client, fetch, clock } = setup({}, known);
  const a = client.channel("/a");
  await a.enter({ onlyWhileActive: false }); // nobody clicks for minutes in this test
  const t0 = clock.t;
  await clock.advance(30000 * 3);
  const beats = fetch.updates().slice(1);
  assert.deepEqual(beats.map((c) => c.at - t0), [30000, 60000, 90000]);
  for (const c of beats) {
    assert.deepEqual(c.json.present_channels, ["/a"]);
    assert.deepEqual(c.json.leave_channels, []);
  }
  const left = a.leave(); // throttled: the last heartbeat was just now
  await clock.advance(1000);
  await left;
  assert.deepEqual(fetch.updates().at(-1).json.leave_channels, ["/a"]);
  const n = fetch.updates().length;
  await clock.advance(300000);
  assert.equal(fetch.updates().length, n);
});

test("no request at all while nothing is present", async () => {
  const { fetch, clock } = setup({}, known);
  await clock.advance(600000);
  assert.equal(fetch.calls.length, 0);
});

test("enter rejects with PresenceChannelNotFound when the server answers false", async () => {
  const { client } = setup({}, known);
  await assert.rejects(client.channel("/nope").enter(), PresenceChannelNotFound);
});

test("429 retries after Retry-After", async () => {
  const { client, fetch, clock, server } = setup({}, known);
  fetch.handler = (call) => (fetch.calls.length === 1 ? respond(429, { errors: ["slow down"] }, { "Retry-After": "7" }) : server.handle(call));
  const t0 = clock.t;
  const entered = client.channel("/a").enter();
  await clock.advance(6999);
  assert.equal(fetch.updates().length, 1);
  await clock.advance(1);
  assert.equal(fetch.updates().length, 2);
  assert.equal(fetch.updates()[1].at, t0 + 7000);
  assert.deepEqual(fetch.updates()[1].json.present_channels, ["/a"]);
  await entered;
});

test("401 asks the token function again and retries once", async () => {
  let calls = 0;
  const { client, fetch, server } = setup({ token: async () => (++calls === 1 ? "old" : "new") }, known);
  fetch.handler = (call) => (call.headers.Authorization === "Bearer new" ? server.handle(call) : respond(401, { errors: ["bad token"] }));
  await client.channel("/a").enter();
  assert.equal(calls, 2);
  assert.deepEqual(fetch.updates().map((c) => c.headers.Authorization), ["Bearer old", "Bearer new"]);
});

test("a second 401 fails the request instead of looping", async () => {
  let calls = 0;
  const { client, fetch } = setup({ token: () => `t${++calls}` }, known);
  fetch.handler = () => respond(401, { errors: ["bad token"] });
  const err = await client.channel("/a").enter().catch((e) => e);
  assert.ok(err instanceof PresenceHttpError);
  assert.equal(err.status, 401);
  assert.equal(fetch.updates().length, 2);
  assert.equal(calls, 2);
});

test("an expired JWT is refreshed before use", async () => {
  const jwt = (exp) => `h.${Buffer.from(JSON.stringify({ sub: "1", exp })).toString("base64url")}.s`;
  const tokens = [];
  const { client, fetch, clock } = setup({
    token: () => {
      const t = jwt(Math.floor(clock.t / 1000) + 40);
      tokens.push(t);
      return t;
    },
  }, known);
  await client.channel("/a").enter();
  await clock.advance(30000); // token still valid for 10 s
  assert.equal(tokens.length, 1);
  await clock.advance(30000); // expired now
  assert.equal(tokens.length, 2);
  assert.equal(fetch.updates().at(-1).headers.Authorization, `Bearer ${tokens[1]}`);
});

test("network errors fail over across urls with exponential back-off", async () => {
  const { client, fetch, clock, server } = setup({ urls: ["http://a.test", "http://b.test", "http://c.test/"] }, known);
  let down = new Set(["http://a.test", "http://b.test", "http://c.test"]);
  fetch.handler = (call) => {
    if (down.has(call.base)) throw new TypeError("fetch failed");
    return server.handle(call);
  };
  const t0 = clock.t;
  const entered = client.channel("/a").enter({ onlyWhileActive: false }); // outlasts the idle time
  await clock.advance(1000 + 2000 + 4000 + 8000 + 16000 + 30000 + 30000 - 1);
  const attempts = fetch.updates();
  assert.deepEqual(attempts.map((c) => c.at - t0), [0, 1000, 3000, 7000, 15000, 31000, 61000]);
  assert.deepEqual(attempts.map((c) => c.base), ["a", "b", "c", "a", "b", "c", "a"].map((h) => `http://${h}.test`));

  down = new Set(["http://a.test"]);
  await clock.advance(1);
  await entered;
  assert.equal(fetch.updates().at(-1).base, "http://b.test");
  assert.equal(client.url, "http://b.test");
  // Success resets the back-off: the next heartbeat is on time and on the same node.
  await clock.advance(30000);
  assert.equal(fetch.updates().at(-1).at - t0, 91000 + 30000);
  assert.equal(fetch.updates().at(-1).base, "http://b.test");
});

test("a 5xx answer counts as a failed node", async () => {
  const { client, fetch, clock, server } = setup({ urls: ["http://a.test", "http://b.test"] }, known);
  fetch.handler = (call) => (call.base === "http://a.test" ? respond(503, { errors: ["overloaded"] }) : server.handle(call));
  const entered = client.channel("/a").enter();
  await clock.advance(1000);
  await entered;
  assert.deepEqual(fetch.updates().map((c) => c.base), ["http://a.test", "http://b.test"]);
});

test("pagehide leaves with a keepalive fetch carrying the token, pageshow enters again", async () => {
  const { client, fetch, clock, win, beacons } = setup({}, known);
  await Promise.all([client.channel("/a").enter(), client.channel("/b").enter()]);
  win.dispatchEvent(new Event("pagehide"));
  const call = fetch.calls.at(-1);
  assert.equal(call.path, "/presence/update");
  assert.equal(call.keepalive, true);
  assert.equal(call.headers.Authorization, "Bearer tok");
  assert.ok(call.body instanceof URLSearchParams);
  assert.equal(call.body.get("client_id"), client.clientId);
  assert.deepEqual(call.body.getAll("leave_channels[]"), ["/a", "/b"]);
  assert.equal(beacons.length, 0);

  const n = fetch.calls.length;
  await clock.advance(120000);
  assert.equal(fetch.calls.length, n, "no heartbeat after pagehide");

  win.dispatchEvent(Object.assign(new Event("pageshow"), { persisted: true }));
  await settle();
  assert.deepEqual(fetch.updates().at(-1).json.present_channels, ["/a", "/b"]);
});

const SECRET = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3In0.c2VjcmV0LXNpZ25hdHVyZQ";

test("without keepalive, the pagehide beacon is a form body with token, client_id and leave_channels[]", async () => {
  const out = await consoleOutput(async () => {
    const { client, fetch, win, beacons } = setup({ keepalive: false, token: SECRET }, known);
    await Promise.all([client.channel("/a").enter(), client.channel("/b").enter()]);
    const n = fetch.calls.length;
    win.dispatchEvent(new Event("pagehide"));
    assert.equal(fetch.calls.length, n, "no fetch");
    assert.equal(beacons.length, 1);
    const { url, body } = beacons[0];
    assert.equal(url, "http://a.test/presence/update");
    assert.ok(body instanceof URLSearchParams, "form-encoded: sendBeacon sends it as application/x-www-form-urlencoded");
    assert.deepEqual([...body.keys()].sort(), ["client_id", "leave_channels[]", "leave_channels[]", "token"]);
    assert.equal(body.get("token"), SECRET);
    assert.equal(body.get("client_id"), client.clientId);
    assert.deepEqual(body.getAll("leave_channels[]"), ["/a", "/b"]);
    assert.equal(
      body.toString(),
      `client_id=${client.clientId}&leave_channels%5B%5D=%2Fa&leave_channels%5B%5D=%2Fb&token=${SECRET}`,
    );
  });
  assert.ok(out.every((line) => !line.includes(SECRET)), "the token is never logged");
});

test("the beacon carries the token a token function last returned", async () => {
  let n = 0;
  const { client, win, beacons } = setup({ keepalive: false, token: async () => `jwt-${++n}` }, known);
  await client.channel("/a").enter();
  win.dispatchEvent(new Event("pagehide"));
  assert.equal(beacons[0].body.get("token"), "jwt-1");
});

test("the keepalive leave sends the token in the Authorization header, not in the body", async () => {
  const out = await consoleOutput(async () => {
    const { client, fetch, win, beacons } = setup({ token: SECRET }, known);
    await client.channel("/a").enter();
    win.dispatchEvent(new Event("pagehide"));
    const call = fetch.calls.at(-1);
    assert.equal(call.keepalive, true);
    assert.equal(call.headers.Authorization, `Bearer ${SECRET}`);
    assert.equal(call.body.get("token"), null);
    assert.equal(beacons.length, 0);
  });
  assert.ok(out.every((line) => !line.includes(SECRET)));
});

test("a keepalive fetch that throws at once falls back to the beacon with the token", async () => {
  let thrown = 0;
  const env = setup({
    fetch: (url, init) => {
      if (init?.keepalive) {
        thrown++;
        throw new TypeError("keepalive request over quota");
      }
      return env.fetch.fn(url, init);
    },
  }, known);
  await env.client.channel("/a").enter();
  env.win.dispatchEvent(new Event("pagehide"));
  assert.equal(thrown, 1);
  assert.equal(env.beacons.length, 1);
  assert.equal(env.beacons[0].body.get("token"), "tok");
  assert.deepEqual(env.beacons[0].body.getAll("leave_channels[]"), ["/a"]);
});

test("pagehide with nothing present sends nothing", async () => {
  const { fetch, win, beacons } = setup({}, known);
  win.dispatchEvent(new Event("pagehide"));
  assert.equal(fetch.calls.length + beacons.length, 0);
});

test("close leaves every present channel and stops", async () => {
  const { client, fetch, clock } = setup({}, known);
  const a = client.channel("/a");
  await a.enter();
  await client.close();
  assert.deepEqual(fetch.updates().at(-1).json.leave_channels, ["/a"]);
  const n = fetch.calls.length;
  await clock.advance(120000);
  assert.equal(fetch.calls.length, n);
  assert.deepEqual(clock.pending(), []);
  await assert.rejects(client.channel("/b").enter(), /closed/);
});
