// enter({onlyWhileActive, activeOptions}): leaving for inactivity, entering again on activity,
// the shared activity tracking and its single timer, and the deprecated leaveOnHiddenMs.

import test from "node:test";
import assert from "node:assert/strict";
import { setup, settle, snapshot, consoleOutput } from "../testsupport/fakes.mjs";

const known = { "/a": snapshot([]), "/b": snapshot([]), "/c": snapshot([]) };

const hide = (doc) => {
  doc.visibilityState = "hidden";
  doc.dispatchEvent(new Event("visibilitychange"));
};
const show = (doc) => {
  doc.visibilityState = "visible";
  doc.dispatchEvent(new Event("visibilitychange"));
};

// The channels each JSON update (not the pagehide leave) left, and entered or heartbeated.
function sent(fetch) {
  return fetch
    .updates()
    .filter((c) => c.json)
    .map((c) => ({ at: c.at, present: c.json.present_channels, leave: c.json.leave_channels }));
}

function counter(target) {
  const c = { n: 0 };
  target.addEventListener("change", () => c.n++);
  return c;
}

test("an idle user leaves after userUnseenTime (60 s by default) and sends nothing more", async () => {
  const { client, fetch, clock } = setup({}, known);
  const t0 = clock.t;
  const a = client.channel("/a");
  const changes = counter(a);
  await a.enter();
  assert.equal(a.active, true);
  assert.equal(changes.n, 1, "entering flips active");

  await clock.advance(59999);
  assert.ok(sent(fetch).every((u) => u.leave.length === 0), "present until the threshold");
  assert.deepEqual(sent(fetch).map((u) => u.at - t0), [0, 30000], "heartbeats while active");
  await clock.advance(1);
  const last = sent(fetch).at(-1);
  assert.deepEqual(last, { at: t0 + 60000, present: [], leave: ["/a"] });
  assert.equal(a.present, true, "still entered: the user did not leave the channel themselves");
  assert.equal(a.active, false);
  assert.equal(changes.n, 2);

  const n = fetch.updates().length;
  await clock.advance(600000);
  assert.equal(fetch.updates().length, n, "no heartbeat while inactive");
});

test("any of click, keydown, touchmove, scroll and focus enters again at once", async () => {
  for (const type of ["click", "keydown", "touchmove", "scroll", "focus"]) {
    const { client, fetch, clock, win } = setup({}, known);
    const a = client.channel("/a");
    const changes = counter(a);
    await a.enter();
    await clock.advance(60000);
    assert.deepEqual(sent(fetch).at(-1).leave, ["/a"], type);

    await clock.advance(5000);
    win.dispatchEvent(new Event(type));
    await settle();
    assert.deepEqual(sent(fetch).at(-1), { at: clock.t, present: ["/a"], leave: [] }, `${type} re-enters`);
    assert.equal(a.active, true);
    assert.equal(changes.n, 3, `${type}: entered, left, entered`);

    // Present again: the heartbeat resumes and the idle clock starts over.
    await clock.advance(59999);
    assert.ok(sent(fetch).at(-1).present.includes("/a"), type);
    await clock.advance(1);
    assert.deepEqual(sent(fetch).at(-1).leave, ["/a"], `${type}: idle again a minute after it`);
    client.close();
  }
});

test("activity before the threshold postpones the leave", async () => {
  const { client, fetch, clock, win } = setup({}, known);
  const t0 = clock.t;
  await client.channel("/a").enter();
  await clock.advance(50000);
  win.dispatchEvent(new Event("keydown"));
  await clock.advance(59999);
  assert.ok(sent(fetch).every((u) => u.leave.length === 0));
  await clock.advance(1);
  assert.deepEqual(sent(fetch).at(-1), { at: t0 + 110000, present: [], leave: ["/a"] });
});

