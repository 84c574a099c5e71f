// TypeScript types of pulse.js, the django-pulse browser SDK (docs/js-sdk.md).
// pulse.js is a UMD file: the global `Pulse` in a <script> page, or the module's exports.

export as namespace Pulse;

export type ConnectionState =
  | 'initialized'
  | 'connecting'
  | 'connected'
  | 'disconnected'
  | 'suspended'
  | 'closing'
  | 'closed'
  | 'failed';

export type ChannelState = 'initialized' | 'attaching' | 'attached' | 'detaching' | 'detached' | 'failed';

export type PresenceEvent = 'enter' | 'leave' | 'update';
/** Per user (clientId): the first connection entering, the last leaving, anything else. */
export type PresenceUserEvent = 'joined' | 'left' | 'updated';

/** What authCallback may resolve to: the token string, or an object holding it (e.g. pulse.get_token()'s dict). */
export type TokenResult = string | { token: string; [key: string]: unknown };

/** A token dict as returned by the server's `pulse.get_token()` / `POST /pulse/token/`. */
export interface TokenDetails {
  token: string;
  endpoint?: string;
  kbId?: string;
  clientId?: string;
  expiresAt?: number;
}

export interface RealtimeOptions {
  /** The app id; informational (the token names the app). */
  kbId?: string;
  /** The token from pulse.get_token() (the string, or the whole dict). Optional with authUrl/authCallback. */
  token?: string | TokenDetails;
  /** ws(s):// URL of the endpoint, or a path on this page's host. Default: this host's /pulse/ws/. */
  endpoint?: string;
  /** The client id the token was issued for. */
  clientId?: string | number;
  /** POSTed JSON {clientId, ...authParams} to get a new token; answers {token} (or a token string). */
  authUrl?: string;
  /** Extra members of the authUrl body (e.g. {action: 'getPulseToken', userId} for the seed's backend). */
  authParams?: Record<string, unknown>;
  /** Extra headers of the authUrl request (X-CSRFToken is added from Django's csrftoken cookie when same-origin). */
  authHeaders?: Record<string, string>;
  authMethod?: string;
  authCredentials?: 'omit' | 'same-origin' | 'include';
  /** Called for a new token when the current one expires or is refused. */
  authCallback?: (params: { clientId: string | null; [key: string]: unknown }) => TokenResult | Promise<TokenResult>;
  /** Connect from the constructor (default true). */
  autoConnect?: boolean;
  /** Close cleanly on `pagehide` so presence leaves at once (default true). */
  closeOnUnload?: boolean;
  /** Queue publish/presence.get while not connected (default true); false rejects them. */
  queueMessages?: boolean;
  /** Reconnect backoff: first delay (500 ms) doubling up to retryMax (30 000 ms), jittered to [d/2, d]. */
  retryInitial?: number;
  retryMax?: number;
  /** After this long without a connection (120 000 ms) the state is `suspended`. */
  suspendedAfter?: number;
  /** Base retry delay while suspended (60 000 ms). */
  suspendedRetry?: number;
  /** Time allowed from opening a socket to `connected` (15 000 ms). */
  connectTimeout?: number;
  /** Time allowed for a reply to publish / presence.get / token refresh (15 000 ms). */
  requestTimeout?: number;
  /** Heartbeat watchdog until the server announces its own values (15 000 + 10 000 ms). */
  heartbeatInterval?: number;
  heartbeatGrace?: number;
  /** A WebSocket implementation outside browsers (e.g. the `ws` package in Node). */
  WebSocket?: unknown;
  /** Transports to use, in order (docs/transports.md); null/absent: ['websocket', 'sse']. */
  transports?: Array<'websocket' | 'sse'> | null;
  /** A WebSocket that has not reached `connected` after this long (5 000 ms) is dropped for SSE. */
  websocketTimeout?: number;
  /** After falling back, SSE is used for this long (300 000 ms) before WebSocket is tried again. */
  websocketRetry?: number;
  /** The http(s) URL of the SSE endpoint; default: `endpoint` with ws(s) -> http(s) and /ws/ -> /sse/. */
  sseEndpoint?: string;
  /** An EventSource implementation outside browsers. */
  EventSource?: unknown;
  /** A fetch implementation for the SSE transport's POSTs (default: the global fetch). */
  fetch?: unknown;
}

