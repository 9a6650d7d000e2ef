// Types for presence-client.js, the browser client of the presence service.

/** A user as the server shows it to other users (taken from their token's claims). */
export interface PresenceUser {
  /** The token's `sub`. */
  id: string;
  username?: string;
  name?: string;
  avatar_template?: string;
}

/** One channel's value in the answer of GET /presence/get; `users` is absent when count-only. */
export interface PresenceChannelSnapshot {
  count: number;
  /** Needed to follow the channel's stream from this state on. */
  last_message_id: number;
  users?: PresenceUser[];
}

/** A bearer token, a function returning one, or null/undefined for an anonymous client. */
export type PresenceTokenSource =
  | string
  | null
  | undefined
  | (() => string | null | undefined | Promise<string | null | undefined>);

/**
 * Thresholds of activity, in milliseconds, as Discourse's `activeOptions`. A missing one takes its
 * default; values below the minimums (Discourse's: the defaults; see
 * `PresenceClientOptions.minActiveOptions`) are an error. `Infinity` turns a threshold off.
 */
export interface PresenceActiveOptions {
  /** Leave once the user has not clicked, typed, scrolled, touched or focused the page for this long. Default and minimum 60000. */
  userUnseenTime?: number;
  /** Leave once the tab has been hidden for this long. Default and minimum 10000. */
  browserHiddenTime?: number;
}

/** Options of `PresenceChannel#enter`, as Discourse's. */
export interface PresenceEnterOptions {
  /**
   * Default true: the channel is left while the user is inactive (see `activeOptions`) and
   * entered again on their next click, key, scroll, touch or focus, or when the tab is shown.
   * False: present as long as the page is open (and the client is not closed).
   */
  onlyWhileActive?: boolean;
  /** The thresholds; ignored when `onlyWhileActive` is false. */
  activeOptions?: PresenceActiveOptions | null;
}

/** The subset of EventSource the client uses. */
export interface PresenceEventSourceLike extends EventTarget {
  close(): void;
}

/** Everything that can be passed to `new PresenceClient(...)`. */
export interface PresenceClientOptions {
  /** Base URLs of cluster nodes, tried in order; requests move to the next one when a node fails. */
  urls: string[];
  /**
   * The user's JWT, or a (possibly async) function returning it. A function is called again
   * when the server answers 401, when a JWT's exp has passed and when the event stream fails
   * before opening (EventSource cannot show the status).
   */
  token?: PresenceTokenSource;
  /** client_id sent to the server; a random one by default. */
  clientId?: string;

  /** Interval between heartbeats while present in any channel. Default 30000. */
  heartbeatMs?: number;
  /** Quiet time collected before a throttled update is sent. Default 500. */
  debounceMs?: number;
  /** Minimum interval between two updates; the first change after a quiet period goes at once. Default 1000. */
  throttleMs?: number;
  /** Channels per GET /presence/get, at most 50. Default 50. */
  getBatchSize?: number;
  /** Delay that coalesces subscription changes into one reopen of the event stream. Default 100. */
  streamDebounceMs?: number;
  /** First back-off step after a network error; doubles per failure. Default 1000. */
  retryBaseMs?: number;
  /** Back-off cap. Default 30000. */
  retryMaxMs?: number;
  /** Wait after a 429 without a usable Retry-After header. Default 5000. */
  defaultRetryAfterMs?: number;
  /**
   * Smallest `activeOptions` that `enter` accepts. Default Discourse's, `{userUnseenTime: 60000,
   * browserHiddenTime: 10000}`. Lower them only for tests and demos: short thresholds make
   * presence flap, and every flip costs an update.
   */
  minActiveOptions?: PresenceActiveOptions;
  /**
   * @deprecated Pass `enter({activeOptions: {browserHiddenTime}})` instead. When set, it is the
   * default `browserHiddenTime` of channels entered `onlyWhileActive` (raised to the minimum),
   * and the constructor warns once on the console. It no longer affects channels entered with
   * `onlyWhileActive: false`. 0 or absent: the default 10000.
   */
  leaveOnHiddenMs?: number;

  /** Injected for tests; default globalThis.fetch. */
  fetch?: (input: string, init?: RequestInit) => Promise<Response>;
  /** Injected for tests; default globalThis.EventSource. */
  EventSource?: new (url: string) => PresenceEventSourceLike;
  /** Injected for tests; default globalThis.setTimeout. */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  /** Injected for tests; default globalThis.clearTimeout. */
  clearTimeout?: (id: any) => void;
  /** Injected for tests; milliseconds since the epoch, default Date.now. */
  now?: () => number;
  /** Injected for tests; jitter source in [0, 1), default Math.random. */
  random?: () => number;
  /**
   * Receives the pagehide/pageshow listeners and the activity listeners (click, keydown,
   * touchmove, scroll, focus; capture phase, passive); default globalThis.window, null for none.
   * With neither a window nor a document there is no activity to watch and `onlyWhileActive`
   * never leaves.
   */
  window?: EventTarget | null;
  /** Receives the visibilitychange listener; default globalThis.document, null for none. */
  document?: (EventTarget & { visibilityState: string }) | null;
  /**
   * Provides sendBeacon, used for the pagehide leave where keepalive fetch is missing (a form
   * body carrying `token`, `client_id` and `leave_channels[]`); default globalThis.navigator.
   */
  navigator?: { sendBeacon?(url: string, data?: BodyInit | null): boolean } | null;
  /** Whether fetch supports `keepalive` (used to leave on pagehide); detected by default. */
  keepalive?: boolean;
}