test("a tab hidden for browserHiddenTime (10 s by default) leaves; showing it enters again", async () => {
  const { client, fetch, clock, doc } = setup({}, known);
  const a = client.channel("/a");
  await a.enter();
  hide(doc);
  await clock.advance(5000);
  show(doc); // back before the threshold: nothing changes
  await clock.advance(1000);
  assert.ok(sent(fetch).every((u) => u.leave.length === 0));

  const hiddenAt = clock.t;
  hide(doc);
  await clock.advance(9999);
  assert.ok(sent(fetch).every((u) => u.leave.length === 0));
  await clock.advance(1);
  assert.deepEqual(sent(fetch).at(-1), { at: hiddenAt + 10000, present: [], leave: ["/a"] });
  assert.equal(a.active, false);
  const n = fetch.updates().length;
  await clock.advance(120000);
  assert.equal(fetch.updates().length, n, "no heartbeat while hidden");

  show(doc); // counts as activity, though the user has been idle for minutes
  await settle();
  assert.deepEqual(sent(fetch).at(-1), { at: clock.t, present: ["/a"], leave: [] });
  assert.equal(a.active, true);
});

test("activity in a hidden tab does not keep it present", async () => {
  const { client, fetch, clock, doc, win } = setup({}, known);
  await client.channel("/a").enter();
  hide(doc);
  await clock.advance(5000);
  win.dispatchEvent(new Event("scroll")); // e.g. a script scrolling a background tab
  await clock.advance(5000);
  assert.deepEqual(sent(fetch).at(-1).leave, ["/a"]);
  win.dispatchEvent(new Event("click"));
  await settle();
  assert.deepEqual(sent(fetch).at(-1).leave, ["/a"], "still hidden: still away");
});

test("a page loaded in a background tab leaves browserHiddenTime after the client started", async () => {
  const doc = Object.assign(new EventTarget(), { visibilityState: "hidden" });
  const { client, fetch, clock } = setup({ document: doc }, known);
  const t0 = clock.t;
  await clock.advance(4000);
  await client.channel("/a").enter();
  await clock.advance(6000);
  assert.deepEqual(sent(fetch).map((u) => [u.at - t0, u.present, u.leave]), [
    [4000, ["/a"], []],
    [10000, [], ["/a"]],
  ]);
});

test("onlyWhileActive: false stays present while idle and hidden", async () => {
  const { client, fetch, clock, doc } = setup({}, known);
  const a = client.channel("/a");
  const t0 = clock.t;
  await a.enter({ onlyWhileActive: false });
  hide(doc);
  await clock.advance(300000);
  const updates = sent(fetch);
  assert.deepEqual(updates.map((u) => u.at - t0), [0, 30000, 60000, 90000, 120000, 150000, 180000, 210000, 240000, 270000, 300000]);
  assert.ok(updates.every((u) => u.present[0] === "/a" && u.leave.length === 0));
  assert.equal(a.active, true);
});

test("activeOptions set each channel's thresholds; a missing one takes its default", async () => {
  const { client, fetch, clock, doc, win } = setup({}, known);
  const t0 = clock.t;
  const a = client.channel("/a");
  const b = client.channel("/b");
  a.enter();
  b.enter({ activeOptions: { userUnseenTime: 300000 } }); // chat's five minutes
  await settle();
  await clock.advance(300000);
  const leaves = sent(fetch).filter((u) => u.leave.length > 0);
  assert.deepEqual(leaves.map((u) => [u.at - t0, u.present, u.leave]), [
    [60000, ["/b"], ["/a"]],
    [300000, [], ["/b"]],
  ]);

  win.dispatchEvent(new Event("click"));
  await clock.advance(1000); // the leave of /b went out just now
  assert.deepEqual(sent(fetch).at(-1).present, ["/a", "/b"], "one update enters both again");

  // browserHiddenTime was not given for /b: it is the default 10 s.
  const hiddenAt = clock.t;
  hide(doc);
  await clock.advance(10000);
  assert.deepEqual(sent(fetch).at(-1), { at: hiddenAt + 10000, present: [], leave: ["/a", "/b"] });
});