/** Every error the SDK reports: the server's code and message, or the client's own code. */
export class PulseError extends Error {
  constructor(code: string, message?: string, extra?: Record<string, unknown>);
  readonly name: 'PulseError';
  /** docs/protocol.md's error codes, plus connection_closed, connection_suspended, connection_failed,
   *  disconnected, timeout, auth_failed, bad_request, heartbeat_timeout and the close-code names. */
  code: string;
  message: string;
  /** The WebSocket close code behind it, when a close caused it. */
  closeCode?: number;
  /** The HTTP status of the authUrl answer, when that failed. */
  statusCode?: number;
  cause?: unknown;
  toJSON(): { code: string; message: string; closeCode?: number; statusCode?: number };
}

export interface ConnectionStateChange {
  previous: ConnectionState;
  current: ConnectionState;
  /** Why (for disconnected / suspended / failed, and the connecting that follows them). */
  reason?: PulseError;
  /** Milliseconds until the next attempt (disconnected / suspended). */
  retryIn?: number | null;
  /**
   * Only on the `disconnected` event that announces an end for good: true, with `current` the final state
   * (`failed` or `closed`) and `reason` why (app disabled, client revoked, token refused, server's close).
   */
  final?: boolean;
}

export interface ChannelStateChange {
  previous: ChannelState;
  current: ChannelState;
  reason?: PulseError;
}

export interface Limits {
  maxMessageSize?: number;
  maxSubscriptions?: number;
  heartbeatInterval?: number;
  heartbeatGrace?: number;
  maxPresenceData?: number;
  publishRate?: number;
  /** Whispers per second per connection (PULSE['WHISPER_RATE']). */
  whisperRate?: number;
  [key: string]: unknown;
}

export interface Message<T = any> {
  /** The event name. */
  name: string;
  data: T;
  id: string | null;
  /** Milliseconds since the epoch. */
  timestamp: number | null;
  /** The publishing client, when a client published it over the WebSocket. */
  clientId: string | null;
  /** The channel's serial: +1 for every message published on the channel. */
  serial: number | null;
  /** The channel's name. */
  channel: string;
}

/** A whisper another connection sent on the channel (`channel.listenForWhisper`): never stored, no serial. */
export interface Whisper<T = any> {
  /** The whisper's name, e.g. `typing`. */
  name: string;
  data: T;
  /** The sending client. */
  clientId: string | null;
  /** The sending connection (one tab of the client). */
  connectionId: string | null;
  /** The channel's name. */
  channel: string;
}

export interface PublishOptions {
  /** The message id: a retry with the same id is delivered once. */
  id?: string;
  /** Deliver to every other subscriber, not to this connection (it still gets a serial and is in history). */
  toOthers?: boolean;
}

/** One user (clientId) present through one or more connections (tabs). */
export interface PresenceUser<T = any> {
  clientId: string;
  /** The data of the user's earliest-entered connection. */
  data: T;
  timestamp: number;
  connections: PresenceMember<T>[];
}

export interface PresenceMember<T = any> {
  clientId: string;
  connectionId: string;
  data: T;
  /** When the member entered, ms since the epoch. */
  timestamp: number;
}

export interface Discontinuity {
  channel: string;
  /** `reconnected` (messages were published while this client was away and could not be replayed) or the
   *  server's reason: `history_lost`, `resume_failed`, or one such as `broker_unavailable` after the channel's
   *  own `resume` was refused (when it succeeds the channel emits `resumed` instead). */
  reason: string;
  /** The last serial this client saw before the gap. */
  lastSerial: number | null;
  /** The channel's serial now. */
  serial: number | null;
}

export interface Resumed {
  channel: string;
  /** The last serial this client saw before the gap: the missed messages after it were replayed, in order, once. */
  serial: number | null;
  /** `reconnected` (this client's connection dropped) or the server's `discontinuity` reason (e.g.
   *  `broker_unavailable`) that made the channel re-attach with `resume` by itself. */
  reason: string;
}

