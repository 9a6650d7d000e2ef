// Initial state, the shared event stream, message application, resync and fail-over of the stream.

import test from "node:test";
import assert from "node:assert/strict";
import { PresenceChannelNotFound } from "../presence-client.js";
import { setup, settle, respond, snapshot, user } from "../testsupport/fakes.mjs";

const STREAM_DEBOUNCE = 100;

// Subscribes and lets the stream (re)open; returns the live EventSource.
async function subscribed(env, ...channels) {
  await Promise.all(channels.map((c) => c.subscribe()));
  await env.clock.advance(STREAM_DEBOUNCE);
  const live = env.ES.live();
  assert.equal(live.length, 1);
  live[0].open();
  return live[0];
}

test("subscribe loads users and count, fires change, and exposes nothing once unsubscribed", async () => {
  const env = setup({}, { "/a": snapshot([1, 2], 5) });
  const ch = env.client.channel("/a");
  let changes = 0;
  ch.addEventListener("change", () => changes++);
  assert.equal(ch.users, null);
  await ch.subscribe();
  assert.equal(ch.subscribed, true);
  assert.deepEqual(ch.users.map((u) => u.id), ["1", "2"]);
  assert.equal(ch.count, 2);
  assert.equal(ch.countOnly, false);
  assert.equal(ch.available, true);
  assert.equal(changes, 1);
  const get = env.fetch.gets()[0];
  assert.deepEqual(get.query.getAll("channels[]"), ["/a"]);
  assert.equal(get.headers.Authorization, "Bearer tok");

  await ch.unsubscribe();
  assert.equal(ch.subscribed, false);
  assert.equal(ch.users, null);
  assert.equal(ch.count, null);
  assert.equal(changes, 2);
});

test("channel objects for one name share one state, one GET and one stream entry", async () => {
  const env = setup({}, { "/a": snapshot([1], 3) });
  const a = env.client.channel("/a");
  const b = env.client.channel("/a");
  const es = await subscribed(env, a, b);
  assert.equal(env.fetch.gets().length, 1);
  assert.deepEqual(es.channels, { "/a": 3 });

  es.message("/a", 4, { entering_users: [user(2)] });
  assert.equal(a.count, 2);
  assert.equal(b.users, a.users);

  await a.unsubscribe();
  await env.clock.advance(STREAM_DEBOUNCE);
  assert.equal(es.closed, false, "still needed by b");
  await b.unsubscribe();
  await env.clock.advance(STREAM_DEBOUNCE);
  assert.equal(es.closed, true);
  assert.equal(env.ES.live().length, 0);
});

test("initial GETs are batched 50 channels a request", async () => {
  const channels = {};
  for (let i = 0; i < 120; i++) channels[`/c/${i}`] = snapshot([i], i);
  const env = setup({}, channels);
  const chans = Object.keys(channels).map((n) => env.client.channel(n));
  await Promise.all(chans.map((c) => c.subscribe()));
  const gets = env.fetch.gets();
  assert.deepEqual(gets.map((g) => g.query.getAll("channels[]").length), [50, 50, 20]);
  assert.equal(new Set(gets.flatMap((g) => g.query.getAll("channels[]"))).size, 120);
  assert.deepEqual(chans[119].users.map((u) => u.id), ["119"]);

  await env.clock.advance(STREAM_DEBOUNCE);
  assert.equal(env.ES.instances.length, 1, "one stream for every channel");
  assert.equal(Object.keys(env.ES.instances[0].channels).length, 120);
});

test("subscribe(initialState) makes no request", async () => {
  const env = setup();
  const ch = env.client.channel("/a");
  await ch.subscribe(snapshot([7], 9));
  assert.equal(env.fetch.calls.length, 0);
  assert.deepEqual(ch.users.map((u) => u.id), ["7"]);
  await env.clock.advance(STREAM_DEBOUNCE);
  assert.deepEqual(env.ES.instances[0].channels, { "/a": 9 });
});

test("subscribe rejects with PresenceChannelNotFound for a channel the server does not show", async () => {
  const env = setup();
  const ch = env.client.channel("/secret");
  await assert.rejects(ch.subscribe(), PresenceChannelNotFound);
  assert.equal(ch.subscribed, false);
  await env.clock.advance(STREAM_DEBOUNCE);
  assert.equal(env.ES.instances.length, 0);
});

test("one stream, reopened once per burst of changes, resumed with its cursor", async () => {
  const env = setup({}, { "/a": snapshot([], 5), "/b": snapshot([], 0), "/c": snapshot([], 2), "/d": snapshot([], 1) });
  const [a, b, c, d] = ["/a", "/b", "/c", "/d"].map((n) => env.client.channel(n));
  const es1 = await subscribed(env, a, b);
  assert.equal(env.ES.instances.length, 1);
  assert.deepEqual(es1.channels, { "/a": 5, "/b": 0 });
  assert.equal(es1.token, "tok");
  assert.equal(es1.lastEventId, null);
  assert.equal(env.client.connected, true);

  es1.message("/a", 6, { entering_users: [user(1)] }, "cur-1");
  await c.subscribe();
  await d.subscribe();
  await env.clock.advance(STREAM_DEBOUNCE - 1);
  assert.equal(es1.closed, false, "debounced");
  await env.clock.advance(1);
  assert.equal(es1.closed, true);
  assert.equal(env.ES.instances.length, 2, "one reopen for two subscriptions");
  const es2 = env.ES.live()[0];
  assert.deepEqual(es2.channels, { "/a": 6, "/b": 0, "/c": 2, "/d": 1 });
  assert.equal(es2.lastEventId, "cur-1");

  // Messages from the closed stream are ignored.
  es1.message("/a", 7, { entering_users: [user(2)] });
  assert.equal(a.count, 1);
});