test("activeOptions below Discourse's minimums, or malformed, reject and change nothing", async () => {
  const { client, fetch } = setup({}, known);
  const a = client.channel("/a");
  const bad = [
    [{ activeOptions: { userUnseenTime: 59999 } }, RangeError, /userUnseenTime cannot be less than 60000 \(given 59999\)/],
    [{ activeOptions: { browserHiddenTime: 9999 } }, RangeError, /browserHiddenTime cannot be less than 10000/],
    [{ activeOptions: { browserHiddenTime: -1, userUnseenTime: 60000 } }, RangeError, /browserHiddenTime/],
    [{ activeOptions: { userUnseenTime: "60000" } }, TypeError, /userUnseenTime must be a number/],
    [{ activeOptions: { userUnseenTime: NaN } }, TypeError, /userUnseenTime must be a number/],
    [{ activeOptions: { userUnseenMs: 60000 } }, TypeError, /unknown option userUnseenMs/],
    [{ activeOptions: 60000 }, TypeError, /activeOptions must be an object/],
    [{ onlyWhileActive: "yes" }, TypeError, /onlyWhileActive must be a boolean/],
    ["fast", TypeError, /enter options must be an object/],
  ];
  for (const [options, type, message] of bad) {
    await assert.rejects(a.enter(options), (err) => err instanceof type && message.test(err.message), JSON.stringify(options));
    assert.equal(a.present, false);
  }
  await settle();
  assert.equal(fetch.calls.length, 0);

  // The minimums themselves, Infinity and onlyWhileActive: false with any activeOptions are fine.
  const entered = Promise.all([
    a.enter({ activeOptions: { userUnseenTime: 60000, browserHiddenTime: 10000 } }),
    client.channel("/b").enter({ activeOptions: { browserHiddenTime: Infinity } }),
    client.channel("/c").enter({ onlyWhileActive: false, activeOptions: { userUnseenTime: 1 } }),
  ]);
  await settle();
  await entered;
  assert.deepEqual(sent(fetch).at(-1).present, ["/a", "/b", "/c"]);

  // A present handle keeps its options when new ones are invalid.
  await assert.rejects(a.enter({ activeOptions: { userUnseenTime: 1000 } }), RangeError);
});

test("browserHiddenTime: Infinity leaves only for idleness", async () => {
  const { client, fetch, clock, doc } = setup({}, known);
  const t0 = clock.t;
  await client.channel("/a").enter({ activeOptions: { browserHiddenTime: Infinity } });
  hide(doc);
  await clock.advance(60000);
  assert.deepEqual(sent(fetch).filter((u) => u.leave.length).map((u) => u.at - t0), [60000]);
});

test("minActiveOptions lowers the minimums (tests, demos) and is checked", async () => {
  assert.throws(() => setup({ minActiveOptions: { userUnseenTime: -1 } }), RangeError);
  assert.throws(() => setup({ minActiveOptions: { idle: 5 } }), /unknown option idle/);
  const env = setup({ minActiveOptions: { userUnseenTime: 1000, browserHiddenTime: 0 } }, known);
  const { client, fetch, clock } = env;
  const t0 = clock.t;
  await client.channel("/a").enter({ activeOptions: { userUnseenTime: 2000 } });
  await assert.rejects(client.channel("/b").enter({ activeOptions: { userUnseenTime: 999 } }), RangeError);
  await clock.advance(2000);
  assert.deepEqual(sent(fetch).at(-1), { at: t0 + 2000, present: [], leave: ["/a"] });
  // The defaults stay Discourse's.
  const seen = clock.t;
  env.win.dispatchEvent(new Event("click"));
  const entered = client.channel("/c").enter();
  await clock.advance(1000); // throttled after the leave of /a
  await entered;
  await clock.advance(120000);
  assert.deepEqual(sent(fetch).filter((u) => u.leave.includes("/c")).map((u) => u.at - seen), [60000]);
});

test("one activity timer for every channel, rescheduled, never one per channel", async () => {
  const names = Array.from({ length: 30 }, (_, i) => `/x/${i}`);
  const { client, clock, doc } = setup({}, Object.fromEntries(names.map((n) => [n, snapshot([])])));
  names.forEach((n, i) => client.channel(n).enter(i % 2 ? {} : { activeOptions: { userUnseenTime: 120000 } }));
  await settle();
  // The heartbeat (30 s) and the first idle threshold (60 s).
  assert.deepEqual(clock.pending(), [30000, 60000]);
  hide(doc);
  assert.deepEqual(clock.pending(), [10000, 30000]);
  await clock.advance(10000);
  assert.deepEqual(clock.pending(), [], "everything left: no heartbeat, no threshold to wait for");
  show(doc);
  await clock.advance(1000); // the enter waits out the throttle after the leave
  assert.deepEqual(clock.pending(), [30000, 59000]);
});