export interface PublishResult {
  id: string;
  /** null when the server recognised a repeated id and did not deliver it again. */
  serial: number | null;
}

type Listener<A extends unknown[]> = (...args: A) => void;

export class EventEmitter<Events extends Record<string, unknown[]> = Record<string, unknown[]>> {
  on<K extends keyof Events & string>(event: K | K[], listener: Listener<Events[K]>): this;
  on(listener: (...args: any[]) => void): this;
  once<K extends keyof Events & string>(event: K | K[], listener: Listener<Events[K]>): this;
  once(listener: (...args: any[]) => void): this;
  off<K extends keyof Events & string>(event: K | K[], listener?: Listener<Events[K]>): this;
  off(listener?: (...args: any[]) => void): this;
  listenerCount(event?: string): number;
}

export type ConnectionEvents = { [S in ConnectionState]: [ConnectionStateChange] } & { error: [PulseError] };

export type ChannelEvents = { [S in ChannelState]: [ChannelStateChange] } & {
  discontinuity: [Discontinuity];
  resumed: [Resumed];
  error: [PulseError];
};

export class Connection extends EventEmitter<ConnectionEvents> {
  readonly state: ConnectionState;
  /** The server's connection id while connected (kept across a reconnect that recovered the connection). */
  readonly id: string | null;
  /** True when the current socket continued the previous connection (docs/history.md). */
  readonly recovered: boolean;
  readonly clientId: string | null;
  readonly kbId: string | null;
  /** When the current token expires, ms since the epoch. */
  readonly expiresAt: number | null;
  readonly limits: Limits | null;
  /** Why the connection is (or last was) disconnected, suspended or failed. */
  readonly errorReason: PulseError | null;
  connect(): void;
  close(): void;
}

export class Presence {
  readonly channel: Channel;
  /** True while the member list mirrors the server's (after subscribe() synced). */
  readonly syncComplete: boolean;
  readonly serial: number | null;
  enter<T = any>(data?: T): Promise<PresenceMember<T> | undefined>;
  update<T = any>(data?: T): Promise<PresenceMember<T> | undefined>;
  leave(): Promise<void>;
  get<T = any>(callback?: (members: PresenceMember<T>[]) => void): Promise<PresenceMember<T>[]>;
  subscribe<T = any>(listener: (members: PresenceMember<T>[]) => void): Promise<PresenceMember<T>[]>;
  subscribe<T = any>(
    event: PresenceEvent | PresenceEvent[], listener: (member: PresenceMember<T>) => void
  ): Promise<PresenceMember<T>[]>;
  unsubscribe(): void;
  unsubscribe(listener: (...args: any[]) => void): void;
  unsubscribe(event: PresenceEvent | PresenceEvent[], listener?: (member: PresenceMember) => void): void;
  /** The synced member list (empty until subscribe() has synced). */
  members<T = any>(): PresenceMember<T>[];
  /** Members grouped by clientId; `data` is the earliest-entered connection's (docs/presence.md). */
  users<T = any>(): PresenceUser<T>[];
  subscribeUsers<T = any>(listener: (users: PresenceUser<T>[]) => void): Promise<PresenceUser<T>[]>;
  subscribeUsers<T = any>(
    event: PresenceUserEvent | PresenceUserEvent[], listener: (user: PresenceUser<T>) => void
  ): Promise<PresenceUser<T>[]>;
  unsubscribeUsers(listener?: (users: PresenceUser[]) => void): void;
  unsubscribeUsers(event: PresenceUserEvent | PresenceUserEvent[], listener?: (user: PresenceUser) => void): void;
}

