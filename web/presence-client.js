// Browser client for the presence service (Discourse's PresenceChannel wire format).
//
// One PresenceClient per page: it owns a random client id, the queue of enter/leave changes,
// the heartbeat, the batched initial-state requests and a single EventSource that carries the
// updates of every subscribed channel. Channel objects handed out by client.channel(name) are
// cheap proxies; several proxies for one name share one state and one server-side presence.
// Like Discourse's, a channel is by default entered only while the user is active: one activity
// tracker and one timer per client leave such channels when the user is idle or the tab hidden,
// and enter them again on the next activity.
//
// No dependencies and no build step. Every browser global it touches (fetch, EventSource,
// timers, document, window, navigator) can be injected, which is how the tests run it in Node.

const DEFAULTS = Object.freeze({
  heartbeatMs: 30000, // Discourse's PRESENCE_INTERVAL_S; the server's default timeout is 60 s
  debounceMs: 500, // quiet time collected before a non-immediate update is sent
  throttleMs: 1000, // at most one update per this interval (Discourse's PRESENCE_THROTTLE_MS)
  getBatchSize: 50, // the server's limit of channels per GET /presence/get
  streamDebounceMs: 100, // coalesces subscribe/unsubscribe bursts into one stream reopen
  retryBaseMs: 1000, // first back-off step after a network error
  retryMaxMs: 30000, // back-off cap
  defaultRetryAfterMs: 5000, // used when a 429 carries no usable Retry-After
});

// Discourse's activeOptions for enter({onlyWhileActive: true}): the defaults, which its enter()
// also enforces as the smallest values allowed. Shorter thresholds make presence flap, and every
// flip costs an update.
const ACTIVE_DEFAULTS = Object.freeze({ userUnseenTime: 60000, browserHiddenTime: 10000 });

// What counts as the user being there. Listened to on window in the capture phase, so clicks,
// keys, touches and the scrolls and focus changes of any element are seen, not only the page's.
const ACTIVITY_EVENTS = ["click", "keydown", "touchmove", "scroll", "focus"];

/** Rejection of enter() or subscribe() for a channel that does not exist or may not be used. */
export class PresenceChannelNotFound extends Error {
  constructor(channel) {
    super(`presence channel ${channel} not found`);
    this.name = "PresenceChannelNotFound";
    this.channel = channel;
  }
}

/** The server answered with an HTTP error that retrying cannot fix (or 429). */
export class PresenceHttpError extends Error {
  constructor(status, errors, retryAfterMs) {
    super(`presence request failed: HTTP ${status}${errors.length ? `: ${errors.join("; ")}` : ""}`);
    this.name = "PresenceHttpError";
    this.status = status;
    this.errors = errors;
    this.retryAfterMs = retryAfterMs;
  }
}

/** A node could not be reached or failed (connection error, 5xx, unreadable body). */
export class PresenceNetworkError extends Error {
  constructor(url, cause) {
    super(`presence node ${url} unreachable: ${cause?.message ?? cause}`);
    this.name = "PresenceNetworkError";
    this.url = url;
    this.cause = cause;
  }
}

/** The client was closed; its channels can no longer be used. */
export class PresenceClientClosed extends Error {
  constructor() {
    super("presence client closed");
    this.name = "PresenceClientClosed";
  }
}

function deferred() {
  const d = {};
  d.promise = new Promise((resolve, reject) => {
    d.resolve = resolve;
    d.reject = reject;
  });
  // Callers may never await (fire-and-forget enter()); an unhandled rejection must not crash.
  d.promise.catch(() => {});
  return d;
}