export interface PresenceChannelEventMap {
  /** Users, count, availability, subscription or `active` changed. */
  change: Event;
}

/**
 * A handle on one channel, from `client.channel(name)`. Handles for one name share state and a
 * single server-side presence: the user stays present while any of them has entered.
 */
export class PresenceChannel extends EventTarget {
  private constructor();
  /** The channel name. */
  readonly name: string;
  /** Whether this handle has entered and not left (it stays true while left for inactivity). */
  readonly present: boolean;
  /**
   * Whether the server counts this client present in the channel now: this handle has entered
   * and the channel is not left for the user's inactivity. A "change" event fires when it flips.
   */
  readonly active: boolean;
  /** Whether this handle receives the channel's state. */
  readonly subscribed: boolean;
  /** Users present (a frozen array); null when not subscribed or count-only. */
  readonly users: readonly PresenceUser[] | null;
  /** Number of users present; null when not subscribed. */
  readonly count: number | null;
  /** Whether the channel only reveals a count; null when not subscribed. */
  readonly countOnly: boolean | null;
  /** False after the server said the channel is gone or not visible; null when not subscribed. */
  readonly available: boolean | null;

  /**
   * Marks the user present; queued, batched and kept alive by heartbeats. Resolves once the
   * server acknowledged (at once when the user is inactive: the enter goes out on their next
   * activity); rejects with PresenceChannelNotFound when it answered false, with a RangeError
   * for activeOptions below the minimums and a TypeError for malformed options. On a handle
   * that is present already, it only replaces the options.
   */
  enter(options?: PresenceEnterOptions): Promise<void>;
  /** Marks the user gone (once no other handle for the channel is present). */
  leave(): Promise<void>;
  /**
   * Starts following the channel. initialState (a GET /presence/get value) avoids a request.
   * Rejects with PresenceChannelNotFound when the channel does not exist or may not be viewed.
   */
  subscribe(initialState?: PresenceChannelSnapshot | null): Promise<void>;
  /** Stops following the channel. */
  unsubscribe(): Promise<void>;

  addEventListener<K extends keyof PresenceChannelEventMap>(
    type: K,
    listener: (this: PresenceChannel, ev: PresenceChannelEventMap[K]) => any,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof PresenceChannelEventMap>(
    type: K,
    listener: (this: PresenceChannel, ev: PresenceChannelEventMap[K]) => any,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

export interface PresenceClientEventMap {
  /** `url` or `connected` changed. */
  statechange: Event;
  /** A background request failed; `detail` is the error. */
  error: CustomEvent<Error>;
}

/** Connection to a presence cluster: one per page. */
export class PresenceClient extends EventTarget {
  constructor(options: PresenceClientOptions);
  /** Random id sent as client_id. */
  readonly clientId: string;
  /** Base URL of the node in use. */
  readonly url: string;
  /** Whether the event stream is open. */
  readonly connected: boolean;

  /** A new handle on a channel; handles for one name share state and presence. */
  channel(name: string): PresenceChannel;
  /** Leaves every channel, closes the stream and stops all timers; the client is unusable after. */
  close(): Promise<void>;

  addEventListener<K extends keyof PresenceClientEventMap>(
    type: K,
    listener: (this: PresenceClient, ev: PresenceClientEventMap[K]) => any,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof PresenceClientEventMap>(
    type: K,
    listener: (this: PresenceClient, ev: PresenceClientEventMap[K]) => any,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** enter() or subscribe() on a channel that does not exist or may not be used. */
export class PresenceChannelNotFound extends Error {
  readonly name: "PresenceChannelNotFound";
  readonly channel: string;
}

/** An HTTP error answer (400, 401 after a token refresh, 403, 404, 413, 429). */
export class PresenceHttpError extends Error {
  readonly name: "PresenceHttpError";
  readonly status: number;
  /** The `errors` of the JSON body. */
  readonly errors: string[];
  /** For 429: how long the server asked to wait; otherwise null. */
  readonly retryAfterMs: number | null;
}

/** A node could not be reached or answered 5xx; the client moves to the next URL. */
export class PresenceNetworkError extends Error {
  readonly name: "PresenceNetworkError";
  readonly url: string;
  readonly cause: unknown;
}

/** Use of a channel after PresenceClient#close. */
export class PresenceClientClosed extends Error {
  readonly name: "PresenceClientClosed";
}

export default PresenceClient;