export class Channel extends EventEmitter<ChannelEvents> {
  readonly name: string;
  readonly state: ChannelState;
  readonly errorReason: PulseError | null;
  /** The last message serial seen on this channel. */
  readonly serial: number | null;
  readonly epoch: string | number | null;
  readonly presence: Presence;
  subscribe<T = any>(listener: (message: Message<T>) => void): Promise<void>;
  subscribe<T = any>(event: string | string[], listener: (message: Message<T>) => void): Promise<void>;
  unsubscribe(): void;
  unsubscribe(listener: (message: Message) => void): void;
  unsubscribe(event: string | string[], listener?: (message: Message) => void): void;
  publish(name: string, data?: unknown, options?: PublishOptions): Promise<PublishResult>;
  publish(message: { name: string; data?: unknown; id?: string }): Promise<PublishResult>;
  /** Send a client event to the channel's other subscribers (needs the `whisper` capability): not stored, no
   *  serial, not delivered back to this connection. Resolves true when relayed, false when dropped for now (not
   *  connected, rate-limited, ...); rejects for a refusal (`forbidden`, `message_too_large`). */
  whisper(name: string, data?: unknown): Promise<boolean>;
  listenForWhisper<T = any>(listener: (whisper: Whisper<T>) => void): Promise<void>;
  listenForWhisper<T = any>(name: string | string[], listener: (whisper: Whisper<T>) => void): Promise<void>;
  stopListeningForWhisper(): void;
  stopListeningForWhisper(listener: (whisper: Whisper) => void): void;
  stopListeningForWhisper(name: string | string[], listener?: (whisper: Whisper) => void): void;
  attach(): Promise<void>;
  detach(): Promise<void>;
  /** The newest retained messages, oldest first (needs the `history` capability). */
  history<T = any>(options?: { limit?: number; before?: number }): Promise<Message<T>[]>;
}

export class Channels {
  /** The channel called `name`, the same object every time; throws PulseError invalid_channel on a bad name. */
  get(name: string, options?: { rewind?: number }): Channel;
  all(): Channel[];
}

export class Realtime {
  constructor(options: RealtimeOptions);
  readonly options: Required<Pick<RealtimeOptions, 'autoConnect' | 'closeOnUnload' | 'queueMessages'>> & RealtimeOptions;
  /** The absolute ws(s):// URL used. */
  readonly endpoint: string;
  readonly connection: Connection;
  readonly channels: Channels;
  readonly clientId: string | null;
  connect(): void;
  close(): void;
}

/** The reconnect delay before attempt `attempt` (1 = first retry): min(retryMax, retryInitial * 2^(attempt-1))
 *  scaled by a random factor in [0.5, 1] (`random` 0..1 fixes it, for tests). */
export function retryDelay(
  attempt: number, options?: Pick<RealtimeOptions, 'retryInitial' | 'retryMax'>, random?: number
): number;

export const DEFAULTS: Readonly<Required<Pick<RealtimeOptions,
  | 'autoConnect' | 'closeOnUnload' | 'queueMessages' | 'retryInitial' | 'retryMax' | 'suspendedAfter'
  | 'suspendedRetry' | 'connectTimeout' | 'requestTimeout' | 'heartbeatInterval' | 'heartbeatGrace'
  | 'authMethod' | 'authCredentials' | 'websocketTimeout' | 'websocketRetry'>>> & { transports: null };
export const STATES: ConnectionState[];
export const VERSION: string;
export const PROTOCOL_VERSION: number;

/** Live templates (docs/live-templates.md): the data of a `pulse:html` message. */
export interface Fragment {
  action: 'append' | 'prepend' | 'replace' | 'update' | 'remove' | 'before' | 'after' | 'refresh';
  target?: string;
  html?: string;
  method?: 'morph';
}

/** Live templates: the <pulse-stream-source> / <pulse-presence> elements' shared state. */
export const Live: {
  readonly FRAGMENT_EVENT: 'pulse:html';
  /** Apply one fragment to this document (Turbo, htmx or plain DOM, as for a received one). */
  applyFragment(data: Fragment): void;
  /** The Realtime of the live elements, created from #pulse-live-config on first use (null without it). */
  realtime(): Realtime | null;
  /** refreshDelay: ms within which refreshes are one; reloadGuard: ms an automatic reload does not repeat. */
  readonly options: { refreshDelay: number; reloadGuard: number };
};