test("messages apply entering and leaving users; duplicates are ignored", async () => {
  const env = setup({}, { "/a": snapshot([1], 10) });
  const ch = env.client.channel("/a");
  const es = await subscribed(env, ch);
  let changes = 0;
  ch.addEventListener("change", () => changes++);
  es.message("/a", 11, { entering_users: [user(2), user(3)] });
  es.message("/a", 12, { leaving_user_ids: ["1", "3"] });
  assert.deepEqual(ch.users.map((u) => u.id), ["2"]);
  assert.equal(ch.count, 1);
  assert.equal(changes, 2);
  es.message("/a", 12, { leaving_user_ids: ["2"] });
  assert.equal(ch.count, 1);
  assert.equal(env.fetch.gets().length, 1, "a duplicate is not a gap");
  assert.ok(Object.isFrozen(ch.users));
});

test("a message-id gap refetches the channel", async () => {
  const env = setup({}, { "/a": snapshot([1], 5) });
  const ch = env.client.channel("/a");
  const es = await subscribed(env, ch);
  env.server.channels["/a"] = snapshot([1, 2, 3], 7);
  es.message("/a", 7, { entering_users: [user(3)] });
  await settle();
  assert.equal(env.fetch.gets().length, 2);
  assert.deepEqual(ch.users.map((u) => u.id), ["1", "2", "3"]);
  es.message("/a", 8, { leaving_user_ids: ["1"] });
  assert.deepEqual(ch.users.map((u) => u.id), ["2", "3"]);
  assert.equal(env.fetch.gets().length, 2);
});

test("messages arriving during a refetch are applied after it", async () => {
  const env = setup({}, { "/a": snapshot([1], 5) });
  const ch = env.client.channel("/a");
  const es = await subscribed(env, ch);
  let release;
  env.fetch.handler = (call) => new Promise((r) => (release = () => r(respond(200, { "/a": snapshot([1, 2], 7) }))));
  es.message("/a", 7, { entering_users: [user(2)] }); // gap: 6 is missing
  es.message("/a", 8, { entering_users: [user(4)] });
  await settle();
  release();
  await settle();
  assert.deepEqual(ch.users.map((u) => u.id), ["1", "2", "4"]);
  assert.equal(env.fetch.gets().length, 2);
});

test("event: resync refetches the channel", async () => {
  const env = setup({}, { "/a": snapshot([1], 5) });
  const ch = env.client.channel("/a");
  const es = await subscribed(env, ch);
  env.server.channels["/a"] = snapshot([9], 40);
  es.emit("resync", { channel: "/a" });
  await settle();
  assert.equal(env.fetch.gets().length, 2);
  assert.deepEqual(ch.users.map((u) => u.id), ["9"]);
  es.message("/a", 41, { entering_users: [user(10)] });
  assert.equal(ch.count, 2);
});

test("event: unavailable empties the channel and fires change", async () => {
  const env = setup({}, { "/a": snapshot([1, 2], 5) });
  const ch = env.client.channel("/a");
  const es = await subscribed(env, ch);
  let changes = 0;
  ch.addEventListener("change", () => changes++);
  es.emit("unavailable", { channel: "/a" });
  assert.equal(changes, 1);
  assert.equal(ch.available, false);
  assert.deepEqual(ch.users, []);
  assert.equal(ch.count, 0);
  assert.equal(ch.subscribed, true);

  // When it comes back, its first message is a gap and brings the state back.
  env.server.channels["/a"] = snapshot([3], 50);
  es.message("/a", 50, { entering_users: [user(3)] });
  await settle();
  assert.equal(ch.available, true);
  assert.deepEqual(ch.users.map((u) => u.id), ["3"]);
});

test("count-only channels track a count from count_delta", async () => {
  const env = setup({}, { "/count/v": { count: 3, last_message_id: 1 } });
  const ch = env.client.channel("/count/v");
  const es = await subscribed(env, ch);
  assert.equal(ch.countOnly, true);
  assert.equal(ch.users, null);
  assert.equal(ch.count, 3);
  es.message("/count/v", 2, { count_delta: 2 });
  es.message("/count/v", 3, { count_delta: -1 });
  assert.equal(ch.count, 4);
  // A message of the wrong kind means our picture is wrong: refetch.
  es.message("/count/v", 4, { entering_users: [user(1)] });
  await settle();
  assert.equal(env.fetch.gets().length, 2);
});