test("handles of one channel: it stays while one of them is entered without onlyWhileActive", async () => {
  const { client, fetch, clock, win } = setup({}, known);
  const tracked = client.channel("/a");
  const always = client.channel("/a");
  const changes = counter(tracked);
  await tracked.enter();
  await always.enter({ onlyWhileActive: false });
  await clock.advance(120000);
  assert.ok(sent(fetch).every((u) => u.leave.length === 0), "idle, but one handle needs no activity");
  assert.equal(tracked.active, true);

  await always.leave(); // only the tracked handle is left, and the user has been idle for 2 min
  await clock.advance(1000); // a heartbeat went out just now
  assert.deepEqual(sent(fetch).at(-1), { at: clock.t, present: [], leave: ["/a"] });
  assert.equal(tracked.active, false);
  assert.equal(always.active, false);
  assert.equal(changes.n, 2);

  win.dispatchEvent(new Event("click"));
  await clock.advance(1000);
  assert.deepEqual(sent(fetch).at(-1).present, ["/a"]);
  assert.equal(changes.n, 3);
});

test("handles of one channel with different thresholds: it stays until the longest passes", async () => {
  const { client, fetch, clock } = setup({}, known);
  const t0 = clock.t;
  await Promise.all([
    client.channel("/a").enter(),
    client.channel("/a").enter({ activeOptions: { userUnseenTime: 300000 } }),
  ]);
  await clock.advance(300000);
  assert.deepEqual(sent(fetch).filter((u) => u.leave.length).map((u) => u.at - t0), [300000]);
});

test("enter() on a present handle changes its options", async () => {
  const { client, fetch, clock, win } = setup({}, known);
  const a = client.channel("/a");
  await a.enter();
  await clock.advance(60000);
  assert.deepEqual(sent(fetch).at(-1).leave, ["/a"]);
  await a.enter({ onlyWhileActive: false }); // while away: entered again at once
  await clock.advance(1000);
  assert.deepEqual(sent(fetch).at(-1).present, ["/a"]);
  assert.equal(a.active, true);
  await clock.advance(300000);
  assert.deepEqual(sent(fetch).at(-1).present, ["/a"]);

  await a.enter(); // tracked again; idle for 5 minutes already
  await clock.advance(1000);
  assert.deepEqual(sent(fetch).at(-1).leave, ["/a"]);
  win.dispatchEvent(new Event("keydown"));
  await clock.advance(1000);
  assert.deepEqual(sent(fetch).at(-1).present, ["/a"]);
});

test("enter while inactive waits for the next activity; leave while inactive sends nothing", async () => {
  const { client, fetch, clock, win } = setup({}, known);
  await client.channel("/a").enter();
  await clock.advance(60000);
  const n = fetch.updates().length;

  const b = client.channel("/b");
  await b.enter(); // resolves: nothing to tell the server yet
  assert.equal(b.present, true);
  assert.equal(b.active, false);
  await clock.advance(10000);
  assert.equal(fetch.updates().length, n);

  win.dispatchEvent(new Event("click"));
  await settle();
  assert.deepEqual(sent(fetch).at(-1).present, ["/a", "/b"]);

  await clock.advance(60000);
  assert.deepEqual(sent(fetch).at(-1).leave, ["/a", "/b"]);
  const m = fetch.updates().length;
  await b.leave();
  await clock.advance(5000);
  assert.equal(fetch.updates().length, m, "the server already had /b left");
  assert.equal(b.present, false);
});

