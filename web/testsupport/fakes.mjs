// Hand-written fakes for the presence client tests: a clock you advance, fetch, EventSource and a
// tiny in-memory presence server. Kept outside web/test so the runner does not count it as a test.

import { PresenceClient } from "../presence-client.js";

/** Lets every pending promise callback and queued microtask run. */
export async function settle() {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/** A clock whose timers fire only when advance() moves time past them. */
export class FakeClock {
  constructor(start = 1_000_000) {
    this.t = start;
    this.timers = new Map();
    this.seq = 0;
    this.now = () => this.t;
    this.setTimeout = (fn, ms = 0) => {
      const id = ++this.seq;
      this.timers.set(id, { id, at: this.t + Math.max(0, ms), fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  /** Runs every timer due within ms, in time order, letting promises settle after each. */
  async advance(ms) {
    const end = this.t + ms;
    await settle();
    for (;;) {
      let next = null;
      for (const tm of this.timers.values()) {
        if (tm.at <= end && (!next || tm.at < next.at || (tm.at === next.at && tm.id < next.id))) next = tm;
      }
      if (!next) break;
      this.timers.delete(next.id);
      this.t = next.at;
      next.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }

  /** Delays (from now) of the pending timers, sorted. */
  pending() {
    return [...this.timers.values()].map((tm) => tm.at - this.t).sort((a, b) => a - b);
  }
}

/** A minimal fetch Response. */
export function respond(status, body = {}, headers = {}) {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
  return {
    status,
    ok: status >= 200 && status < 300,
    headers: { get: (name) => lower[name.toLowerCase()] ?? null },
    json: async () => body,
  };
}

/** Records every call (with the fake time it was made); handler(call) returns a response or throws to simulate a network error. */
export class FakeFetch {
  constructor(handler, clock = null) {
    this.calls = [];
    this.handler = handler;
    this.fn = (url, init = {}) => {
      const u = new URL(url);
      const call = {
        url,
        base: u.origin,
        path: u.pathname,
        query: u.searchParams,
        at: clock?.t,
        method: init.method ?? "GET",
        headers: init.headers ?? {},
        body: init.body,
        keepalive: !!init.keepalive,
      };
      if (typeof init.body === "string") call.json = JSON.parse(init.body);
      this.calls.push(call);
      return Promise.resolve().then(() => this.handler(call));
    };
  }

  to(path) {
    return this.calls.filter((c) => c.path === path);
  }

  updates() {
    return this.to("/presence/update");
  }

  gets() {
    return this.to("/presence/get");
  }
}

/** Returns an EventSource class whose instances are recorded in .instances. */
export function fakeEventSourceClass() {
  class FakeEventSource extends EventTarget {
    static instances = [];
    constructor(url) {
      super();
      this.url = url;
      const u = new URL(url);
      this.base = u.origin;
      this.channels = JSON.parse(u.searchParams.get("channels"));
      this.token = u.searchParams.get("token");
      this.lastEventId = u.searchParams.get("lastEventId");
      this.readyState = 0;
      FakeEventSource.instances.push(this);
    }
    close() {
      this.readyState = 2;
    }
    get closed() {
      return this.readyState === 2;
    }
    open() {
      this.readyState = 1;
      this.dispatchEvent(new Event("open"));
    }
    emit(type, data, id = "") {
      this.dispatchEvent(Object.assign(new Event(type), { data: JSON.stringify(data), lastEventId: id }));
    }
    message(channel, messageId, data, id = "") {
      this.emit("message", { channel, message_id: messageId, data }, id);
    }
    fail() {
      this.readyState = 0;
      this.dispatchEvent(new Event("error"));
    }
    static live() {
      return FakeEventSource.instances.filter((e) => !e.closed);
    }
  }
  return FakeEventSource;
}

/**
 * An in-memory stand-in for /presence/get and /presence/update. channels maps a name to its
 * GET value; present answers true only for known channels.
 */
export class FakeServer {
  constructor(channels = {}) {
    this.channels = channels;
    this.handle = (call) => {
      if (call.path === "/presence/update") {
        const out = {};
        for (const ch of call.json.present_channels) out[ch] = ch in this.channels;
        return respond(200, out);
      }
      if (call.path === "/presence/get") {
        const out = {};
        for (const ch of call.query.getAll("channels[]")) out[ch] = this.channels[ch] ?? null;
        return respond(200, out);
      }
      return respond(404, { errors: ["not found"] });
    };
  }
}

/** A client wired to fresh fakes; overrides go to the PresenceClient options. */
export function setup(overrides = {}, channels = {}) {
  const clock = new FakeClock();
  const server = new FakeServer(channels);
  const fetch = new FakeFetch(server.handle, clock);
  const ES = fakeEventSourceClass();
  const win = new EventTarget();
  const doc = Object.assign(new EventTarget(), { visibilityState: "visible" });
  const beacons = [];
  const nav = { sendBeacon: (url, body) => beacons.push({ url, body }) && true };
  const client = new PresenceClient({
    urls: ["http://a.test"],
    token: "tok",
    fetch: fetch.fn,
    EventSource: ES,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 1,
    window: win,
    document: doc,
    navigator: nav,
    keepalive: true,
    ...overrides,
  });
  return { client, clock, server, fetch, ES, win, doc, beacons };
}

/** A GET value for a channel with the given user ids. */
export function snapshot(ids, lastMessageId = 0) {
  return { count: ids.length, last_message_id: lastMessageId, users: ids.map((id) => user(id)) };
}

/** A user object as the server sends it. */
export function user(id) {
  return { id: String(id), username: `u${id}`, name: `User ${id}`, avatar_template: "" };
}

/** Runs fn and returns every line written to the console meanwhile (not printed). */
export async function consoleOutput(fn) {
  const out = [];
  const saved = {};
  for (const k of ["log", "info", "warn", "error", "debug"]) {
    saved[k] = console[k];
    console[k] = (...args) => out.push(args.map(String).join(" "));
  }
  try {
    await fn();
  } finally {
    Object.assign(console, saved);
  }
  return out;
}