test("a failed stream reopens on the next url after a back-off, with a fresh token and the cursor", async () => {
  let tokens = 0;
  const env = setup({ urls: ["http://a.test", "http://b.test"], token: () => `t${++tokens}` }, { "/a": snapshot([], 1) });
  const ch = env.client.channel("/a");
  await ch.subscribe();
  await env.clock.advance(STREAM_DEBOUNCE);
  const es1 = env.ES.instances[0];
  assert.equal(es1.base, "http://a.test");
  assert.equal(es1.token, "t1");

  es1.fail(); // never opened: maybe a 401, maybe a dead node
  assert.equal(es1.closed, true);
  await env.clock.advance(999);
  assert.equal(env.ES.instances.length, 1);
  await env.clock.advance(1);
  const es2 = env.ES.instances[1];
  assert.equal(es2.base, "http://b.test");
  assert.equal(es2.token, "t2");

  es2.open();
  es2.message("/a", 2, { entering_users: [user(1)] }, "cur-9");
  es2.fail(); // dropped after opening: the back-off starts again from its first step
  assert.equal(env.client.connected, false);
  await env.clock.advance(1000);
  const es3 = env.ES.instances[2];
  assert.equal(es3.base, "http://a.test");
  assert.equal(es3.lastEventId, "cur-9");
  assert.deepEqual(es3.channels, { "/a": 2 });
  assert.equal(es3.token, "t2", "an opened stream proved the token good");
  assert.equal(env.ES.live().length, 1);
});

test("repeated stream failures back off exponentially up to the cap", async () => {
  const env = setup({}, { "/a": snapshot([], 1) });
  await env.client.channel("/a").subscribe();
  await env.clock.advance(STREAM_DEBOUNCE);
  const delays = [];
  for (let i = 0; i < 7; i++) {
    const es = env.ES.instances.at(-1);
    const before = env.clock.t;
    es.fail();
    const n = env.ES.instances.length;
    while (env.ES.instances.length === n) await env.clock.advance(100);
    delays.push(env.clock.t - before);
  }
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
});

test("an initial GET fails over to the next url", async () => {
  const env = setup({ urls: ["http://a.test", "http://b.test"] }, { "/a": snapshot([1], 1) });
  const handle = env.server.handle;
  env.fetch.handler = (call) => {
    if (call.base === "http://a.test") throw new TypeError("connection refused");
    return handle(call);
  };
  const ch = env.client.channel("/a");
  const done = ch.subscribe();
  await env.clock.advance(1000);
  await done;
  assert.deepEqual(env.fetch.gets().map((c) => c.base), ["http://a.test", "http://b.test"]);
  assert.equal(ch.count, 1);
  await env.clock.advance(STREAM_DEBOUNCE);
  assert.equal(env.ES.instances[0].base, "http://b.test", "the stream follows the working node");
});

test("an initial GET answered 429 is retried after Retry-After", async () => {
  const env = setup({}, { "/a": snapshot([1], 1) });
  const handle = env.server.handle;
  env.fetch.handler = (call) => (env.fetch.calls.length === 1 ? respond(429, {}, { "Retry-After": "3" }) : handle(call));
  const done = env.client.channel("/a").subscribe();
  await env.clock.advance(2999);
  assert.equal(env.fetch.gets().length, 1);
  await env.clock.advance(1);
  await done;
  assert.equal(env.fetch.gets().length, 2);
});

test("an initial GET answered 503 with Retry-After waits on the same node, quietly", async () => {
  const env = setup({ urls: ["http://a.test", "http://b.test"] }, { "/a": snapshot([1], 1) });
  const errors = [];
  env.client.addEventListener("error", (ev) => errors.push(ev.detail));
  const handle = env.server.handle;
  env.fetch.handler = (call) => (env.fetch.calls.length === 1 ? respond(503, {}, { "Retry-After": "2" }) : handle(call));
  const ch = env.client.channel("/a");
  const done = ch.subscribe();
  await env.clock.advance(1999);
  assert.equal(env.fetch.gets().length, 1);
  await env.clock.advance(1);
  await done;
  assert.deepEqual(env.fetch.gets().map((c) => c.base), ["http://a.test", "http://a.test"]);
  assert.equal(ch.count, 1);
  assert.deepEqual(errors, []);
});

test("an initial GET answered 401 asks the token function again", async () => {
  let n = 0;
  const env = setup({ token: async () => `t${++n}` }, { "/a": snapshot([1], 1) });
  const handle = env.server.handle;
  env.fetch.handler = (call) => (call.headers.Authorization === "Bearer t1" ? respond(401, { errors: ["expired"] }) : handle(call));
  await env.client.channel("/a").subscribe();
  assert.deepEqual(env.fetch.gets().map((c) => c.headers.Authorization), ["Bearer t1", "Bearer t2"]);
});

test("an anonymous client sends no token", async () => {
  const env = setup({ token: null }, { "/a": snapshot([1], 1) });
  await env.client.channel("/a").subscribe();
  await env.clock.advance(STREAM_DEBOUNCE);
  assert.equal(env.fetch.gets()[0].headers.Authorization, undefined);
  assert.equal(env.ES.instances[0].token, null);
});