test("idle and back within the throttle: at most one update a second", async () => {
  const { client, fetch, clock, doc } = setup({ minActiveOptions: { userUnseenTime: 1000, browserHiddenTime: 0 } }, known);
  await Promise.all([
    client.channel("/a").enter({ activeOptions: { browserHiddenTime: 0 } }),
    client.channel("/b").enter({ activeOptions: { browserHiddenTime: 300 } }),
  ]);
  for (let i = 0; i < 40; i++) {
    hide(doc);
    await clock.advance(i % 3 === 0 ? 100 : 400);
    show(doc);
    await clock.advance(i % 2 === 0 ? 700 : 200);
  }
  await clock.advance(1000);
  const times = sent(fetch).map((u) => u.at);
  for (let i = 1; i < times.length; i++) assert.ok(times[i] - times[i - 1] >= 1000, `updates at ${times}`);
  assert.deepEqual(sent(fetch).at(-1).present, ["/a", "/b"], "ends present: the last change won");
});

test("without a page to watch (no window, no document) onlyWhileActive never leaves", async () => {
  const { client, fetch, clock } = setup({ window: null, document: null }, known);
  await client.channel("/a").enter();
  await clock.advance(300000);
  assert.ok(sent(fetch).every((u) => u.leave.length === 0 && u.present[0] === "/a"));
});

test("close removes the activity listeners and the timer", async () => {
  const { client, fetch, clock, win, doc } = setup({}, known);
  await client.channel("/a").enter();
  await client.close();
  assert.deepEqual(clock.pending(), []);
  const n = fetch.calls.length;
  hide(doc);
  show(doc);
  win.dispatchEvent(new Event("click"));
  await clock.advance(120000);
  assert.equal(fetch.calls.length, n);
  assert.deepEqual(clock.pending(), []);
});

test("bfcache: pageshow counts as activity and enters again after a long absence", async () => {
  const { client, fetch, clock, win } = setup({}, known);
  await client.channel("/a").enter();
  win.dispatchEvent(new Event("pagehide"));
  await clock.advance(600000);
  win.dispatchEvent(Object.assign(new Event("pageshow"), { persisted: true }));
  await settle();
  assert.deepEqual(sent(fetch).at(-1).present, ["/a"]);
  await clock.advance(59999);
  assert.ok(!sent(fetch).at(-1).leave.includes("/a"));
  await clock.advance(1);
  assert.deepEqual(sent(fetch).at(-1).leave, ["/a"]);
});

test("pagehide leaves only what the server counts present", async () => {
  const { client, fetch, clock, win } = setup({}, known);
  await Promise.all([client.channel("/a").enter(), client.channel("/b").enter({ onlyWhileActive: false })]);
  await clock.advance(60000); // /a left for inactivity
  win.dispatchEvent(new Event("pagehide"));
  assert.deepEqual(fetch.calls.at(-1).body.getAll("leave_channels[]"), ["/b"]);
});

// ---- the deprecated leaveOnHiddenMs ----

test("deprecated leaveOnHiddenMs: the default browserHiddenTime, raised to the minimum, with a warning", async () => {
  let env;
  const out = await consoleOutput(async () => {
    env = setup({ leaveOnHiddenMs: 30000 }, known);
  });
  assert.equal(out.length, 1);
  assert.match(out[0], /leaveOnHiddenMs is deprecated/);
  const { client, fetch, clock, doc } = env;
  await Promise.all([
    client.channel("/a").enter(),
    client.channel("/b").enter({ activeOptions: { browserHiddenTime: 10000 } }),
    client.channel("/c").enter({ onlyWhileActive: false }),
  ]);
  const hiddenAt = clock.t;
  hide(doc);
  await clock.advance(30000);
  assert.deepEqual(sent(fetch).filter((u) => u.leave.length).map((u) => [u.at - hiddenAt, u.leave]), [
    [10000, ["/b"]],
    [30000, ["/a"]],
  ]);
  assert.deepEqual(sent(fetch).at(-1).present, ["/c"], "onlyWhileActive: false is not affected");

  let low;
  await consoleOutput(async () => {
    low = setup({ leaveOnHiddenMs: 5000 }, known);
  });
  await low.client.channel("/a").enter();
  const t = low.clock.t;
  hide(low.doc);
  await low.clock.advance(10000);
  assert.deepEqual(sent(low.fetch).filter((u) => u.leave.length).map((u) => u.at - t), [10000]);

  assert.throws(() => setup({ leaveOnHiddenMs: -5 }), TypeError);
});