function randomId() {
  const c = globalThis.crypto;
  // randomUUID exists only in secure contexts; a demo served over plain http on a LAN is not one.
  if (c?.randomUUID) return c.randomUUID();
  if (c?.getRandomValues) {
    const bytes = c.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  const part = () => Math.random().toString(36).slice(2);
  return `${Date.now().toString(36)}-${part()}${part()}`;
}

// Milliseconds to wait per Retry-After (delta-seconds or an HTTP date), or null.
function parseRetryAfter(value, now) {
  if (value == null || value === "") return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

// True when token is a JWT whose exp has passed; anything unparsable counts as not expired
// and is left to the server to judge.
function jwtExpired(token, now) {
  if (typeof token !== "string") return false;
  const part = token.split(".")[1];
  if (!part) return false;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" && exp * 1000 <= now;
  } catch {
    return false;
  }
}

async function readErrors(res) {
  try {
    const body = await res.json();
    return Array.isArray(body?.errors) ? body.errors.map(String) : [];
  } catch {
    return [];
  }
}

function detectKeepalive() {
  return typeof Request === "function" && "keepalive" in Request.prototype;
}

// The activeOptions of enter() when it is given none: Discourse's, or the minimums where a client
// raised those above them. The deprecated client option leaveOnHiddenMs (from before enter took
// options: leave every channel once the tab was hidden that long) becomes the default
// browserHiddenTime, raised to the minimum, so a page that set it keeps leaving hidden tabs at
// about the time it asked for.
function defaultActiveOptions(leaveOnHiddenMs, min) {
  let hidden = ACTIVE_DEFAULTS.browserHiddenTime;
  if (leaveOnHiddenMs != null && leaveOnHiddenMs !== 0) {
    if (typeof leaveOnHiddenMs !== "number" || !(leaveOnHiddenMs > 0)) {
      throw new TypeError("leaveOnHiddenMs must be a positive number of milliseconds");
    }
    globalThis.console?.warn?.(
      "PresenceClient: leaveOnHiddenMs is deprecated; pass enter({activeOptions: {browserHiddenTime}}) instead. " +
        "Until then it is the default browserHiddenTime of channels entered onlyWhileActive.",
    );
    hidden = leaveOnHiddenMs;
  }
  return Object.freeze({
    userUnseenTime: Math.max(ACTIVE_DEFAULTS.userUnseenTime, min.userUnseenTime),
    browserHiddenTime: Math.max(hidden, min.browserHiddenTime),
  });
}

// Checks one set of activity thresholds: an object with only userUnseenTime and browserHiddenTime,
// each a number (Infinity allowed) no smaller than min's; a missing key takes defaults' value.
function activeOptionsFrom(given, defaults, min, what) {
  if (given === null || typeof given !== "object" || Array.isArray(given)) {
    throw new TypeError(`${what} must be an object`);
  }
  for (const key of Object.keys(given)) {
    if (!(key in ACTIVE_DEFAULTS)) {
      throw new TypeError(`${what}: unknown option ${key} (known: ${Object.keys(ACTIVE_DEFAULTS).join(", ")})`);
    }
  }
  const out = {};
  for (const key of Object.keys(ACTIVE_DEFAULTS)) {
    const v = given[key] ?? defaults[key];
    if (typeof v !== "number" || Number.isNaN(v)) throw new TypeError(`${what}: ${key} must be a number of milliseconds`);
    if (v < min[key]) throw new RangeError(`${what}: ${key} cannot be less than ${min[key]} (given ${v})`);
    out[key] = v;
  }
  return Object.freeze(out);
}

/**
 * Whether the user is using the page, as Discourse's lib/user-presence.js sees it: when they
 * last clicked, typed, scrolled, touched or focused it, and since when the tab has been hidden.
 * One per client, shared by every channel entered "only while active". Listeners only record a
 * time; onChange is called when the page is hidden or shown, and on activity only while waiting
 * is set (some channel was left for inactivity), so a scroll costs next to nothing.
 */
class UserActivity {
  constructor(win, doc, now, onChange) {
    this.now = now;
    this.win = win;
    this.doc = doc;
    this.onChange = onChange;
    // Without a page to watch (a worker, Node), nobody can be seen, nor be idle.
    this.tracking = !!(win?.addEventListener || doc?.addEventListener);
    this.lastSeen = now();
    this.hiddenAt = doc?.visibilityState === "hidden" ? this.lastSeen : null;
    this.waiting = false;
    this.onSeen = () => {
      this.lastSeen = this.now();
      if (this.waiting) this.onChange();
    };
    this.onVisibility = () => {
      if (this.doc?.visibilityState === "hidden") {
        if (this.hiddenAt == null) this.hiddenAt = this.now();
      } else {
        // Coming back to the tab counts as being seen.
        this.seen();
      }
      this.onChange();
    };
    const opts = { capture: true, passive: true };
    for (const type of ACTIVITY_EVENTS) win?.addEventListener?.(type, this.onSeen, opts);
    doc?.addEventListener?.("visibilitychange", this.onVisibility);
  }

  // Records the user as seen now (and the page as shown, unless the document says hidden).
  seen() {
    this.lastSeen = this.now();
    if (this.doc?.visibilityState !== "hidden") this.hiddenAt = null;
  }

  close() {
    const opts = { capture: true, passive: true };
    for (const type of ACTIVITY_EVENTS) this.win?.removeEventListener?.(type, this.onSeen, opts);
    this.doc?.removeEventListener?.("visibilitychange", this.onVisibility);
  }

  // The time at which a user doing nothing stops being present under opts (Infinity: never).
  until(opts) {
    if (!this.tracking) return Infinity;
    const hidden = this.hiddenAt == null ? Infinity : this.hiddenAt + opts.browserHiddenTime;
    return Math.min(this.lastSeen + opts.userUnseenTime, hidden);
  }
}

/**
 * Shared state of one channel name: users, count and stream position. Never handed to callers.
 */
class ChannelState {
  constructor(client, name) {
    this.client = client;
    this.name = name;
    this.proxies = new Set();
    this.users = null;
    this.count = null;
    this.countOnly = null;
    this.available = false;
    this.lastMessageId = null;
    this.loaded = false;
    this.refetching = false;
    this.pending = []; // messages that arrived while the snapshot was being (re)fetched
    this.destroyed = false;
    this.ready = null;
  }

  async load(initialState) {
    const data = initialState ?? (await this.client._getInitial(this.name));
    if (this.destroyed) return;
    if (!data) throw new PresenceChannelNotFound(this.name);
    this.applySnapshot(data);
    this.loaded = true;
    this.replayPending();
  }

  applySnapshot(data) {
    this.countOnly = !Array.isArray(data.users);
    this.users = this.countOnly ? null : Object.freeze([...data.users]);
    this.count = typeof data.count === "number" ? data.count : this.users?.length ?? 0;
    this.lastMessageId = typeof data.last_message_id === "number" ? data.last_message_id : null;
    this.available = true;
  }

  replayPending() {
    const messages = this.pending.sort((a, b) => a.message_id - b.message_id);
    this.pending = [];
    for (const m of messages) this.onMessage(m);
  }

  onMessage(msg) {
    if (this.destroyed) return;
    if (!this.loaded || this.refetching) {
      this.pending.push(msg);
      return;
    }
    const id = msg.message_id;
    // A message at or below the last applied id is a duplicate (a resumed stream may replay a
    // little); it is not a gap.
    if (this.lastMessageId !== null && id <= this.lastMessageId) return;
    if (this.lastMessageId === null || id !== this.lastMessageId + 1) {
      this.pending.push(msg);
      this.refetch();
      return;
    }
    if (!this.apply(msg.data ?? {})) {
      this.refetch();
      return;
    }
    this.lastMessageId = id;
    this.emitChange();
  }

  // Applies one message body; false when it does not fit the channel's kind.
  apply(data) {
    if (this.countOnly) {
      if (typeof data.count_delta !== "number") return false;
      this.count = Math.max(0, this.count + data.count_delta);
      return true;
    }
    if (!data.entering_users && !data.leaving_user_ids) return false;
    const byId = new Map(this.users.map((u) => [u.id, u]));
    for (const u of data.entering_users ?? []) byId.set(u.id, u);
    for (const id of data.leaving_user_ids ?? []) byId.delete(id);
    this.users = Object.freeze([...byId.values()]);
    this.count = this.users.length;
    return true;
  }

  async refetch() {
    if (this.refetching || this.destroyed) return;
    this.refetching = true;
    let data = null;
    let error = null;
    try {
      data = await this.client._getInitial(this.name);
    } catch (err) {
      error = err;
    }
    if (this.destroyed) return;
    if (error) this.client._emitError(error);
    this.refetching = false;
    if (!data) {
      this.markUnavailable();
      return;
    }
    this.applySnapshot(data);
    this.emitChange();
    this.replayPending();
  }

  markUnavailable() {
    this.available = false;
    this.users = this.countOnly ? null : Object.freeze([]);
    this.count = 0;
    // Unknown position: the first message after the channel comes back is a gap and refetches.
    this.lastMessageId = null;
    this.pending = [];
    this.emitChange();
  }

  emitChange() {
    for (const p of this.proxies) if (p.subscribed) p.dispatchEvent(new Event("change"));
  }
}

/**
 * A handle on one channel. Obtain it with PresenceClient#channel; fires "change" whenever its
 * users, count or subscription change.
 */
export class PresenceChannel extends EventTarget {
  #client;
  #name;
  #present = false;
  #active = false; // the value of active at the last "change" this handle fired for it
  #subscribed = false;
  #subscribing = null;
  #state = null;

  constructor(client, name) {
    super();
    this.#client = client;
    this.#name = name;
  }

  /** The channel name. */
  get name() {
    return this.#name;
  }

  /** Whether this object has entered (and not left) the channel. */
  get present() {
    return this.#present;
  }

  /**
   * Whether the server counts this client present in the channel now: this object has entered,
   * and the channel is not left for the user's inactivity (see enter's onlyWhileActive).
   */
  get active() {
    return this.#present && this.#client._channelActive(this.#name);
  }

  /** Whether this object receives the channel's state. */
  get subscribed() {
    return this.#subscribed;
  }

  /** Users present (frozen array); null when not subscribed or the channel is count-only. */
  get users() {
    return this.#subscribed ? this.#state.users : null;
  }

  /** Number of users present; null when not subscribed. */
  get count() {
    return this.#subscribed ? this.#state.count : null;
  }

  /** Whether the channel reveals only a count; null when not subscribed. */
  get countOnly() {
    return this.#subscribed ? this.#state.countOnly : null;
  }

  /** False once the server said the channel is gone or no longer visible; null when not subscribed. */
  get available() {
    return this.#subscribed ? this.#state.available : null;
  }

  /**
   * Marks the current user present; resolves when the server has acknowledged it.
   *
   * options.onlyWhileActive (default true): the channel is left while the user is inactive (no
   * click, key, scroll, touch or focus for activeOptions.userUnseenTime ms, or the tab hidden for
   * activeOptions.browserHiddenTime ms) and entered again on their next activity. False: present
   * as long as the page is open. Calling enter again on a present object changes its options.
   */
  async enter(options = {}) {
    const activity = this.#client._activeOptions(options);
    if (this.#present) {
      this.#client._setActivity(this, activity);
      return;
    }
    this.#present = true;
    const acked = this.#client._enter(this, activity);
    this._syncActive();
    await acked;
  }

  /** Marks the current user as gone; resolves when the server has acknowledged it. */
  async leave() {
    if (!this.#present) return;
    this.#present = false;
    const acked = this.#client._leave(this);
    this._syncActive();
    await acked;
  }

  // Fires "change" when active differs from what the last one said. Called by the client.
  _syncActive() {
    const active = this.active;
    if (active === this.#active) return;
    this.#active = active;
    this.dispatchEvent(new Event("change"));
  }

  /**
   * Starts receiving the channel's state. initialState (a value of GET /presence/get, with
   * last_message_id) saves the request when the page already has it.
   */
  async subscribe(initialState = null) {
    if (this.#subscribed) return;
    if (!this.#subscribing) {
      this.#subscribing = this.#client._subscribe(this, initialState).finally(() => {
        this.#subscribing = null;
      });
    }
    const state = await this.#subscribing;
    if (this.#subscribed) return;
    this.#state = state;
    this.#subscribed = true;
    this.dispatchEvent(new Event("change"));
  }

  /** Stops receiving the channel's state. */
  async unsubscribe() {
    if (this.#subscribing) await this.#subscribing.catch(() => {});
    if (!this.#subscribed) return;
    this.#subscribed = false;
    this.#state = null;
    this.#client._unsubscribe(this);
    this.dispatchEvent(new Event("change"));
  }
}

/**
 * Connection to a presence cluster. Fires "statechange" when the node in use or the stream
 * connection changes, and "error" (a CustomEvent whose detail is the Error) when a background
 * request fails.
 */
export class PresenceClient extends EventTarget {
  constructor(options = {}) {
    super();
    const urls = (options.urls ?? []).map((u) => String(u).replace(/\/+$/, ""));
    if (urls.length === 0) throw new TypeError("PresenceClient needs at least one url");
    this._urls = [...new Set(urls)];
    this._urlIndex = 0;
    this._tokenSource = options.token ?? null;
    this._tokenValue = undefined;
    this._tokenPromise = null;
    this._tokenStale = false;
    this._o = { ...DEFAULTS };
    for (const k of Object.keys(DEFAULTS)) if (options[k] != null) this._o[k] = options[k];
    this._o.getBatchSize = Math.min(Math.max(1, this._o.getBatchSize), 50);
    this._minActive = activeOptionsFrom(options.minActiveOptions ?? {}, ACTIVE_DEFAULTS, { userUnseenTime: 0, browserHiddenTime: 0 }, "minActiveOptions");
    this._defaultActive = defaultActiveOptions(options.leaveOnHiddenMs, this._minActive);

    const g = globalThis;
    this._fetch = options.fetch ?? ((...a) => g.fetch(...a));
    this._EventSource = options.EventSource ?? g.EventSource;
    this._setTimeout = options.setTimeout ?? ((fn, ms) => g.setTimeout(fn, ms));
    this._clearTimeout = options.clearTimeout ?? ((id) => g.clearTimeout(id));
    this._now = options.now ?? (() => Date.now());
    this._random = options.random ?? Math.random;
    this._window = options.window !== undefined ? options.window : g.window ?? null;
    this._document = options.document !== undefined ? options.document : g.document ?? null;
    this._navigator = options.navigator !== undefined ? options.navigator : g.navigator ?? null;
    this._keepalive = options.keepalive ?? detectKeepalive();

    this._clientId = options.clientId ?? randomId();
    this._closed = false;
    this._frozen = false; // between pagehide and a bfcache pageshow

    this._present = new Map(); // channel name -> Map of the proxies that entered -> their activeOptions or null
    this._inactive = new Set(); // names in _present the server was told to leave (or never told of) for inactivity
    this._activityTimer = null;
    this._queue = []; // {channel, type: "enter"|"leave", d: deferred|null}
    this._updateRunning = false;
    this._flushQueued = false;
    this._debounceTimer = null;
    this._heartbeatTimer = null;
    this._lastUpdate = -Infinity;
    this._nextHeartbeatAt = 0;
    this._retryAt = 0;
    this._updateFailures = 0;

    this._states = new Map(); // channel name -> ChannelState
    this._getPending = new Map(); // channel name -> deferred, not yet sent
    this._getRunning = false;
    this._getFlushQueued = false;
    this._getTimer = null;
    this._getFailures = 0;

    this._es = null;
    this._streamKey = null;
    this._streamGen = 0;
    this._streamTimer = null;
    this._streamFailures = 0;
    this._cursor = null;
    this._connected = false;

    this._onPageHide = () => this._pageHide();
    this._onPageShow = (ev) => this._pageShow(ev);
    this._window?.addEventListener?.("pagehide", this._onPageHide);
    this._window?.addEventListener?.("pageshow", this._onPageShow);
    this._activity = new UserActivity(this._window, this._document, this._now, () => this._checkActivity());
  }

  /** Base URL of the node currently in use. */
  get url() {
    return this._urls[this._urlIndex];
  }

  /** Random id of this client, sent as client_id: one per PresenceClient, like Discourse's. */
  get clientId() {
    return this._clientId;
  }

  /** Whether the event stream is open. */
  get connected() {
    return this._connected;
  }

  /** Returns a new handle on channel name; handles for one name share state and presence. */
  channel(name) {
    if (typeof name !== "string" || name === "") {
      throw new TypeError("channel name must be a non-empty string");
    }
    return new PresenceChannel(this, name);
  }

  /** Leaves every channel, closes the stream and stops all timers. */
  async close() {
    if (this._closed) return;
    const leave = this._takeLeaves();
    this._closed = true;
    this._window?.removeEventListener?.("pagehide", this._onPageHide);
    this._window?.removeEventListener?.("pageshow", this._onPageShow);
    this._activity.close();
    for (const t of ["_debounceTimer", "_heartbeatTimer", "_activityTimer", "_getTimer", "_streamTimer"]) {
      this._clear(t);
    }
    this._closeStream();
    for (const d of this._getPending.values()) d.reject(new PresenceClientClosed());
    this._getPending.clear();
    for (const s of this._states.values()) s.destroyed = true;
    if (leave.length === 0) return;
    try {
      await this._request("POST", "/presence/update", {
        client_id: this.clientId,
        present_channels: [],
        leave_channels: leave,
      });
    } catch {
      // Best effort: the server expires the client after its timeout anyway.
    }
  }

  // ---- plumbing shared by every request ----

  _clear(field) {
    if (this[field] != null) {
      this._clearTimeout(this[field]);
      this[field] = null;
    }
  }

  _emitError(err) {
    const ev =
      typeof CustomEvent === "function"
        ? new CustomEvent("error", { detail: err })
        : Object.assign(new Event("error"), { detail: err });
    this.dispatchEvent(ev);
  }

  _emitState() {
    this.dispatchEvent(new Event("statechange"));
  }

  // Moves to the next URL, unless another request already moved away from the failed one.
  _markFailed(url) {
    if (this._urls[this._urlIndex] !== url) return;
    this._urlIndex = (this._urlIndex + 1) % this._urls.length;
    this._emitState();
  }

  _backoff(failures) {
    const full = Math.min(this._o.retryMaxMs, this._o.retryBaseMs * 2 ** Math.max(0, failures - 1));
    // Jitter spreads the reconnects of many browsers when a node dies.
    return Math.round(full * (0.5 + 0.5 * this._random()));
  }

  async _token(force) {
    const src = this._tokenSource;
    if (typeof src !== "function") return src ?? null;
    if (force || this._tokenStale || jwtExpired(this._tokenValue, this._now())) {
      this._tokenStale = false;
      this._tokenValue = undefined;
    }
    if (this._tokenValue !== undefined) return this._tokenValue;
    // Concurrent callers (and concurrent 401s) share one call of the token function.
    if (!this._tokenPromise) {
      this._tokenPromise = (async () => {
        try {
          this._tokenValue = (await src()) ?? null;
          return this._tokenValue;
        } finally {
          this._tokenPromise = null;
        }
      })();
    }
    return this._tokenPromise;
  }

  // The token as known right now, for pagehide where nothing may be awaited.
  _tokenNow() {
    const src = this._tokenSource;
    if (typeof src !== "function") return src ?? null;
    return this._tokenValue ?? null;
  }

  // One HTTP exchange with the current node: a 401 asks the token function again and retries
  // once; connection errors and 5xx mark the node failed and throw PresenceNetworkError.
  async _request(method, path, body) {
    let refreshed = false;
    for (;;) {
      const base = this.url;
      const token = await this._token(false);
      const headers = { Accept: "application/json" };
      if (token) headers.Authorization = `Bearer ${token}`;
      const init = { method, headers };
      if (body !== undefined) {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      let res;
      try {
        res = await this._fetch(base + path, init);
      } catch (err) {
        this._markFailed(base);
        throw new PresenceNetworkError(base, err);
      }
      if (res.status >= 500) {
        this._markFailed(base);
        throw new PresenceNetworkError(base, new Error(`HTTP ${res.status}`));
      }
      if (res.status === 401 && !refreshed && typeof this._tokenSource === "function") {
        refreshed = true;
        await this._token(true);
        continue;
      }
      if (!res.ok) {
        const retry =
          res.status === 429
            ? parseRetryAfter(res.headers.get("Retry-After"), this._now()) ?? this._o.defaultRetryAfterMs
            : null;
        throw new PresenceHttpError(res.status, await readErrors(res), retry);
      }
      try {
        return await res.json();
      } catch (err) {
        this._markFailed(base);
        throw new PresenceNetworkError(base, err);
      }
    }
  }

  // ---- enter / leave / heartbeat ----

  _checkOpen() {
    if (this._closed) throw new PresenceClientClosed();
  }

  // The activity thresholds of enter(options), checked; null for onlyWhileActive: false.
  _activeOptions(options) {
    if (options == null) options = {};
    if (typeof options !== "object") throw new TypeError("enter options must be an object");
    const { onlyWhileActive = true, activeOptions = null } = options;
    if (typeof onlyWhileActive !== "boolean") throw new TypeError("onlyWhileActive must be a boolean");
    if (!onlyWhileActive) return null;
    return activeOptionsFrom(activeOptions ?? {}, this._defaultActive, this._minActive, "activeOptions");
  }

  // Whether the server is (to be) told that this client is present in the channel.
  _channelActive(name) {
    return this._present.has(name) && !this._inactive.has(name);
  }

  _enter(proxy, activity) {
    this._checkOpen();
    let entries = this._present.get(proxy.name);
    if (!entries) {
      this._present.set(proxy.name, (entries = new Map()));
      // Not announced yet: the check below enters it unless the user is inactive.
      this._inactive.add(proxy.name);
    }
    entries.set(proxy, activity);
    return this._checkActivity(proxy.name);
  }

  _setActivity(proxy, activity) {
    const entries = this._present.get(proxy.name);
    if (!entries?.has(proxy) || this._closed) return;
    entries.set(proxy, activity);
    this._checkActivity();
  }

  _leave(proxy) {
    this._checkOpen();
    const entries = this._present.get(proxy.name);
    if (!entries?.delete(proxy)) return Promise.resolve();
    if (entries.size > 0) {
      // The others may be entered only while active, and the user inactive.
      this._checkActivity();
      return Promise.resolve();
    }
    this._present.delete(proxy.name);
    // Left already for inactivity (or never entered): the server has nothing to forget.
    if (this._inactive.delete(proxy.name)) return Promise.resolve();
    return this._enqueue(proxy.name, "leave");
  }

  _enqueue(channel, type) {
    const d = deferred();
    this._queue.push({ channel, type, d });
    this._scheduleUpdate();
    return d.promise;
  }

  // Whether a channel's entries keep it present at time t, and until when (Infinity: no limit
  // but the page's life).
  _activeUntil(entries, t) {
    let until = -Infinity;
    for (const activity of entries.values()) {
      if (activity === null) return Infinity;
      until = Math.max(until, this._activity.until(activity));
    }
    return until > t ? until : null;
  }

  // Enters and leaves channels as the user's activity requires, and sets the one timer that
  // wakes this up when the next channel's threshold passes. The leave or enter goes out as a
  // queued change (first at once, then throttled); handles of a channel that flipped fire
  // "change". Returns the acknowledgement of waitFor's enter when this check made one.
  _checkActivity(waitFor = null) {
    if (this._closed) return Promise.resolve();
    const t = this._now();
    let next = Infinity;
    let acked = null;
    const flipped = [];
    for (const [name, entries] of this._present) {
      const until = this._activeUntil(entries, t);
      const active = until !== null;
      if (active) next = Math.min(next, until);
      if (active === !this._inactive.has(name)) continue;
      if (active) this._inactive.delete(name);
      else this._inactive.add(name);
      const d = name === waitFor ? deferred() : null;
      if (d) acked = d.promise;
      this._queue.push({ channel: name, type: active ? "enter" : "leave", d });
      flipped.push(name);
    }
    this._activity.waiting = this._inactive.size > 0;
    this._clear("_activityTimer");
    if (next !== Infinity) {
      this._activityTimer = this._setTimeout(() => {
        this._activityTimer = null;
        this._checkActivity();
      }, Math.max(0, next - t));
    }
    if (flipped.length > 0) {
      this._clear("_heartbeatTimer");
      this._scheduleUpdate();
    }
    for (const name of flipped) {
      for (const proxy of this._present.get(name).keys()) proxy._syncActive();
    }
    return acked ?? Promise.resolve();
  }

  // Names of the channels the server is to count this client present in.
  _activeChannels() {
    return [...this._present.keys()].filter((name) => !this._inactive.has(name));
  }

  // Keeps the last event per channel; the promises of superseded events follow the survivor.
  _dedupQueue() {
    const last = new Map();
    for (const e of this._queue) {
      const prev = last.get(e.channel);
      if (prev?.d) {
        if (e.d) prev.d.resolve(e.d.promise);
        else e.d = prev.d;
      }
      last.delete(e.channel); // re-insert to keep the order of the latest events
      last.set(e.channel, e);
    }
    this._queue = [...last.values()];
  }

  // Discourse's rule: the first change goes out at once, later ones are debounced and throttled;
  // with nothing queued, a heartbeat is due heartbeatMs after the last update.
  _scheduleUpdate() {
    if (this._closed || this._frozen || this._updateRunning) return;
    const now = this._now();
    if (this._queue.length > 0) {
      this._clear("_heartbeatTimer");
      if (this._flushQueued) return;
      const earliest = Math.max(this._lastUpdate + this._o.throttleMs, this._retryAt);
      if (earliest <= now && this._debounceTimer == null) {
        // A microtask batches every change made in the same task into one request.
        this._flushQueued = true;
        queueMicrotask(() => {
          this._flushQueued = false;
          this._runUpdate();
        });
        return;
      }
      this._clear("_debounceTimer");
      this._debounceTimer = this._setTimeout(() => {
        this._debounceTimer = null;
        this._runUpdate();
      }, Math.max(this._o.debounceMs, earliest - now));
    } else if (this._present.size > this._inactive.size && this._heartbeatTimer == null) {
      const at = Math.max(this._nextHeartbeatAt, this._retryAt);
      this._heartbeatTimer = this._setTimeout(() => {
        this._heartbeatTimer = null;
        this._runUpdate();
      }, Math.max(0, at - now));
    }
  }

  async _runUpdate() {
    if (this._closed || this._frozen || this._updateRunning) return;
    this._clear("_debounceTimer");
    this._clear("_heartbeatTimer");
    this._dedupQueue();
    const queue = this._queue;
    this._queue = [];
    const present = this._activeChannels();
    const presentSet = new Set(present);
    const leave = queue.filter((e) => e.type === "leave" && !presentSet.has(e.channel)).map((e) => e.channel);
    if (present.length === 0 && leave.length === 0) {
      // Nothing the server needs to hear (an enter made while the user is inactive goes out on
      // their next activity).
      for (const e of queue) e.d?.resolve();
      this._scheduleUpdate();
      return;
    }
    this._updateRunning = true;
    const startedAt = this._now();
    try {
      const res = await this._request("POST", "/presence/update", {
        client_id: this.clientId,
        present_channels: present,
        leave_channels: leave,
      });
      this._lastUpdate = startedAt;
      this._updateFailures = 0;
      this._nextHeartbeatAt = this._now() + this._o.heartbeatMs;
      for (const e of queue) {
        if (e.type === "enter" && res?.[e.channel] === false) {
          e.d?.reject(new PresenceChannelNotFound(e.channel));
        } else {
          e.d?.resolve();
        }
      }
    } catch (err) {
      this._updateFailed(err, queue, startedAt);
    } finally {
      this._updateRunning = false;
      this._scheduleUpdate();
    }
  }

  _updateFailed(err, queue, startedAt) {
    const now = this._now();
    if (err instanceof PresenceHttpError && err.status === 429) {
      this._lastUpdate = startedAt;
      this._retryAt = now + err.retryAfterMs;
      this._nextHeartbeatAt = this._retryAt;
      this._queue.unshift(...queue);
    } else if (err instanceof PresenceHttpError) {
      // 400/401/403: resending the same body cannot succeed.
      this._lastUpdate = startedAt;
      this._nextHeartbeatAt = now + this._o.heartbeatMs;
      for (const e of queue) e.d?.reject(err);
      this._emitError(err);
    } else {
      // The server never saw it: no throttle slot used, retry on the next node after a back-off.
      this._updateFailures++;
      this._retryAt = now + this._backoff(this._updateFailures);
      this._nextHeartbeatAt = this._retryAt;
      this._queue.unshift(...queue);
      this._emitError(err);
    }
  }

  // Removes queued leaves and returns them with every present channel: what must be left now.
  _takeLeaves() {
    const leave = new Set(this._activeChannels());
    this._dedupQueue();
    for (const e of this._queue) {
      if (e.type === "leave") leave.add(e.channel);
      e.d?.resolve();
    }
    this._queue = [];
    return [...leave];
  }

  // The page is being unloaded or put in the back/forward cache. The leave goes out as a
  // keepalive fetch, which survives unload and carries the Authorization header; where keepalive
  // is missing, as navigator.sendBeacon, which cannot set headers, so the form body carries the
  // token in its token field (the server accepts it there for form and multipart bodies only).
  // Either way the server's timeout removes the client if the request is lost.
  _pageHide() {
    if (this._closed || this._frozen) return;
    const leave = this._takeLeaves();
    this._frozen = true;
    for (const t of ["_debounceTimer", "_heartbeatTimer", "_streamTimer"]) this._clear(t);
    this._closeStream();
    if (leave.length === 0) return;
    const url = `${this.url}/presence/update`;
    const body = new URLSearchParams();
    body.append("client_id", this.clientId);
    for (const ch of leave) body.append("leave_channels[]", ch);
    const token = this._tokenNow();
    if (this._keepalive && token) {
      try {
        const headers = { Authorization: `Bearer ${token}` };
        const p = this._fetch(url, { method: "POST", keepalive: true, headers, body });
        p?.catch?.(() => {});
        return;
      } catch {
        // fall through to the beacon
      }
    }
    if (token) body.append("token", token);
    try {
      this._navigator?.sendBeacon?.(url, body);
    } catch {
      // Nothing else can be sent now; the server's timeout ends the presence.
    }
  }

  // Back from the back/forward cache: the page left everything at pagehide, so enter again. The
  // user navigating back to the page is activity.
  _pageShow(ev) {
    if (this._closed || !this._frozen || !ev?.persisted) return;
    this._frozen = false;
    this._activity.seen();
    this._checkActivity();
    for (const channel of this._activeChannels()) this._queue.push({ channel, type: "enter", d: null });
    this._scheduleUpdate();
    this._streamChanged();
  }

  // ---- initial state ----

  _getInitial(name) {
    let d = this._getPending.get(name);
    if (!d) {
      d = deferred();
      this._getPending.set(name, d);
    }
    this._scheduleGet();
    return d.promise;
  }

  _scheduleGet() {
    if (this._getRunning || this._getFlushQueued || this._getTimer != null || this._closed) return;
    // Like Ember's once(): every channel asked for in this task shares a request.
    this._getFlushQueued = true;
    queueMicrotask(() => {
      this._getFlushQueued = false;
      this._runGet();
    });
  }

  async _runGet() {
    if (this._getRunning || this._closed || this._getPending.size === 0) return;
    const names = [...this._getPending.keys()].slice(0, this._o.getBatchSize);
    const batch = names.map((n) => [n, this._getPending.get(n)]);
    for (const n of names) this._getPending.delete(n);
    this._getRunning = true;
    let retryIn = null;
    try {
      const query = names.map((n) => `channels[]=${encodeURIComponent(n)}`).join("&");
      const res = await this._request("GET", `/presence/get?${query}`);
      this._getFailures = 0;
      for (const [n, d] of batch) d.resolve(res?.[n] ?? null);
    } catch (err) {
      if (err instanceof PresenceHttpError && err.status !== 429) {
        for (const [, d] of batch) d.reject(err);
      } else {
        // Put the batch back in front; a newer request for the same name follows the old one.
        const rest = this._getPending;
        this._getPending = new Map(batch);
        for (const [n, d] of rest) {
          const old = this._getPending.get(n);
          if (old) old.promise.then(d.resolve, d.reject);
          else this._getPending.set(n, d);
        }
        if (err instanceof PresenceHttpError) retryIn = err.retryAfterMs;
        else retryIn = this._backoff(++this._getFailures);
        this._emitError(err);
      }
    } finally {
      this._getRunning = false;
    }
    if (this._closed) return;
    if (retryIn != null) {
      this._getTimer = this._setTimeout(() => {
        this._getTimer = null;
        this._runGet();
      }, retryIn);
    } else if (this._getPending.size > 0) {
      this._runGet();
    }
  }

  // ---- subscriptions and the event stream ----

  async _subscribe(proxy, initialState) {
    this._checkOpen();
    let state = this._states.get(proxy.name);
    if (!state) {
      state = new ChannelState(this, proxy.name);
      this._states.set(proxy.name, state);
      state.ready = state.load(initialState);
      state.ready.then(() => this._streamChanged(), () => {});
    }
    state.proxies.add(proxy);
    try {
      await state.ready;
    } catch (err) {
      state.proxies.delete(proxy);
      if (this._states.get(proxy.name) === state) {
        // A failed load is not kept: the next subscribe() asks again.
        state.destroyed = true;
        this._states.delete(proxy.name);
      }
      throw err;
    }
    return state;
  }

  _unsubscribe(proxy) {
    const state = this._states.get(proxy.name);
    if (!state) return;
    state.proxies.delete(proxy);
    if (state.proxies.size > 0) return;
    state.destroyed = true;
    this._states.delete(proxy.name);
    this._streamChanged();
  }

  _streamChanged() {
    if (this._closed || this._frozen) return;
    this._clear("_streamTimer");
    this._streamTimer = this._setTimeout(() => {
      this._streamTimer = null;
      this._openStream();
    }, this._o.streamDebounceMs);
  }

  _closeStream() {
    this._streamGen++;
    if (this._es) {
      this._es.close();
      this._es = null;
    }
    this._streamKey = null;
    if (this._connected) {
      this._connected = false;
      this._emitState();
    }
  }

  _streamChannels() {
    const channels = {};
    for (const [name, s] of this._states) {
      if (s.loaded && !s.destroyed) channels[name] = s.lastMessageId ?? -1;
    }
    return channels;
  }

  async _openStream() {
    if (this._closed || this._frozen) return;
    const key = Object.keys(this._streamChannels()).sort().join("\n");
    if (this._es && key === this._streamKey) return;
    this._closeStream();
    if (key === "") return;
    const gen = this._streamGen;
    let token;
    try {
      token = await this._token(false);
    } catch (err) {
      this._emitError(err);
      this._streamFailed(null, false);
      return;
    }
    if (gen !== this._streamGen || this._closed || this._frozen) return;
    const channels = this._streamChannels();
    const base = this.url;
    let url = `${base}/presence/subscribe?channels=${encodeURIComponent(JSON.stringify(channels))}`;
    if (token) url += `&token=${encodeURIComponent(token)}`;
    // EventSource sends Last-Event-ID only on its own reconnects; a fresh one gets the cursor here.
    if (this._cursor) url += `&lastEventId=${encodeURIComponent(this._cursor)}`;
    const es = new this._EventSource(url);
    this._es = es;
    this._streamKey = Object.keys(channels).sort().join("\n");
    let opened = false;
    const mine = (fn) => (ev) => {
      if (es === this._es) fn(ev);
    };
    es.addEventListener("open", mine(() => {
      opened = true;
      this._streamFailures = 0;
      if (!this._connected) {
        this._connected = true;
        this._emitState();
      }
    }));
    es.addEventListener("message", mine((ev) => this._streamEvent(ev, (s, d) => s.onMessage(d))));
    es.addEventListener("resync", mine((ev) => this._streamEvent(ev, (s) => s.refetch())));
    es.addEventListener("unavailable", mine((ev) => this._streamEvent(ev, (s) => s.markUnavailable())));
    es.addEventListener("error", mine(() => this._streamFailed(base, opened)));
  }

  _streamEvent(ev, fn) {
    if (ev.lastEventId) this._cursor = ev.lastEventId;
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      return;
    }
    const state = this._states.get(data?.channel);
    if (state?.loaded) fn(state, data);
  }

  // EventSource hides the HTTP status, so a stream that fails before opening may have met a 401:
  // the token is asked for again before the next attempt. Any failure moves to the next node,
  // which serves every channel as well, after a back-off.
  _streamFailed(base, opened) {
    this._closeStream();
    if (base) this._markFailed(base);
    if (!opened) this._tokenStale = true;
    this._streamFailures++;
    this._clear("_streamTimer");
    this._streamTimer = this._setTimeout(() => {
      this._streamTimer = null;
      this._openStream();
    }, this._backoff(this._streamFailures));
  }
}

export default PresenceClient;
