/*!
 * pulse.js: the django-pulse browser SDK, speaking wire protocol v1 (docs/protocol.md).
 *
 * One readable file, no dependencies, no build step. Load it with a <script> tag (it defines the global
 * `Pulse`), require() it (CommonJS), or import it as an ES module through pulse.mjs beside it.
 *
 *     const realtime = new Pulse.Realtime({ kbId, token, endpoint, clientId: 'user123' });
 *     realtime.connection.on('connected', () => console.log('Connected!'));
 *     const channel = realtime.channels.get('posts');
 *     channel.subscribe('new_post', (message) => console.log(message.data));
 *     channel.presence.enter({ name: 'Alice' });
 *
 * Reference: docs/js-sdk.md. TypeScript types: pulse.d.ts.
 *
 * How it is built, in one paragraph: the Connection owns the WebSocket, the state machine (initialized,
 * connecting, connected, disconnected, suspended, closing, closed, failed), reconnection with backoff, the
 * heartbeat watchdog, token renewal and request/reply matching by `ref`. Channels and their Presence keep
 * a *desired* state (subscribed? present with which data? watching presence?) next to the state the server
 * has acknowledged on the current socket, and `_reconcile()` sends whatever request closes the gap. A new
 * socket starts with nothing acknowledged, so resubscribing and re-entering after a reconnect is the same
 * code path as the first subscribe. One-shot requests (publish, presence.get) wait in a queue while the
 * connection is down and are sent, in order, once it is up.
 */
(function (root, factory) {
  'use strict';
  /* global define */
  if (typeof define === 'function' && define.amd) {
    define([], factory);
  } else if (typeof module === 'object' && module.exports) {
    module.exports = factory();
  } else {
    root.Pulse = factory();
  }
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  var VERSION = '0.1.0';
  var PROTOCOL_VERSION = 1;

  /** Tunables (milliseconds unless said otherwise); every one can be overridden in the Realtime options. */
  var DEFAULTS = Object.freeze({
    autoConnect: true, // connect as soon as the Realtime is constructed
    closeOnUnload: true, // close cleanly on `pagehide`, so others see this client leave at once
    queueMessages: true, // queue publish/presence.get while not connected instead of rejecting them
    retryInitial: 500, // first reconnect delay before jitter
    retryMax: 30000, // reconnect delays double from retryInitial up to this cap
    suspendedAfter: 120000, // after this long without a connection: state `suspended`
    suspendedRetry: 60000, // base retry delay while suspended (jittered like the others)
    connectTimeout: 15000, // from opening a socket to the server's `connected` frame
    requestTimeout: 15000, // a sent publish/presence.get/auth without a reply by then is rejected
    heartbeatInterval: 15000, // used until the server announces its own in `connected.limits`
    heartbeatGrace: 10000,
    authMethod: 'POST',
    authCredentials: 'same-origin',
    // Transports (docs/transports.md): the order to try them in; how long a WebSocket may take to reach
    // `connected` before the SDK falls back to SSE; how long it stays on SSE before trying WebSocket again.
    transports: null, // null: ['websocket', 'sse']
    websocketTimeout: 5000,
    websocketRetry: 300000
  });

  var STATES = ['initialized', 'connecting', 'connected', 'disconnected', 'suspended', 'closing', 'closed', 'failed'];
  var CHANNEL_RE = /^[A-Za-z0-9_\-.:@=~+]{1,255}$/;
  var PRESENCE_EVENTS = ['enter', 'leave', 'update'];

  // Close codes (docs/protocol.md): the names, and which ones mean "do not reconnect".
  var CLOSE_NAMES = {
    1000: 'normal', 1001: 'going_away', 1006: 'connection_lost', 1012: 'service_restart', 4000: 'protocol_error',
    4001: 'token_invalid',
    4002: 'token_expired', 4003: 'app_disabled', 4004: 'app_unknown', 4005: 'revoked', 4006: 'superseded',
    4008: 'auth_timeout', 4009: 'too_many_connections',
    4010: 'slow_consumer', 4011: 'heartbeat_timeout', 4029: 'rate_limited', 4500: 'internal_error',
    4503: 'unavailable'
  };
  var GIVE_UP_CODES = [4000, 4003, 4004, 4005, 4006];
  var TOKEN_CODES = [4001, 4002];
  // -- Server restarts (a deploy must not lose a client's place): a server process that is stopping (a deploy) closes with 1001 going_away
  // (daphne, django-pulse's shutdown) or 1012 service_restart (uvicorn); another process behind the load
  // balancer takes over, so reconnect now, with no backoff, and continue the connection (auth `recover`).
  var RESTART_CODES = [1001, 1012];
  // The codes this client closes with: 1000 for close(), 4011 when it drops a silent server, 4008 when
  // the server did not answer `auth` in time.
  var CLIENT_CLOSE = { normal: 1000, heartbeat: 4011, connectTimeout: 4008 };

  // ---------------------------------------------------------------------------------------------------
  // Errors

  /**
   * Every error the SDK hands to the application: `code` is the server's error code (docs/protocol.md)
   * or one of the client's own (`connection_closed`, `connection_suspended`, `connection_failed`,
   * `timeout`, `auth_failed`, `bad_request`, `message_too_large`); `message` is a human sentence;
   * `closeCode` is set when a WebSocket close caused it, `statusCode` when an HTTP answer (authUrl) did.
   */
  class PulseError extends Error {
    constructor(code, message, extra) {
      super(message || code);
      this.name = 'PulseError';
      this.code = code;
      if (extra) {
        for (var key in extra) {
          if (Object.prototype.hasOwnProperty.call(extra, key) && extra[key] !== undefined) this[key] = extra[key];
        }
      }
    }

    toJSON() {
      var out = { code: this.code, message: this.message };
      if (this.closeCode !== undefined) out.closeCode = this.closeCode;
      if (this.statusCode !== undefined) out.statusCode = this.statusCode;
      return out;
    }
  }

  // Internal: rejects requests whose socket went away; channels re-send their state on the next socket,
  // so this one is never shown to the application.
  var DROPPED = new PulseError('disconnected', 'the connection dropped before the reply arrived');

  function closeError(code, reason) {
    var name = CLOSE_NAMES[code] || 'connection_lost';
    return new PulseError(name, reason || 'connection closed (' + name + ', code ' + code + ')', { closeCode: code });
  }

  // ---------------------------------------------------------------------------------------------------
  // Small helpers

  /** Throw `error` on a fresh stack: a broken listener is reported (console, window.onerror) but
   *  cannot break the SDK's own bookkeeping or the other listeners. */
  function rethrowLater(error) {
    setTimeout(function () { throw error; }, 0);
  }

  function isFunction(value) {
    return typeof value === 'function';
  }

  // A TypeError naming the method when `event` (one event or a list of them) is not among `known`.
  function checkEvents(method, event, known) {
    var events = Array.isArray(event) ? event : [event];
    for (var i = 0; i < events.length; i++) {
      if (known.indexOf(events[i]) < 0) {
        throw new TypeError(method + ': event must be one of ' + known.join(', ') + ' (got ' + events[i] + ')');
      }
    }
  }

  // What unsubscribe(), unsubscribe(cb), unsubscribe(event) and unsubscribe(event, cb) remove from `events` and from
  // `listListeners` (the callbacks of every event); returns the list callbacks that remain.
  function offListeners(events, listListeners, event, listener) {
    if (event === undefined) {
      events.off();
      return [];
    }
    if (isFunction(event) && listener === undefined) {
      events.off(event);
      return listListeners.filter(function (l) { return l !== event; });
    }
    events.off(event, listener);
    return listListeners;
  }

  function byteLength(text) {
    if (typeof TextEncoder !== 'undefined') return new TextEncoder().encode(text).length;
    return unescape(encodeURIComponent(text)).length;
  }

  function randomId(length) {
    var alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
    var out = '';
    var bytes = null;
    if (typeof crypto !== 'undefined' && crypto.getRandomValues) bytes = crypto.getRandomValues(new Uint8Array(length));
    for (var i = 0; i < length; i++) {
      var n = bytes ? bytes[i] : Math.floor(Math.random() * 256);
      out += alphabet[n % alphabet.length];
    }
    return out;
  }

  /** The claims of a JWT, without verifying it (the server does that); null when it is not one. */
  function jwtClaims(token) {
    try {
      var part = String(token).split('.')[1];
      var base64 = part.replace(/-/g, '+').replace(/_/g, '/');
      while (base64.length % 4) base64 += '=';
      var text = typeof atob === 'function' ? atob(base64) : Buffer.from(base64, 'base64').toString('binary');
      return JSON.parse(decodeURIComponent(escape(text)));
    } catch (e) {
      return null;
    }
  }

  function readCookie(name) {
    if (typeof document === 'undefined' || !document.cookie) return null;
    var parts = document.cookie.split(';');
    for (var i = 0; i < parts.length; i++) {
      var pair = parts[i].trim();
      if (pair.slice(0, name.length + 1) === name + '=') return decodeURIComponent(pair.slice(name.length + 1));
    }
    return null;
  }

  function sameOrigin(url) {
    if (typeof location === 'undefined') return false;
    try {
      return new URL(url, location.href).origin === location.origin;
    } catch (e) {
      return false;
    }
  }

  /**
   * The reconnect delay before attempt `attempt` (1 = the first retry after a drop):
   * base = min(retryMax, retryInitial * 2^(attempt-1)), i.e. 0.5, 1, 2, 4, 8, 16, 30, 30, ... s, and the
   * delay is drawn uniformly from [base/2, base] ("equal jitter"): never above the cap, never a stampede
   * of clients retrying in the same millisecond after a server restart. `random` (0..1) is for tests.
   */
  function retryDelay(attempt, options, random) {
    var o = Object.assign({}, DEFAULTS, options || {});
    var n = Math.max(1, Math.floor(attempt) || 1);
    var base = Math.min(o.retryMax, o.retryInitial * Math.pow(2, n - 1));
    var r = random === undefined || random === null ? Math.random() : random;
    return Math.round(base * (0.5 + 0.5 * r));
  }

  // ---------------------------------------------------------------------------------------------------
  // Events

  /**
   * on(event, listener), on([events], listener), on(listener) for every event; once(...); off(...) with
   * the same shapes (no arguments removes everything). A listener that throws is reported, not swallowed.
   */
  class EventEmitter {
    constructor() {
      this._eventListeners = Object.create(null);
      this._anyListeners = [];
    }

    on(event, listener) {
      if (isFunction(event) && listener === undefined) {
        this._anyListeners.push(event);
        return this;
      }
      if (!isFunction(listener)) throw new TypeError('a listener function is required');
      var events = Array.isArray(event) ? event : [event];
      for (var i = 0; i < events.length; i++) {
        if (typeof events[i] !== 'string') throw new TypeError('an event name must be a string');
        (this._eventListeners[events[i]] = this._eventListeners[events[i]] || []).push(listener);
      }
      return this;
    }

    once(event, listener) {
      var self = this;
      if (isFunction(event) && listener === undefined) {
        var onceAny = function () { self.off(onceAny); return event.apply(this, arguments); };
        return this.on(onceAny);
      }
      if (!isFunction(listener)) throw new TypeError('a listener function is required');
      var wrapper = function () { self.off(event, wrapper); return listener.apply(this, arguments); };
      return this.on(event, wrapper);
    }

    off(event, listener) {
      if (event === undefined) {
        this._eventListeners = Object.create(null);
        this._anyListeners = [];
        return this;
      }
      if (isFunction(event) && listener === undefined) {
        listener = event;
        this._anyListeners = this._anyListeners.filter(function (l) { return l !== listener; });
        for (var name in this._eventListeners) this._removeListener(name, listener);
        return this;
      }
      var events = Array.isArray(event) ? event : [event];
      for (var i = 0; i < events.length; i++) {
        if (listener === undefined) delete this._eventListeners[events[i]];
        else this._removeListener(events[i], listener);
      }
      return this;
    }

    _removeListener(name, listener) {
      var list = (this._eventListeners[name] || []).filter(function (l) { return l !== listener; });
      if (list.length) this._eventListeners[name] = list;
      else delete this._eventListeners[name];
    }

    /** Listeners of `event` (with no argument: of every event, counting each "all events" listener once). */
    listenerCount(event) {
      if (event === undefined) {
        var total = this._anyListeners.length;
        for (var name in this._eventListeners) total += this._eventListeners[name].length;
        return total;
      }
      return (this._eventListeners[event] || []).length + this._anyListeners.length;
    }

    emit(event) {
      var args = Array.prototype.slice.call(arguments, 1);
      var listeners = (this._eventListeners[event] || []).concat(this._anyListeners);
      for (var i = 0; i < listeners.length; i++) {
        try {
          listeners[i].apply(this, args);
        } catch (error) {
          rethrowLater(error);
        }
      }
    }
  }

  /** Emit `error` on `emitter`; when nobody listens and no rejected promise carries it, log it. */
  function report(emitter, error, handled) {
    emitter.emit('error', error);
    // Listeners of every event get state changes only (see "State listeners" below), so only `error`
    // listeners count as handling it.
    if (!handled && !(emitter._eventListeners.error || []).length && typeof console !== 'undefined') {
      console.error('[pulse]', error.code + ':', error.message);
    }
  }

  // Refusals that mean "not now" rather than "no": channel state requests refused with them are retried.
  var TRANSIENT_CODES = ['rate_limited', 'unavailable', 'internal_error'];
  // A whisper that failed with one of these was dropped for now; whisper() resolves false rather than rejecting.
  var DROPPED_WHISPER_CODES = ['disconnected', 'rate_limited', 'unavailable', 'timeout'];

  /**
   * After a transient refusal of a state request (subscribe, presence.enter, ...): tell the `error`
   * listeners and try again on the backoff schedule. Returns false for a final refusal.
   */
  function retryLater(owner, emitter, error) {
    if (TRANSIENT_CODES.indexOf(error.code) < 0) return false;
    owner._transientRetries = (owner._transientRetries || 0) + 1;
    emitter.emit('error', error);
    setTimeout(function () { owner._reconcile(); }, retryDelay(owner._transientRetries));
    return true;
  }

  /** A promise with its resolve/reject, for requests answered later. */
  function deferred() {
    var d = {};
    d.promise = new Promise(function (resolve, reject) { d.resolve = resolve; d.reject = reject; });
    return d;
  }

  // ---------------------------------------------------------------------------------------------------
  // Connection

  /**
   * The WebSocket, its state machine and the request/reply bookkeeping. Events: one per state name
   * (listeners get `{previous, current, reason, retryIn}`), and `error` (a PulseError) for errors that
   * belong to no request: an `error` frame without `ref`, a failed token renewal, a broken frame.
   */
  class Connection extends EventEmitter {
    constructor(realtime) {
      super();
      this._realtime = realtime;
      this._options = realtime.options;
      this.state = 'initialized';
      this.id = null; // the server's connectionId while connected
      // Every connectionId this connection has held: a message published for the others only names the one it
      // excluded, and may come back (a resume on a connection that could not be continued) under a new id.
      this._ownIds = [];
      this.key = null; // the server's connectionKey: continues this connection after a drop (auth `recover`)
      this.recovered = false; // the current socket continued the previous connection
      this.clientId = realtime.options.clientId == null ? null : String(realtime.options.clientId);
      this.kbId = realtime.options.kbId == null ? null : String(realtime.options.kbId);
      this.expiresAt = null; // ms since the epoch, from `connected` / token refresh
      this.limits = null; // the server's limits from `connected`
      this.errorReason = null; // the PulseError behind the last disconnected/suspended/failed state
      this._ws = null;
      this._generation = 0; // bumped whenever a connection attempt is abandoned
      this._ref = 0;
      this._pending = new Map(); // ref -> request sent on the current socket
      this._queue = []; // one-shot requests waiting for a connection
      this._token = realtime._initialToken;
      this._tokenFresh = false; // the token was fetched after the last successful connect
      this._tokenPromise = null;
      this._attempt = 0;
      this._disconnectedAt = null;
      this._closeErrorFrame = null;
      this._timers = {};
    }

    get _canRenew() {
      return Boolean(this._options.authUrl || this._options.authCallback);
    }

    /** Open the connection (done automatically unless `autoConnect: false`); also after close() or failed. */
    connect() {
      if (this.state === 'connecting' || this.state === 'connected' || this.state === 'closing') return;
      this._clearTimer('retry');
      if (this.state === 'closed' || this.state === 'failed') {
        this._attempt = 0;
        this._disconnectedAt = null;
      }
      this._transition('connecting', { reason: this.errorReason || undefined });
      this._open();
    }

    /** Close for good: presence members leave at once, queued requests are rejected (`connection_closed`). */
    close() {
      if (this.state === 'closed' || this.state === 'closing') return;
      this._generation++;
      this._clearTimer('retry');
      this._clearTimer('renew');
      this._clearTimer('heartbeat');
      this._clearTimer('connect');
      this._rejectQueue(new PulseError('connection_closed', 'the connection was closed by the application'));
      var ws = this._ws;
      if (ws && (ws.readyState === 0 || ws.readyState === 1)) {
        this._transition('closing');
        try {
          ws.close(CLIENT_CLOSE.normal);
        } catch (e) { /* already closing */ }
        var self = this;
        // A socket whose peer vanished may never report its close: do not wait forever.
        this._timers.close = setTimeout(function () { self._socketClosed(ws, CLIENT_CLOSE.normal, ''); }, 3000);
      } else {
        this._ws = null;
        this._finishClose();
      }
    }

    // -- opening ------------------------------------------------------------------------------------

    async _open() {
      var generation = ++this._generation;
      var token;
      try {
        token = await this._getToken();
      } catch (error) {
        if (generation !== this._generation || this.state !== 'connecting') return;
        var fatal = error.statusCode === 401 || error.statusCode === 403;
        report(this, error, false);
        if (fatal) this._fail(error);
        else this._scheduleRetry(error, false);
        return;
      }
      if (generation !== this._generation || this.state !== 'connecting') return;
      var ws;
      try {
        ws = this._realtime._transports.open(this);
      } catch (error) {
        this._fail(new PulseError('bad_request', 'cannot open a WebSocket to ' + this._realtime.endpoint + ': ' +
          error.message));
        return;
      }
      var self = this;
      this._ws = ws;
      this._closeErrorFrame = null;
      ws.onopen = function () {
        if (ws !== self._ws) return;
        var auth = { action: 'auth', token: token };
        // Continue the previous connection (its id, and its presence members within the server's grace).
        if (self.key) auth.recover = self.key;
        self._sendRaw(auth);
      };
      ws.onmessage = function (event) {
        if (ws === self._ws) self._onFrame(event.data);
      };
      ws.onclose = function (event) {
        self._socketClosed(ws, event.code, event.reason);
      };
      ws.onerror = function () { /* a close event follows, with the code */ };
      this._timers.connect = setTimeout(function () {
        self._dropSocket(CLIENT_CLOSE.connectTimeout, new PulseError('timeout',
          'no `connected` from the server within ' + self._options.connectTimeout + ' ms'));
      }, this._options.connectTimeout);
    }

    _getToken() {
      if (this._token) return Promise.resolve(this._token);
      if (!this._canRenew) {
        return Promise.reject(new PulseError('auth_failed', 'no token, and neither authUrl nor authCallback to get one'));
      }
      return this._renewToken();
    }

    /** Fetch a new token through authCallback or authUrl (one fetch at a time). */
    _renewToken() {
      var self = this;
      if (!this._tokenPromise) {
        this._tokenPromise = this._requestToken().then(function (token) {
          self._token = token;
          self._tokenFresh = true;
          self._tokenPromise = null;
          return token;
        }, function (error) {
          self._tokenPromise = null;
          throw error;
        });
      }
      return this._tokenPromise;
    }

    async _requestToken() {
      var o = this._options;
      var params = Object.assign({ clientId: this.clientId }, o.authParams || {});
      var result;
      try {
        if (o.authCallback) {
          result = await o.authCallback(params);
        } else {
          var headers = Object.assign({ 'Content-Type': 'application/json', Accept: 'application/json' },
            o.authHeaders || {});
          var csrf = readCookie('csrftoken'); // Django's CSRF cookie, for session-authenticated token views
          if (csrf && sameOrigin(o.authUrl) && !headers['X-CSRFToken']) headers['X-CSRFToken'] = csrf;
          var response = await fetch(o.authUrl, {
            method: o.authMethod, headers: headers, credentials: o.authCredentials, body: JSON.stringify(params)
          });
          var body = null;
          try {
            body = await response.json();
          } catch (e) { /* not JSON: reported below */ }
          if (!response.ok) {
            var detail = body && body.error && typeof body.error === 'object' ? body.error : {};
            throw new PulseError(detail.code || 'auth_failed',
              detail.message || 'authUrl ' + o.authUrl + ' answered HTTP ' + response.status,
              { statusCode: response.status });
          }
          result = body;
        }
      } catch (error) {
        if (error instanceof PulseError) throw error;
        throw new PulseError('auth_failed', 'getting a token failed: ' + (error && error.message || error),
          { cause: error });
      }
      var token = typeof result === 'string' ? result : result && typeof result.token === 'string' ? result.token : null;
      if (!token) throw new PulseError('auth_failed', 'authUrl/authCallback must give a token string or {token: "..."}');
      return token;
    }

    // -- frames in ----------------------------------------------------------------------------------

    _onFrame(text) {
      var frame;
      try {
        frame = JSON.parse(text);
      } catch (e) {
        frame = null;
      }
      if (!frame || typeof frame !== 'object' || typeof frame.action !== 'string') {
        report(this, new PulseError('invalid_json', 'the server sent a frame that is not a JSON object with an action'));
        return;
      }
      if (this.state === 'connected') this._armHeartbeat();
      var channels = this._realtime.channels;
      switch (frame.action) {
        case 'connected':
          this._onConnected(frame);
          break;
        case 'ping':
          this._sendRaw({ action: 'pong' });
          break;
        case 'ok':
        case 'error':
          this._onReply(frame);
          break;
        case 'message':
          if (channels._has(frame.channel)) channels.get(frame.channel)._onMessage(frame);
          break;
        case 'excluded':
          // A message published for the others only (this connection excluded): its place, not its content.
          if (channels._has(frame.channel)) channels.get(frame.channel)._onExcluded(frame);
          break;
        case 'whisper':
          if (channels._has(frame.channel)) channels.get(frame.channel)._onWhisper(frame);
          break;
        case 'presence':
          if (channels._has(frame.channel)) channels.get(frame.channel).presence._onPresence(frame);
          break;
        case 'discontinuity':
          if (channels._has(frame.channel)) {
            channels.get(frame.channel)._onNotice(frame.reason || 'unknown');
            // Presence events may have been missed too: take a fresh snapshot (the listeners hear the diff).
            channels.get(frame.channel).presence._resync();
          }
          break;
        default:
          // Newer servers may send actions this client does not know; ignoring them is forward compatible.
          break;
      }
    }

    _onReply(frame) {
      var request = frame.ref === undefined || frame.ref === null ? undefined : this._pending.get(frame.ref);
      if (!request) {
        if (frame.action === 'error') this._onAsyncError(frame);
        return;
      }
      this._pending.delete(frame.ref);
      clearTimeout(request.timer);
      if (frame.action === 'ok') request.resolve(frame);
      else request.reject(new PulseError(frame.code || 'internal_error', frame.message || 'request failed'));
    }

    _onAsyncError(frame) {
      var error = new PulseError(frame.code || 'internal_error', frame.message || 'the server reported an error');
      if (this.state === 'connecting') {
        // `auth` failed: the close that follows carries this error as its reason.
        this._closeErrorFrame = error;
        return;
      }
      report(this, error, false);
    }

    _onConnected(frame) {
      this._clearTimer('connect');
      var previous = this.state;
      this.id = frame.connectionId || null;
      if (this.id && this._ownIds.indexOf(this.id) < 0) {
        this._ownIds.push(this.id);
        if (this._ownIds.length > 32) this._ownIds.shift();
      }
      this.key = frame.connectionKey || null; // a secret: `recover` in the next auth continues this connection
      this.recovered = frame.recovered === true;
      if (frame.clientId != null) {
        if (this.clientId != null && String(frame.clientId) !== this.clientId) {
          report(this, new PulseError('client_id_mismatch', 'the token is for client ' + frame.clientId +
            ', not ' + this.clientId + ' as given in the options'));
        }
        this.clientId = String(frame.clientId);
      }
      if (frame.kbId != null) this.kbId = String(frame.kbId);
      this.expiresAt = typeof frame.expiresAt === 'number' ? frame.expiresAt : null;
      this.limits = frame.limits && typeof frame.limits === 'object' ? frame.limits : {};
      this.errorReason = null;
      this._attempt = 0;
      this._disconnectedAt = null;
      this._tokenFresh = false;
      this.state = 'connected';
      if (this._ws) this._realtime._transports.connected(this, this._ws);
      this._armHeartbeat(true);
      this._scheduleRenew();
      // Restore channel state first (subscribe, enter, watch presence), then send what was queued.
      this._realtime.channels._onConnected();
      var queue = this._queue;
      this._queue = [];
      for (var i = 0; i < queue.length; i++) this._sendRequest(queue[i]);
      this._emitState(previous, 'connected', {});
    }

    // -- frames out ---------------------------------------------------------------------------------

    _sendRaw(frame) {
      this._ws.send(JSON.stringify(frame));
    }

    _sendRequest(request) {
      var ref = ++this._ref;
      var frame = Object.assign({ action: request.frame.action, ref: ref }, request.frame);
      // publish(..., {toOthers: true}): exclude the connection it is sent on (known only now: it may have been
      // queued while disconnected, or re-sent after a reconnect under another connectionId).
      if (request.toOthers) frame.exclude = this.id;
      this._realtime.channels._addStream(frame); // live templates: the page's signed stream name, if any
      this._pending.set(ref, request);
      if (request.kind === 'oneshot') {
        var self = this;
        request.timer = setTimeout(function () {
          if (self._pending.get(ref) !== request) return;
          self._pending.delete(ref);
          request.reject(new PulseError('timeout', 'no reply to ' + frame.action + ' within ' +
            self._options.requestTimeout + ' ms'));
        }, this._options.requestTimeout);
      }
      this._sendRaw(frame);
    }

    /**
     * A request that belongs to the current socket only (subscribe, presence.enter, auth refresh, ...).
     * If the socket drops first it is rejected with DROPPED, and the channel re-sends its state later.
     */
    _stateRequest(frame) {
      var d = deferred();
      if (this.state !== 'connected') d.reject(DROPPED);
      else this._sendRequest({ frame: frame, kind: 'state', resolve: d.resolve, reject: d.reject });
      return d.promise;
    }

    /**
     * Why `frame` cannot be sent, as the PulseError its promise is rejected with (`bad_request`: its data is not
     * JSON; `message_too_large`: with the `overhead` bytes the server adds, over maxMessageSize), or null. The
     * server cannot tell which request an oversized frame was (it does not parse it), so it could not reject
     * the promise: it is refused here, with the same code.
     */
    _unsendable(frame, overhead) {
      var text;
      try {
        text = JSON.stringify(frame);
      } catch (error) {
        return new PulseError('bad_request', 'the data cannot be encoded as JSON: ' + error.message);
      }
      var max = this.limits && this.limits.maxMessageSize;
      var size = byteLength(text) + overhead;
      if (max && size > max) {
        return new PulseError('message_too_large', 'the ' + frame.action + ' frame would be about ' +
          size + ' bytes; the server accepts at most ' + max);
      }
      return null;
    }

    /**
     * A request that must be answered once (publish, presence.get): sent now when connected, queued while
     * the connection is coming up or down, re-sent after a reconnect if its socket dropped before the reply.
     */
    _oneshot(frame, toOthers) {
      var d = deferred();
      // A published message must leave room for what the server adds to it (id, timestamp, clientId, serial:
      // about 150 bytes).
      var refused = this._unsendable(frame, (frame.action === 'publish' ? 160 : 32) + (toOthers ? 40 : 0));
      if (refused) {
        d.reject(refused);
        return d.promise;
      }
      var request = { frame: frame, kind: 'oneshot', resolve: d.resolve, reject: d.reject, toOthers: Boolean(toOthers) };
      if (this.state === 'connected') this._sendRequest(request);
      else if (this.state === 'failed') d.reject(this.errorReason || new PulseError('connection_failed', 'the connection failed'));
      else if (this.state === 'closing' || this.state === 'closed') {
        d.reject(new PulseError('connection_closed', 'the connection is closed; call connect() first'));
      } else if (this.state === 'suspended') {
        d.reject(new PulseError('connection_suspended', 'no connection to the server for a while; retrying',
          { cause: this.errorReason }));
      } else if (!this._options.queueMessages) {
        d.reject(new PulseError('disconnected', 'not connected, and queueMessages is false'));
      } else this._queue.push(request);
      return d.promise;
    }

    /**
     * A request that makes sense only now (whisper): sent when connected, rejected otherwise (`disconnected`),
     * never queued nor re-sent after a reconnect; a drop before the reply rejects it too.
     */
    _ephemeral(frame) {
      var d = deferred();
      // The server relays it with the sender's connectionId and clientId: leave room for them.
      var refused = this._unsendable(frame, 120);
      if (refused) {
        d.reject(refused);
        return d.promise;
      }
      if (this.state !== 'connected') {
        d.reject(new PulseError('disconnected', 'not connected: a ' + frame.action + ' is not queued'));
        return d.promise;
      }
      var self = this;
      var request = {
        frame: frame,
        kind: 'ephemeral',
        resolve: d.resolve,
        reject: function (error) {
          d.reject(error === DROPPED ? new PulseError('disconnected', 'the connection dropped before the ' +
            frame.action + ' was confirmed') : error);
        }
      };
      this._sendRequest(request);
      request.timer = setTimeout(function () {
        var pending = self._pending;
        pending.forEach(function (value, key) {
          if (value === request) {
            pending.delete(key);
            request.reject(new PulseError('timeout', 'no reply to ' + frame.action + ' within ' +
              self._options.requestTimeout + ' ms'));
          }
        });
      }, this._options.requestTimeout);
      return d.promise;
    }

    _rejectQueue(error) {
      var queue = this._queue;
      this._queue = [];
      for (var i = 0; i < queue.length; i++) queue[i].reject(error);
    }

    // -- closing, dropping, retrying ----------------------------------------------------------------

    /** Drop the current socket without waiting for the peer (dead server, no `connected` in time). */
    _dropSocket(code, error) {
      var ws = this._ws;
      if (!ws) return;
      try {
        ws.close(code, error.code);
      } catch (e) { /* already closed */ }
      this._socketClosed(ws, code, error.message, error);
    }

    _socketClosed(ws, code, reason, error) {
      if (ws !== this._ws) return;
      this._ws = null;
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      this._clearTimer('connect');
      this._clearTimer('heartbeat');
      this._clearTimer('renew');
      this._clearTimer('close');
      // Requests on the dead socket: channel state is restored on the next one; one-shots go back to the
      // head of the queue, in their original order.
      var requeue = [];
      var pending = this._pending;
      this._pending = new Map();
      pending.forEach(function (request) {
        clearTimeout(request.timer);
        if (request.kind === 'oneshot') requeue.push(request);
        else request.reject(DROPPED);
      });
      this._queue = requeue.concat(this._queue);
      this.id = null;
      this._realtime.channels._onDisconnected();

      if (this.state === 'closing' || this.state === 'closed') {
        this._finishClose();
        return;
      }
      var cause = error || this._closeErrorFrame || closeError(code, reason);
      if (cause.closeCode === undefined) cause.closeCode = code;
      this._closeErrorFrame = null;
      if (code === 1000) {
        // The server ended the connection normally: nothing to retry.
        this.errorReason = cause;
        this._rejectQueue(new PulseError('connection_closed', 'the server closed the connection', { cause: cause }));
        this._realtime.channels._onEnded(cause);
        this._transition('closed', { reason: cause });
      } else if (GIVE_UP_CODES.indexOf(code) >= 0) {
        this._fail(cause);
      } else if (TOKEN_CODES.indexOf(code) >= 0) {
        if (!this._canRenew) {
          this._fail(cause);
        } else if (this._tokenFresh && code === 4001) {
          // A token fetched a moment ago was refused outright: fetching another will not help.
          this._fail(cause);
        } else {
          var immediately = !this._tokenFresh;
          this._token = null;
          this._scheduleRetry(cause, immediately);
        }
      } else if (RESTART_CODES.indexOf(code) >= 0 && this._attempt === 0) {
        this._scheduleRetry(cause, true); // a restart: at once (a second failure in a row backs off as usual)
      } else {
        this._scheduleRetry(cause, this._realtime._transports.closed(ws, code));
      }
    }

    _scheduleRetry(reason, immediately) {
      var o = this._options;
      var now = Date.now();
      if (this._disconnectedAt === null) this._disconnectedAt = now;
      var suspended = now - this._disconnectedAt >= o.suspendedAfter;
      var delay;
      if (immediately) {
        delay = 0;
      } else {
        this._attempt += 1;
        delay = suspended ? Math.round(o.suspendedRetry * (0.5 + 0.5 * Math.random())) : retryDelay(this._attempt, o);
      }
      this.errorReason = reason;
      if (suspended) {
        this._rejectQueue(new PulseError('connection_suspended', 'no connection to the server for ' +
          Math.round((now - this._disconnectedAt) / 1000) + ' s; still retrying', { cause: reason }));
      }
      var self = this;
      this._clearTimer('retry');
      this._timers.retry = setTimeout(function () {
        delete self._timers.retry;
        if (self.state === 'disconnected' || self.state === 'suspended') self.connect();
      }, delay);
      this._transition(suspended ? 'suspended' : 'disconnected', { reason: reason, retryIn: delay });
    }

    /** Retry now, skipping the rest of the backoff (used when the browser comes back online). */
    _retryNow() {
      if (this.state !== 'disconnected' && this.state !== 'suspended') return;
      this._clearTimer('retry');
      this.connect();
    }

    _fail(error) {
      this._generation++;
      this._clearTimer('retry');
      this._clearTimer('renew');
      this.errorReason = error;
      var ws = this._ws;
      if (ws) {
        this._ws = null;
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try { ws.close(CLIENT_CLOSE.normal); } catch (e) { /* already closed */ }
      }
      this._rejectQueue(error);
      this._realtime.channels._onEnded(error);
      this._transition('failed', { reason: error });
      report(this, error, false);
    }

    _finishClose() {
      this._clearTimer('close');
      this._rejectQueue(new PulseError('connection_closed', 'the connection was closed by the application'));
      this._realtime.channels._onEnded(new PulseError('connection_closed', 'the connection was closed by the application'));
      this._transition('closed', {});
    }

    // -- heartbeat and token renewal ----------------------------------------------------------------

    /**
     * Note traffic from the server. One timer watches the silence: it is not re-created per frame (a busy
     * channel brings thousands a second); when it fires early it re-arms for the time left.
     */
    _armHeartbeat(restart) {
      this._lastTraffic = Date.now();
      if (restart) this._clearTimer('heartbeat');
      if (this._timers.heartbeat !== undefined) return;
      var limits = this.limits || {};
      var interval = typeof limits.heartbeatInterval === 'number' ? limits.heartbeatInterval : this._options.heartbeatInterval;
      var grace = typeof limits.heartbeatGrace === 'number' ? limits.heartbeatGrace : this._options.heartbeatGrace;
      var timeout = interval + grace;
      var self = this;
      var check = function () {
        var silent = Date.now() - self._lastTraffic;
        if (silent < timeout) {
          self._timers.heartbeat = setTimeout(check, timeout - silent);
          return;
        }
        delete self._timers.heartbeat;
        self._dropSocket(CLIENT_CLOSE.heartbeat, new PulseError('heartbeat_timeout',
          'nothing from the server for ' + timeout + ' ms'));
      };
      this._timers.heartbeat = setTimeout(check, timeout);
    }

    /**
     * Renew the token on the live connection shortly before it expires: at 80 % of its remaining life,
     * at most 60 s early, and (against a badly set client clock) never sooner than half the token's own
     * lifetime after it was obtained.
     */
    _scheduleRenew() {
      this._clearTimer('renew');
      if (!this._canRenew || typeof this.expiresAt !== 'number') return;
      var remaining = this.expiresAt - Date.now();
      var lead = Math.min(60000, Math.max(500, remaining * 0.2));
      var delay = remaining - lead;
      var claims = jwtClaims(this._token);
      var lifetime = claims && typeof claims.exp === 'number' && typeof claims.iat === 'number' ? (claims.exp - claims.iat) * 1000 : 0;
      delay = Math.max(delay, lifetime / 2, 500);
      var self = this;
      this._timers.renew = setTimeout(function () { self._renewOnline(); }, delay);
    }

    async _renewOnline() {
      var ws = this._ws;
      var token;
      try {
        this._token = null;
        token = await this._renewToken();
      } catch (error) {
        // Reported; the server closes with 4002 at expiry and the reconnect fetches a token again.
        report(this, error, false);
        return;
      }
      if (this.state !== 'connected' || this._ws !== ws) return; // the next connect uses the new token
      try {
        var reply = await this._stateRequest({ action: 'auth', token: token });
        if (typeof reply.expiresAt === 'number') this.expiresAt = reply.expiresAt;
        this._tokenFresh = false;
        this._scheduleRenew();
      } catch (error) {
        if (error !== DROPPED) report(this, error, false);
      }
    }

    // -- state --------------------------------------------------------------------------------------

    _transition(state, change) {
      var previous = this.state;
      this.state = state;
      this._emitState(previous, state, change || {});
    }

    _emitState(previous, current, change) {
      var event = { previous: previous, current: current, reason: change.reason, retryIn: change.retryIn };
      this.emit(current, event);
      this._announceEnd(event);
    }

    // -- every end of a connection is a `disconnected` (one listener sees them all) -----------------------------------
    //
    // The seed's pages listen only to `connected` and `disconnected`. A connection that ends for good (app
    // disabled 4003, client revoked 4005, token refused, the server's normal close) goes to `failed` or
    // `closed`, not `disconnected`; so its `disconnected` listeners hear of it too, with `final: true` and the
    // final state in `current` (`failed`/`closed`) and the PulseError in `reason`. Only named `disconnected`
    // listeners: a listener of every event already got the `failed`/`closed` event itself. The application's
    // own close() (no reason) is not announced: it knows.
    _announceEnd(event) {
      if ((event.current !== 'failed' && event.current !== 'closed') || !event.reason) return;
      var final = { previous: event.previous, current: event.current, reason: event.reason, retryIn: null, final: true };
      var listeners = (this._eventListeners.disconnected || []).slice();
      for (var i = 0; i < listeners.length; i++) {
        try {
          listeners[i].call(this, final);
        } catch (error) {
          rethrowLater(error);
        }
      }
    }

    _clearTimer(name) {
      if (this._timers[name] !== undefined) {
        clearTimeout(this._timers[name]);
        delete this._timers[name];
      }
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Presence

  function toMember(raw) {
    var m = raw && typeof raw === 'object' ? raw : {};
    return {
      clientId: m.clientId === undefined ? null : m.clientId,
      connectionId: m.connectionId === undefined ? null : m.connectionId,
      data: m.data === undefined ? null : m.data,
      timestamp: m.timestamp === undefined ? null : m.timestamp
    };
  }

  /** Apply one `presence` event frame to a connectionId -> member map; returns the member. */
  function applyPresenceEvent(members, frame) {
    var member = toMember(frame.member);
    if (frame.event === 'leave') members.delete(member.connectionId);
    else members.set(member.connectionId, member);
    return member;
  }

  /**
   * The members of one channel. A member is one connection of one client: `{clientId, connectionId,
   * data, timestamp}`. enter/update/leave describe what this client wants; the SDK keeps the server in
   * step, also across reconnects. subscribe() keeps a live member list, synced from the server.
   */
  class Presence {
    constructor(channel) {
      this.channel = channel;
      this.serial = null; // the channel's last presence serial seen
      this.syncComplete = false; // the member list matches the server's (after presence.subscribe)
      this._members = new Map(); // connectionId -> member
      this._events = new EventEmitter(); // enter / leave / update listeners
      this._listListeners = []; // subscribe(cb): the whole list after each change
      // Watching presence: desired and acknowledged on this socket.
      this._wantWatch = false;
      this._watching = false;
      this._watchBusy = false;
      this._watchWaiters = [];
      // Being present: desired (with data and a version) and acknowledged on this socket.
      this._wantPresent = false;
      this._data = null;
      this._version = 0;
      this._entered = false;
      this._enteredVersion = 0;
      this._enteredData = null;
      this._doneVersion = 0; // every enter/update/leave up to this version is settled
      this._memberBusy = false;
      this._memberWaiters = []; // {version, resolve, reject}
      this._hadSnapshot = false; // a later snapshot is a re-sync: report what changed meanwhile
      this._buffer = null; // presence events received while a re-sync waits for its snapshot
    }

    get _connection() {
      return this.channel._realtime.connection;
    }

    /** Enter with `data` (any JSON). Resolves with the member once the server has it. Re-entered after a reconnect. */
    enter(data) {
      return this._want(true, data === undefined ? null : data);
    }

    /** Change this client's data (entering if it is not present yet). */
    update(data) {
      return this._want(true, data === undefined ? null : data);
    }

    /** Leave. Resolves once the server has removed the member (at once when not connected: nothing to remove). */
    leave() {
      return this._want(false, null);
    }

    _want(present, data) {
      var gate = this._usable();
      if (gate) return Promise.reject(gate);
      this._wantPresent = present;
      if (present) this._data = data;
      var d = deferred();
      this._memberWaiters.push({ version: ++this._version, resolve: d.resolve, reject: d.reject });
      this._reconcile();
      return d.promise;
    }

    _usable() {
      var state = this._connection.state;
      if (state === 'failed') return this._connection.errorReason || new PulseError('connection_failed', 'the connection failed');
      if (state === 'closed' || state === 'closing') return new PulseError('connection_closed', 'the connection is closed; call connect() first');
      return null;
    }

    /**
     * The current members, from the server: `get(cb)` calls cb(members) and the returned Promise
     * resolves with the same array.
     */
    get(callback) {
      if (callback !== undefined && !isFunction(callback)) throw new TypeError('presence.get(callback): callback must be a function');
      return this._connection._oneshot({ action: 'presence.get', channel: this.channel.name }).then(function (reply) {
        var members = (reply.members || []).map(toMember);
        if (callback) {
          try {
            callback(members);
          } catch (error) {
            rethrowLater(error);
          }
        }
        return members;
      });
    }

    /**
     * subscribe(cb): cb(members) with the whole list, once when the list is first synced and after every
     * change. subscribe('enter' | 'leave' | 'update' | [...], cb): cb(member) for that change.
     * Resolves once the member list is synced.
     */
    subscribe(event, listener) {
      if (isFunction(event) && listener === undefined) {
        this._listListeners.push(event);
        if (this.syncComplete) {
          var members = this.members();
          var newListener = event;
          Promise.resolve().then(function () { newListener(members); }).catch(rethrowLater);
        }
      } else {
        checkEvents('presence.subscribe', event, PRESENCE_EVENTS);
        this._events.on(event, listener);
      }
      var gate = this._usable();
      if (gate) return Promise.reject(gate);
      this._wantWatch = true;
      var d = deferred();
      this._watchWaiters.push(d);
      this._reconcile();
      return d.promise;
    }

    /** unsubscribe(), unsubscribe(cb), unsubscribe(event), unsubscribe(event, cb). */
    unsubscribe(event, listener) {
      this._listListeners = offListeners(this._events, this._listListeners, event, listener);
      if (this._events.listenerCount() === 0 && this._listListeners.length === 0) {
        this._wantWatch = false;
        this._reconcile();
      }
    }

    /** The synced member list (empty until presence.subscribe has synced). */
    members() {
      return Array.from(this._members.values());
    }

    // -- keeping the server in step -----------------------------------------------------------------

    _reconcile() {
      var connection = this._connection;
      if (connection.state !== 'connected') {
        this._settleOffline();
        return;
      }
      this._reconcileMember(connection);
      this._reconcileWatch(connection);
    }

    /** While disconnected: a wish to be absent is already true (the old connection is gone). */
    _settleOffline() {
      if (!this._wantPresent && !this._entered && !this._memberBusy) this._settleMembers(this._version);
    }

    _reconcileMember(connection) {
      if (this._memberBusy) return;
      var self = this;
      var version = this._version;
      var channel = this.channel.name;
      if (this._wantPresent && (!this._entered || this._enteredVersion !== version)) {
        var action = this._entered ? 'presence.update' : 'presence.enter';
        var data = this._data;
        this._memberBusy = true;
        connection._stateRequest({ action: action, channel: channel, data: data }).then(function (reply) {
          self._memberBusy = false;
          self._transientRetries = 0;
          self._entered = true;
          self._enteredVersion = version;
          self._enteredData = data;
          self._settleMembers(version, reply.member ? toMember(reply.member) : undefined);
          self._reconcile();
        }, function (error) {
          self._memberBusy = false;
          if (error === DROPPED || retryLater(self, self.channel, error)) return;
          // Do not retry a refused enter/update forever: fall back to what the server has.
          if (self._entered) {
            self._data = self._enteredData;
            self._enteredVersion = self._version;
          } else {
            self._wantPresent = false;
          }
          var handled = self._rejectMembers(error);
          report(self.channel, error, handled);
          self._reconcile();
        });
      } else if (!this._wantPresent && this._entered) {
        this._memberBusy = true;
        connection._stateRequest({ action: 'presence.leave', channel: channel }).then(function () {
          self._memberBusy = false;
          self._entered = false;
          self._settleMembers(version);
          self._reconcile();
        }, function (error) {
          self._memberBusy = false;
          if (error === DROPPED || retryLater(self, self.channel, error)) return;
          if (error.code === 'not_present') {
            self._entered = false;
            self._settleMembers(version);
          } else {
            var handled = self._rejectMembers(error);
            report(self.channel, error, handled);
          }
          self._reconcile();
        });
      } else {
        this._settleMembers(version);
      }
    }

    _settleMembers(version, member) {
      if (version > this._doneVersion) this._doneVersion = version;
      var done = this._doneVersion;
      var keep = [];
      for (var i = 0; i < this._memberWaiters.length; i++) {
        var waiter = this._memberWaiters[i];
        if (waiter.version <= done) waiter.resolve(member);
        else keep.push(waiter);
      }
      this._memberWaiters = keep;
    }

    _rejectMembers(error) {
      var waiters = this._memberWaiters;
      this._memberWaiters = [];
      this._doneVersion = this._version;
      for (var i = 0; i < waiters.length; i++) waiters[i].reject(error);
      return waiters.length > 0;
    }

    _reconcileWatch(connection) {
      if (this._watchBusy) return;
      var self = this;
      var channel = this.channel.name;
      if (this._wantWatch && !this._watching) {
        this._watchBusy = true;
        connection._stateRequest({ action: 'presence.subscribe', channel: channel }).then(function (reply) {
          self._watchBusy = false;
          self._watching = true;
          self._applySnapshot(reply.members || [], reply.serial);
          self._resolveWatchers();
          self._reconcile();
        }, function (error) {
          self._watchBusy = false;
          if (error === DROPPED || retryLater(self, self.channel, error)) return;
          self._wantWatch = false;
          var waiters = self._watchWaiters;
          self._watchWaiters = [];
          for (var i = 0; i < waiters.length; i++) waiters[i].reject(error);
          report(self.channel, error, waiters.length > 0);
          self._reconcile();
        });
      } else if (!this._wantWatch && this._watching) {
        this._watchBusy = true;
        connection._stateRequest({ action: 'presence.unsubscribe', channel: channel }).then(function () {
          self._watchBusy = false;
          self._watching = false;
          self._members.clear();
          self._hadSnapshot = false;
          self.syncComplete = false;
          self._reconcile();
        }, function (error) {
          self._watchBusy = false;
          if (error !== DROPPED) report(self.channel, error, false);
          self._reconcile();
        });
      } else if (this._wantWatch && this._watching) {
        this._resolveWatchers();
      }
    }

    /**
     * Ask the server for a fresh snapshot on the live subscription (after a `discontinuity`). Events keep
     * flowing meanwhile, some older and some newer than the snapshot, so they are buffered and replayed on
     * top of it in order: each event sets one member's state outright, so replaying a run of events that
     * reaches past the snapshot ends in the right list whichever point the snapshot was taken at.
     */
    _resync() {
      if (!this._watching || this._watchBusy || this._connection.state !== 'connected') return;
      var self = this;
      this._watchBusy = true;
      this._buffer = [];
      this._connection._stateRequest({ action: 'presence.subscribe', channel: this.channel.name }).then(function (reply) {
        self._watchBusy = false;
        var buffered = self._buffer || [];
        self._buffer = null;
        self._applySnapshot(reply.members || [], reply.serial, buffered);
        self._reconcile();
      }, function (error) {
        self._watchBusy = false;
        self._buffer = null;
        if (error !== DROPPED) report(self.channel, error, false);
        self._reconcile();
      });
    }

    _resolveWatchers() {
      var waiters = this._watchWaiters;
      this._watchWaiters = [];
      for (var i = 0; i < waiters.length; i++) waiters[i].resolve(this.members());
    }

    /**
     * A fresh snapshot (first subscribe, or after a reconnect): replace the list; after a reconnect, tell
     * enter/leave/update listeners what changed while this client was away; then the whole list.
     */
    _applySnapshot(rawMembers, serial, buffered) {
      var previous = this._members;
      var wasSynced = this._hadSnapshot === true;
      var next = new Map();
      for (var i = 0; i < rawMembers.length; i++) {
        var member = toMember(rawMembers[i]);
        next.set(member.connectionId, member);
      }
      if (typeof serial === 'number') this.serial = serial;
      var events = buffered || [];
      for (var j = 0; j < events.length; j++) {
        var frame = events[j];
        if (typeof frame.serial === 'number') {
          if (typeof serial === 'number' && frame.serial <= serial) continue; // already in the snapshot
          if (this.serial === null || frame.serial > this.serial) this.serial = frame.serial;
        }
        applyPresenceEvent(next, frame);
      }
      this._members = next;
      this._hadSnapshot = true;
      this.syncComplete = true;
      if (wasSynced) {
        var self = this;
        previous.forEach(function (member, key) {
          if (!next.has(key)) self._events.emit('leave', member);
        });
        next.forEach(function (member, key) {
          var old = previous.get(key);
          if (!old) self._events.emit('enter', member);
          else if (JSON.stringify(old.data) !== JSON.stringify(member.data)) self._events.emit('update', member);
        });
      }
      this._emitList();
    }

    _onPresence(frame) {
      if (!this._watching || PRESENCE_EVENTS.indexOf(frame.event) < 0) return;
      if (this._buffer) {
        this._buffer.push(frame); // a re-sync is under way: replayed on top of its snapshot
        return;
      }
      if (typeof frame.serial === 'number') {
        if (this.serial !== null && frame.serial <= this.serial) return; // already in the snapshot
        this.serial = frame.serial;
      }
      var member = applyPresenceEvent(this._members, frame);
      this._events.emit(frame.event, member);
      this._emitList();
    }

    _emitList() {
      var listeners = this._listListeners.slice();
      for (var i = 0; i < listeners.length; i++) {
        try {
          listeners[i](this.members());
        } catch (error) {
          rethrowLater(error);
        }
      }
    }

    _onDisconnected() {
      this._watching = false;
      this._watchBusy = false;
      this._buffer = null;
      this._entered = false;
      this._memberBusy = false;
      this.syncComplete = false;
      this.serial = null;
    }

    _onEnded(error) {
      this._onDisconnected();
      var waiters = this._watchWaiters.concat(this._memberWaiters);
      this._watchWaiters = [];
      this._memberWaiters = [];
      this._doneVersion = this._version;
      for (var i = 0; i < waiters.length; i++) waiters[i].reject(error);
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Presence per user (an app shows people, not tabs): members are connections; a user (clientId) with two tabs is two members.
  // These group them by clientId. A user joins when their first connection enters and leaves when their
  // last one leaves; anything else (another tab entering or leaving, the representative's data changing)
  // is an update. The user's `data` is the data of their earliest-entered connection (the first tab
  // represents the user until it leaves). Built on the member list, so it survives reconnects and
  // re-syncs exactly as the member list does; `presence.unsubscribe()` with no argument stops it too.

  function groupUsers(members) {
    var users = new Map();
    var sorted = members.slice().sort(function (a, b) {
      return (a.timestamp || 0) - (b.timestamp || 0) || String(a.connectionId).localeCompare(String(b.connectionId));
    });
    for (var i = 0; i < sorted.length; i++) {
      var member = sorted[i];
      var user = users.get(member.clientId);
      if (!user) {
        user = { clientId: member.clientId, data: member.data, timestamp: member.timestamp, connections: [] };
        users.set(member.clientId, user);
      }
      user.connections.push(member);
    }
    return users;
  }

  function sameUser(a, b) {
    if (JSON.stringify(a.data) !== JSON.stringify(b.data) || a.connections.length !== b.connections.length) return false;
    for (var i = 0; i < a.connections.length; i++) {
      if (a.connections[i].connectionId !== b.connections[i].connectionId) return false;
    }
    return true;
  }

  var USER_EVENTS = ['joined', 'left', 'updated'];

  /** The present users (synced members grouped by clientId): [{clientId, data, timestamp, connections}]. */
  Presence.prototype.users = function () {
    return Array.from(groupUsers(this.members()).values());
  };

  /**
   * subscribeUsers(cb): cb(users) once synced and after every change; subscribeUsers('joined' | 'left' |
   * 'updated' | [...], cb): cb(user) for that change. Resolves with the users once synced.
   */
  Presence.prototype.subscribeUsers = function (event, listener) {
    var self = this;
    if (!this._userEvents) {
      this._userEvents = new EventEmitter();
      this._userListListeners = [];
      this._users = null; // the last grouping told to listeners; null until the first sync
      this._usersTick = function (members) {
        var next = groupUsers(members);
        var previous = self._users;
        self._users = next;
        if (previous) {
          previous.forEach(function (user, clientId) {
            if (!next.has(clientId)) self._userEvents.emit('left', user);
          });
          next.forEach(function (user, clientId) {
            var old = previous.get(clientId);
            if (!old) self._userEvents.emit('joined', user);
            else if (!sameUser(old, user)) self._userEvents.emit('updated', user);
          });
        }
        var list = Array.from(next.values());
        var listeners = self._userListListeners.slice();
        for (var i = 0; i < listeners.length; i++) {
          try {
            listeners[i](list);
          } catch (error) {
            rethrowLater(error);
          }
        }
      };
    }
    if (isFunction(event) && listener === undefined) {
      this._userListListeners.push(event);
    } else {
      checkEvents('presence.subscribeUsers', event, USER_EVENTS);
      this._userEvents.on(event, listener);
    }
    if (this._listListeners.indexOf(this._usersTick) < 0) {
      this._users = null;
      return this.subscribe(this._usersTick).then(function () { return self.users(); });
    }
    return Promise.resolve(this.users());
  };

  /** unsubscribeUsers(), unsubscribeUsers(cb), unsubscribeUsers(event), unsubscribeUsers(event, cb). */
  Presence.prototype.unsubscribeUsers = function (event, listener) {
    if (!this._userEvents) return;
    this._userListListeners = offListeners(this._userEvents, this._userListListeners, event, listener);
    if (this._userEvents.listenerCount() === 0 && this._userListListeners.length === 0) {
      this.unsubscribe(this._usersTick);
      this._users = null;
    }
  };


  // ---------------------------------------------------------------------------------------------------
  // Channels

  /**
   * One named channel. subscribe/unsubscribe deliver messages `{name, data, id, timestamp, clientId,
   * serial, channel}`; publish sends one. Channel events (channel.on): the states `attaching`,
   * `attached`, `detaching`, `detached`, `failed` (listeners get `{previous, current, reason}`),
   * `discontinuity` (`{channel, reason, lastSerial, serial}`: messages may have been missed, reload
   * state), `resumed` (`{channel, serial, reason}`: after a reconnect, or after the server's notice that
   * messages may have been missed, the channel resumed and the messages after `serial` were replayed,
   * once each, in order) and `error` (a PulseError). history() reads the retained messages.
   */
  class Channel extends EventEmitter {
    constructor(realtime, name) {
      super();
      this._realtime = realtime;
      this.name = name;
      this.state = 'initialized';
      this.errorReason = null;
      this.serial = null; // the last message serial seen on this channel (for gap detection / recovery)
      this.epoch = null; // the serial's epoch, from the subscribe reply
      this._rewind = 0; // channels.get(name, {rewind: N}): the newest N retained messages on the first attach
      // The server's reason while the channel re-attaches with `resume` after its notice that messages may have
      // been missed (null otherwise): the replay fills the gap, so the app hears `resumed`, not the notice.
      this._resyncReason = null;
      this._resyncing = false; // the unsubscribe of that re-attach is wanted or in flight
      this._messages = new EventEmitter();
      this._whispers = new EventEmitter(); // listenForWhisper listeners, by whisper name
      this._wantAttached = false;
      this._attached = false;
      this._busy = false;
      this._attachWaiters = [];
      this._detachWaiters = [];
      this.presence = new Presence(this);
    }

    get _connection() {
      return this._realtime.connection;
    }

    /**
     * subscribe(event, cb), subscribe([events], cb) or subscribe(cb) for every event. Resolves once the
     * server confirms the subscription (every message published after that reaches cb).
     */
    subscribe(event, listener) {
      return this._listen(this._messages, event, listener);
    }

    /** Add listener (or, given only a function, a listener of everything) to emitter, and attach. */
    _listen(emitter, event, listener) {
      if (isFunction(event) && listener === undefined) emitter.on(event);
      else emitter.on(event, listener);
      return this.attach();
    }

    /** unsubscribe(), unsubscribe(cb), unsubscribe(event), unsubscribe(event, cb); the last one detaches. */
    unsubscribe(event, listener) {
      this._messages.off(event, listener);
      this._detachIfUnused();
    }

    _detachIfUnused() {
      if (this._messages.listenerCount() === 0 && this._whispers.listenerCount() === 0 && this._wantAttached) {
        this.detach().catch(function () { /* reported as a channel error */ });
      }
    }

    /**
     * Publish `data` (any JSON) as event `name`. Resolves with `{id, serial}`; rejects with the server's error.
     * `options.id`: the message id (a retry with the same id is delivered once); `options.toOthers: true`:
     * every other subscriber gets it, this connection does not (the page shows its own message itself). It is
     * still a normal message: a serial, history; this channel's position moves past it, so a resume after a
     * reconnect does not bring it back.
     */
    publish(name, data, options) {
      if (name && typeof name === 'object' && data === undefined) {
        options = { id: name.id };
        data = name.data;
        name = name.name;
      }
      if (typeof name !== 'string' || !name) {
        return Promise.reject(new PulseError('bad_request', 'publish(name, data): name must be a non-empty string'));
      }
      var id = options && options.id != null ? String(options.id) : this._realtime._nextMessageId();
      var frame = { action: 'publish', channel: this.name, name: name, data: data === undefined ? null : data, id: id };
      return this._connection._oneshot(frame, Boolean(options && options.toOthers)).then(function (reply) {
        return { id: reply.id === undefined ? id : reply.id, serial: reply.serial === undefined ? null : reply.serial };
      });
    }

    /**
     * Whisper: send event `name` with `data` (any JSON) to the channel's other subscribers, e.g. "typing".
     * Not stored, no serial, never delivered back to this connection; needs the `whisper` capability (tokens
     * do not have it by default) and is limited to `limits.whisperRate` per second. Sent only while connected,
     * never queued (a stale "typing" is worse than none). Resolves `true` once the server relayed it, `false`
     * when it was dropped for now (not connected, `rate_limited`, `unavailable`, the connection dropped, no
     * reply in time): a lost whisper is not an error. Rejects for a refusal (`forbidden`, `message_too_large`,
     * `bad_request`).
     */
    whisper(name, data) {
      if (typeof name !== 'string' || !name) {
        return Promise.reject(new PulseError('bad_request', 'whisper(name, data): name must be a non-empty string'));
      }
      return this._connection._ephemeral({ action: 'whisper', channel: this.name, name: name,
        data: data === undefined ? null : data }).then(function () { return true; }, function (error) {
        if (DROPPED_WHISPER_CODES.indexOf(error.code) >= 0) return false;
        throw error;
      });
    }

    /**
     * listenForWhisper(name, cb), listenForWhisper([names], cb) or listenForWhisper(cb) for every whisper: cb
     * gets `{name, data, clientId, connectionId, channel}`. Attaches the channel (whispers travel with its
     * messages); resolves once attached.
     */
    listenForWhisper(name, listener) {
      return this._listen(this._whispers, name, listener);
    }

    /** stopListeningForWhisper(), (cb), (name) or (name, cb); detaches when nothing listens any more. */
    stopListeningForWhisper(name, listener) {
      this._whispers.off(name, listener);
      this._detachIfUnused();
    }

    /**
     * The newest retained messages of this channel, oldest first, shaped like subscribe's messages.
     * `options`: `limit` (default 100), `before` (a serial: page back with `before: messages[0].serial`).
     */
    history(options) {
      var frame = { action: 'history', channel: this.name };
      if (options && options.limit != null) frame.limit = options.limit;
      if (options && options.before != null) frame.before = options.before;
      var self = this;
      return this._connection._oneshot(frame).then(function (reply) {
        return (reply.messages || []).map(function (m) { return self._message(m); });
      });
    }

    /** Subscribe on the server without a listener (messages still update `serial`). */
    attach() {
      var gate = this.presence._usable();
      if (gate) return Promise.reject(gate);
      this._wantAttached = true;
      if (this._attached && this._connection.state === 'connected') return Promise.resolve();
      var d = deferred();
      this._attachWaiters.push(d);
      this._reconcile();
      return d.promise;
    }

    /** Unsubscribe on the server (listeners are kept, but get nothing until the next attach/subscribe). */
    detach() {
      this._wantAttached = false;
      this._resyncReason = null;
      this._resyncing = false;
      // Whoever waited for the attach no longer needs it.
      var waiters = this._attachWaiters;
      this._attachWaiters = [];
      for (var i = 0; i < waiters.length; i++) waiters[i].resolve();
      if (!this._attached) {
        if (this.state !== 'detached' && this.state !== 'initialized') this._setState('detached');
        return Promise.resolve();
      }
      var d = deferred();
      this._detachWaiters.push(d);
      this._reconcile();
      return d.promise;
    }

    _reconcile() {
      var connection = this._connection;
      if (connection.state !== 'connected' || this._busy) return;
      var self = this;
      if (this._wantAttached && this._attached && this._resyncing) {
        // Re-attach: the server replays nothing to a channel it considers subscribed, so unsubscribe first.
        this._busy = true;
        connection._stateRequest({ action: 'unsubscribe', channel: this.name }).then(function () {
          self._busy = false;
          self._resyncing = false;
          self._attached = false;
          self._reconcile();
        }, function (error) {
          self._busy = false;
          if (error === DROPPED || retryLater(self, self, error)) return;
          self._resyncFailed();
        });
      } else if (this._wantAttached && !this._attached) {
        this._busy = true;
        if (this.state !== 'attaching') this._setState('attaching');
        var subscribe = { action: 'subscribe', channel: this.name };
        // Resume from the last serial seen (the server replays what was missed), or rewind on the first attach.
        if (this.serial !== null && this.epoch !== null) subscribe.resume = { serial: this.serial, epoch: this.epoch };
        else if (this.serial === null && this._rewind > 0) subscribe.rewind = this._rewind;
        connection._stateRequest(subscribe).then(function (reply) {
          self._busy = false;
          self._attached = true;
          self._transientRetries = 0;
          self._onAttached(reply);
          self._reconcile();
        }, function (error) {
          self._busy = false;
          if (error === DROPPED || retryLater(self, self, error)) return;
          if (self._resyncReason !== null) self._resyncFailed();
          self._wantAttached = false;
          self.errorReason = error;
          var waiters = self._attachWaiters;
          self._attachWaiters = [];
          for (var i = 0; i < waiters.length; i++) waiters[i].reject(error);
          self._setState('failed', error);
          report(self, error, waiters.length > 0);
        });
      } else if (!this._wantAttached && this._attached) {
        this._busy = true;
        this._setState('detaching');
        connection._stateRequest({ action: 'unsubscribe', channel: this.name }).then(function () {
          self._busy = false;
          self._attached = false;
          self._setState('detached');
          self._settleDetach();
          self._reconcile();
        }, function (error) {
          self._busy = false;
          if (error === DROPPED || retryLater(self, self, error)) return;
          var waiters = self._detachWaiters;
          self._detachWaiters = [];
          for (var i = 0; i < waiters.length; i++) waiters[i].reject(error);
          report(self, error, waiters.length > 0);
        });
      } else if (this._wantAttached) {
        var attachWaiters = this._attachWaiters;
        this._attachWaiters = [];
        for (var j = 0; j < attachWaiters.length; j++) attachWaiters[j].resolve();
      } else {
        this._settleDetach();
      }
    }

    _settleDetach() {
      var waiters = this._detachWaiters;
      this._detachWaiters = [];
      for (var i = 0; i < waiters.length; i++) waiters[i].resolve();
    }

    _onAttached(reply) {
      var serial = typeof reply.serial === 'number' ? reply.serial : null;
      var epoch = reply.epoch === undefined ? null : reply.epoch;
      var lastSerial = this.serial;
      var resync = this._resyncReason;
      this._resyncReason = null;
      // Re-attached after a reconnect: messages published meanwhile were not delivered to this client,
      // unless the server resumed the channel (they follow the reply, in order, once).
      var missed = reply.resumed === false || (resync !== null && reply.resumed !== true) ||
        (reply.resumed !== true && lastSerial !== null && serial !== null &&
        (serial > lastSerial || (epoch !== null && this.epoch !== null && epoch !== this.epoch)));
      this.serial = serial;
      this.epoch = epoch;
      this.errorReason = null;
      this._setState('attached');
      if (missed) this._onDiscontinuity(resync || 'reconnected', lastSerial);
      else if (reply.resumed === true) this.emit('resumed', { channel: this.name, serial: serial, reason: resync || 'reconnected' });
    }

    /**
     * The server's `discontinuity` notice. Messages may have been missed, but while the channel's counter
     * lives on (any reason but `history_lost` and `resume_failed`) its history may hold them: re-attach with
     * `resume` from the last serial seen, and tell the app only if that replay is refused.
     */
    _onNotice(reason) {
      if (reason === 'history_lost') {
        this.epoch = null; // serials start again in a new epoch
        if (this._resyncReason !== null) {
          this._resyncReason = reason; // the re-attach subscribes afresh and tells this
          return;
        }
      } else if (reason !== 'resume_failed' && this._attached && this._wantAttached && this.serial !== null &&
                 this.epoch !== null) {
        if (this._resyncReason === null) {
          this._resyncReason = reason;
          this._resyncing = true;
          this._reconcile();
        }
        return;
      }
      this._onDiscontinuity(reason, null);
    }

    _resyncFailed() {
      var reason = this._resyncReason;
      this._resyncReason = null;
      this._resyncing = false;
      this._onDiscontinuity(reason, null);
    }

    /** While re-attaching after a notice: a message that is not the next one is replayed by the resume. */
    _skip(frame) {
      return this._resyncReason !== null && typeof frame.serial === 'number' && this.serial !== null &&
        frame.serial !== this.serial + 1;
    }

    _onDiscontinuity(reason, lastSerial) {
      this.emit('discontinuity', {
        channel: this.name, reason: reason, lastSerial: lastSerial === null ? this.serial : lastSerial, serial: this.serial
      });
    }

    _onMessage(frame) {
      if (this._skip(frame)) return;
      if (typeof frame.serial === 'number') this.serial = frame.serial;
      // Published for the others only, excluding this page's connection (under an id it held before, when a
      // reconnect could not continue it): the page did not want it; keep its place only.
      if (frame.exclude && this._connection._ownIds.indexOf(frame.exclude) >= 0) return;
      this._messages.emit(typeof frame.name === 'string' ? frame.name : '', this._message(frame));
    }

    _onExcluded(frame) {
      if (this._skip(frame)) return;
      if (typeof frame.serial === 'number') this.serial = frame.serial;
    }

    _onWhisper(frame) {
      if (frame.connectionId && frame.connectionId === this._connection.id) return; // the server never echoes
      this._whispers.emit(typeof frame.name === 'string' ? frame.name : '', {
        name: frame.name,
        data: frame.data === undefined ? null : frame.data,
        clientId: frame.clientId === undefined ? null : frame.clientId,
        connectionId: frame.connectionId === undefined ? null : frame.connectionId,
        channel: this.name
      });
    }

    _message(frame) {
      return {
        name: frame.name,
        data: frame.data === undefined ? null : frame.data,
        id: frame.id === undefined ? null : frame.id,
        timestamp: frame.timestamp === undefined ? null : frame.timestamp,
        clientId: frame.clientId === undefined ? null : frame.clientId,
        serial: frame.serial === undefined ? null : frame.serial,
        channel: this.name
      };
    }

    _onConnected() {
      this._reconcile();
      this.presence._reconcile();
    }

    _onDisconnected() {
      this._attached = false;
      this._busy = false;
      this._resyncing = false; // the reconnect's attach resumes anyway
      if (this._wantAttached && this.state !== 'attaching') this._setState('attaching');
      this.presence._onDisconnected();
    }

    _onEnded(error) {
      this._onDisconnected();
      var waiters = this._attachWaiters.concat(this._detachWaiters);
      this._attachWaiters = [];
      this._detachWaiters = [];
      for (var i = 0; i < waiters.length; i++) waiters[i].reject(error);
      if (this.state !== 'initialized') this._setState(this._connection.state === 'failed' ? 'failed' : 'detached', error);
      this.presence._onEnded(error);
    }

    _setState(state, reason) {
      var previous = this.state;
      this.state = state;
      this.emit(state, { previous: previous, current: state, reason: reason });
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // State listeners get state changes: `connection.on(cb)` / `channel.on(cb)` are documented as
  // "every state change", so `cb` always gets a `{previous, current, reason, ...}` change. The `error` event
  // (a PulseError) goes to `on('error', cb)` listeners only.

  function emitStateOnly(event) {
    if (event !== 'error') return EventEmitter.prototype.emit.apply(this, arguments);
    var args = Array.prototype.slice.call(arguments, 1);
    var listeners = (this._eventListeners.error || []).slice();
    for (var i = 0; i < listeners.length; i++) {
      try {
        listeners[i].apply(this, args);
      } catch (error) {
        rethrowLater(error);
      }
    }
  }

  Connection.prototype.emit = emitStateOnly;
  Channel.prototype.emit = emitStateOnly;

  class Channels {
    constructor(realtime) {
      this._realtime = realtime;
      this._all = new Map();
      this._streams = new Map(); // channel name -> {subscribe, presence}: signed stream names (live templates)
    }

    /**
     * The channel called `name`: the same object every time. Throws on an invalid name. `options.rewind`:
     * deliver the newest N retained messages when it first attaches.
     */
    get(name, options) {
      var existing = this._all.get(name);
      if (existing) {
        if (options && options.rewind > 0 && existing.serial === null) existing._rewind = options.rewind;
        return existing;
      }
      if (typeof name !== 'string' || !CHANNEL_RE.test(name)) {
        throw new PulseError('invalid_channel', 'channel names are 1-255 characters from A-Z a-z 0-9 _ - . : @ = ~ + (got ' +
          JSON.stringify(name) + ')');
      }
      var channel = new Channel(this._realtime, name);
      if (options && options.rewind > 0) channel._rewind = options.rewind;
      this._all.set(name, channel);
      return channel;
    }

    _has(name) {
      return this._all.has(name);
    }

    /** Every channel obtained with get(). */
    all() {
      return Array.from(this._all.values());
    }

    _onConnected() {
      this._all.forEach(function (channel) { channel._onConnected(); });
    }

    _onDisconnected() {
      this._all.forEach(function (channel) { channel._onDisconnected(); });
    }

    _onEnded(error) {
      this._all.forEach(function (channel) { channel._onEnded(error); });
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // SSE transport (docs/transports.md)
  //
  // Where WebSockets are blocked (some proxies, antivirus products, carriers), the same protocol runs over
  // Server-Sent Events (server to client) and POSTs (client to server). SSESocket has the shape of a
  // WebSocket (readyState, send, close, onopen/onmessage/onclose), so the Connection above drives it
  // unchanged: its first frame (`auth`) becomes a POST for a single-use ticket and the EventSource opens
  // with it; later frames are POSTed, in order, in batches; the server's close frame ends it with the
  // WebSocket close code. Transports chooses between the two, falls back to SSE when a WebSocket cannot
  // reach `connected` within `websocketTimeout`, remembers that for the session (sessionStorage), and
  // tries WebSocket again after `websocketRetry`.

  var SSE_ERROR_CLOSE = {
    token_invalid: 4001, token_not_yet_valid: 4001, token_expired: 4002, app_disabled: 4003, app_unknown: 4004,
    too_many_connections: 4009, unavailable: 4503
  };
  var TRANSPORTS = ['websocket', 'sse'];
  var TRANSPORT_KEY = 'pulse.transport';

  /** The http(s) base URL of the SSE endpoint for a ws(s):// endpoint: /pulse/ws/ -> /pulse/sse/. */
  function sseEndpoint(endpoint, option) {
    var base = typeof location !== 'undefined' ? location.href : undefined;
    var url = new URL(option || endpoint, base);
    if (!option) url.pathname = url.pathname.replace(/ws\/?$/, 'sse/');
    if (url.protocol === 'ws:') url.protocol = 'http:';
    if (url.protocol === 'wss:') url.protocol = 'https:';
    url.search = '';
    url.hash = '';
    if (!/\/$/.test(url.pathname)) url.pathname += '/';
    return url.href;
  }

  class SSESocket {
    constructor(base, realtime) {
      this.url = base;
      this.readyState = 0;
      this.transport = 'sse';
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      this._realtime = realtime;
      this._EventSource = realtime._EventSource;
      this._fetch = realtime.options.fetch || (typeof fetch !== 'undefined' ? fetch.bind(globalThis) : null);
      this._stream = null;
      this._source = null;
      this._outbox = [];
      this._posting = false;
      var self = this;
      // A WebSocket opens asynchronously: so does this (nothing to connect to until `auth` is sent).
      setTimeout(function () {
        if (self.readyState !== 0) return;
        self.readyState = 1;
        if (self.onopen) self.onopen({});
      }, 0);
    }

    send(text) {
      if (this.readyState !== 1) return;
      var frame = null;
      try { frame = JSON.parse(text); } catch (e) { /* sent as it is; the server answers invalid_json */ }
      if (frame && frame.action === 'pong') return; // the server does not expect pongs over SSE
      if (!this._started && frame && frame.action === 'auth') {
        this._started = true;
        this._open(frame);
        return;
      }
      this._outbox.push(text);
      this._flush();
    }

    close(code, reason) {
      if (this.readyState >= 2) return;
      var stream = this._stream;
      this.readyState = 2;
      if (stream) {
        // keepalive: delivered even while the page unloads, so presence leaves at once (a plain drop waits
        // out the server's grace period).
        this._post('send/', { stream: stream, frames: this._outbox.splice(0), close: code || 1000 }, true)
          .catch(function () { /* the server notices the dropped stream on its own */ });
      }
      this._closed(code || 1000, reason || '');
    }

    async _open(auth) {
      var response;
      var body = null;
      try {
        response = await this._post('ticket/', { token: auth.token, recover: auth.recover });
        try { body = await response.json(); } catch (e) { /* reported below */ }
      } catch (error) {
        this._closed(1006, 'the SSE ticket request failed: ' + (error && error.message || error));
        return;
      }
      if (this.readyState !== 1) return;
      if (response.status === 404 || response.status === 405) {
        // No SSE endpoint on this server (asgi.py without sse_urlpatterns): WebSocket only from now on.
        this._realtime._transports.unavailable('sse');
        this._closed(1006, 'the server has no SSE endpoint at ' + this.url);
        return;
      }
      if (!response.ok || !body || typeof body.ticket !== 'string') {
        var detail = body && body.error && typeof body.error === 'object' ? body.error : {};
        var code = detail.code || 'internal_error';
        this._deliver(JSON.stringify({ action: 'error', code: code, message: detail.message || 'HTTP ' + response.status }));
        this._closed(SSE_ERROR_CLOSE[code] || 1006, code);
        return;
      }
      this._stream = body.stream;
      var self = this;
      var source;
      try {
        source = new this._EventSource(this.url + '?ticket=' + encodeURIComponent(body.ticket));
      } catch (error) {
        this._closed(1006, 'cannot open an EventSource: ' + error.message);
        return;
      }
      this._source = source;
      source.onmessage = function (event) {
        if (self._source !== source) return;
        var text = event.data;
        if (text.lastIndexOf('{"action":"close"', 0) === 0) {
          var frame = JSON.parse(text);
          self._closed(frame.code, frame.reason || '');
          return;
        }
        self._deliver(text);
        if (self._outbox.length) self._flush();
      };
      // The response ended or the network broke: the EventSource would reconnect with the used ticket; the
      // Connection reconnects instead (new ticket, `recover`, resumed subscriptions).
      source.onerror = function () {
        if (self._source === source) self._closed(1006, 'the event stream broke');
      };
    }

    _deliver(text) {
      if (this.readyState === 1 && this.onmessage) this.onmessage({ data: text });
    }

    async _flush() {
      if (this._posting || !this._stream || !this._outbox.length || this.readyState !== 1) return;
      this._posting = true;
      var frames = this._outbox.splice(0, 100);
      try {
        var response = await this._post('send/', { stream: this._stream, frames: frames });
        if (!response.ok) {
          this._closed(1006, 'the server refused frames for this stream (HTTP ' + response.status + ')');
          return;
        }
      } catch (error) {
        this._closed(1006, 'sending frames failed: ' + (error && error.message || error));
        return;
      } finally {
        this._posting = false;
      }
      this._flush();
    }

    _post(path, body, keepalive) {
      // text/plain: a "simple" request, so a cross-origin endpoint needs no preflight.
      return this._fetch(this.url + path, {
        method: 'POST', headers: { 'Content-Type': 'text/plain;charset=UTF-8' }, credentials: 'same-origin',
        body: JSON.stringify(body), keepalive: Boolean(keepalive), cache: 'no-store'
      });
    }

    _closed(code, reason) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this._outbox = [];
      if (this._source) {
        this._source.onmessage = this._source.onerror = null;
        this._source.close();
        this._source = null;
      }
      var self = this;
      setTimeout(function () {
        if (self.onclose) self.onclose({ code: code, reason: reason, wasClean: code === 1000 });
      }, 0);
    }
  }

  /** The transport choice of one Realtime: which one to open, when to fall back, when to try WebSocket again. */
  class Transports {
    constructor(realtime) {
      var o = realtime.options;
      var list = o.transports == null ? TRANSPORTS.slice() : o.transports;
      if (!Array.isArray(list) || !list.length || list.some(function (t) { return TRANSPORTS.indexOf(t) < 0; })) {
        throw new TypeError("Pulse.Realtime: transports must be a non-empty array of 'websocket' and 'sse'");
      }
      if (list.indexOf('websocket') >= 0 && !realtime._WebSocket && list.indexOf('sse') < 0) {
        throw new TypeError('Pulse.Realtime: no WebSocket here; pass options.WebSocket');
      }
      if (list.indexOf('sse') >= 0 && !realtime._EventSource && list.indexOf('websocket') < 0) {
        throw new TypeError('Pulse.Realtime: no EventSource here; pass options.EventSource');
      }
      this.list = list;
      this._realtime = realtime;
      this.current = null; // the transport of the socket last opened
      this._sse = sseEndpoint(realtime.endpoint, o.sseEndpoint);
    }

    /** The transport to open now: the first of the list, unless WebSocket failed recently in this session. */
    preferred() {
      var list = this.list;
      if (list[0] === 'websocket' && list.indexOf('sse') > 0 && this._realtime._EventSource) {
        var remembered = this._remembered();
        if (!this._realtime._WebSocket || (remembered && Date.now() - remembered < this._realtime.options.websocketRetry)) {
          return 'sse';
        }
      }
      return list[0];
    }

    /** A new socket for the connection (a WebSocket, or an SSESocket); throws when neither can be made. */
    open(connection) {
      var transport = this.preferred();
      if (transport === 'websocket') {
        try {
          var ws = new this._realtime._WebSocket(this._realtime.endpoint);
          this.current = 'websocket';
          this._armFallback(connection, ws);
          return ws;
        } catch (error) {
          if (this.list.indexOf('sse') < 0 || !this._realtime._EventSource) throw error;
          this._remember();
        }
      }
      this.current = 'sse';
      return new SSESocket(this._sse, this._realtime);
    }

    /** Give the WebSocket `websocketTimeout` ms to reach `connected`; then drop it and fall back to SSE. */
    _armFallback(connection, ws) {
      if (this.list.indexOf('sse') < 0 || !this._realtime._EventSource) return;
      var self = this;
      clearTimeout(this._fallbackTimer);
      this._fallbackTimer = setTimeout(function () {
        if (connection._ws !== ws || ws._pulseConnected) return;
        self._remember();
        connection._dropSocket(CLIENT_CLOSE.connectTimeout, new PulseError('timeout',
          'no `connected` over WebSocket within ' + self._realtime.options.websocketTimeout + ' ms; trying SSE'));
      }, this._realtime.options.websocketTimeout);
    }

    /** `connected` arrived on `ws`. */
    connected(connection, ws) {
      ws._pulseConnected = true;
      clearTimeout(this._fallbackTimer);
      if (ws instanceof SSESocket) this._scheduleUpgrade(connection, ws);
      else this._forget();
    }

    /**
     * `ws` closed with `code`: true when the next attempt should start at once (a WebSocket that never
     * reached `connected` without the server refusing it: the next attempt is SSE).
     */
    closed(ws, code) {
      clearTimeout(this._upgradeTimer);
      if (ws._pulseSwitch) return true;
      if (ws instanceof SSESocket && !ws._pulseConnected && this.list.indexOf('websocket') === 0) {
        // SSE failed too: the server is down rather than WebSockets blocked. Start with WebSocket again.
        this._forget();
        return false;
      }
      if (ws instanceof SSESocket || ws._pulseConnected || this.list.indexOf('sse') < 0) return false;
      if (code >= 4000 && code !== CLIENT_CLOSE.connectTimeout && code !== CLIENT_CLOSE.heartbeat) return false;
      var first = !this._remembered();
      this._remember();
      return first;
    }

    /** The server lacks `transport`: drop it from the list (unless it is the only one). */
    unavailable(transport) {
      if (this.list.length > 1) this.list = this.list.filter(function (t) { return t !== transport; });
      if (transport === 'sse') this._forget();
    }

    /** While on SSE, try a WebSocket again after `websocketRetry`; if one opens, move the connection to it. */
    _scheduleUpgrade(connection, sse) {
      if (this.list.indexOf('websocket') < 0 || !this._realtime._WebSocket) return;
      var self = this;
      var remembered = this._remembered() || Date.now();
      var delay = Math.max(1000, remembered + this._realtime.options.websocketRetry - Date.now());
      clearTimeout(this._upgradeTimer);
      this._upgradeTimer = setTimeout(function () {
        if (connection._ws !== sse || connection.state !== 'connected') return;
        var probe;
        try {
          probe = new self._realtime._WebSocket(self._realtime.endpoint);
        } catch (e) {
          self._remember();
          self._scheduleUpgrade(connection, sse);
          return;
        }
        var settled = false;
        var give = setTimeout(function () { finish(false); }, self._realtime.options.websocketTimeout);
        var finish = function (ok) {
          if (settled) return;
          settled = true;
          clearTimeout(give);
          probe.onopen = probe.onclose = probe.onerror = null;
          try { probe.close(1000); } catch (e) { /* closing anyway */ }
          if (!ok) {
            self._remember();
            self._scheduleUpgrade(connection, sse);
          } else if (connection._ws === sse && connection.state === 'connected') {
            // WebSockets work again: continue the connection over one (4011: the server keeps presence for
            // the `recover` that follows at once).
            self._forget();
            sse._pulseSwitch = true;
            connection._dropSocket(CLIENT_CLOSE.heartbeat, new PulseError('transport_upgrade',
              'WebSockets work again; moving the connection from SSE to a WebSocket'));
          }
        };
        probe.onopen = function () { finish(true); };
        probe.onclose = probe.onerror = function () { finish(false); };
      }, delay);
    }

    _storage() {
      try {
        return typeof sessionStorage !== 'undefined' ? sessionStorage : null;
      } catch (e) {
        return null; // storage disabled
      }
    }

    _remembered() {
      var storage = this._storage();
      var value = storage ? Number(storage.getItem(TRANSPORT_KEY + ':' + this._realtime.endpoint)) : this._memory;
      return value > 0 ? value : 0;
    }

    _remember() {
      var now = Date.now();
      this._memory = now;
      var storage = this._storage();
      try { if (storage) storage.setItem(TRANSPORT_KEY + ':' + this._realtime.endpoint, String(now)); } catch (e) { /* full */ }
    }

    _forget() {
      this._memory = 0;
      var storage = this._storage();
      try { if (storage) storage.removeItem(TRANSPORT_KEY + ':' + this._realtime.endpoint); } catch (e) { /* ok */ }
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Realtime

  function defaultEndpoint() {
    if (typeof location === 'undefined' || !location.host) return null;
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/pulse/ws/';
  }

  function absoluteEndpoint(endpoint) {
    if (/^wss?:\/\//i.test(endpoint) || typeof location === 'undefined') return endpoint;
    var url = new URL(endpoint, location.href); // a path such as "/pulse/ws/" on this page's host
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.href;
  }

  /**
   * new Pulse.Realtime({kbId, token, endpoint, clientId, authUrl?, authCallback?, ...}).
   *
   * token: from `pulse.get_token()` (the string, or the whole dict). authUrl / authCallback: how to get a
   * new one when it expires or is refused (see docs/js-sdk.md). endpoint: the ws(s):// URL (default: this
   * page's host, path /pulse/ws/).
   */
  class Realtime {
    constructor(options) {
      if (!options || typeof options !== 'object') throw new TypeError('new Pulse.Realtime(options): options must be an object');
      var token = options.token && typeof options.token === 'object' ? options.token.token : options.token;
      if (token !== undefined && token !== null && typeof token !== 'string') throw new TypeError('Pulse.Realtime: token must be a string');
      if (options.authCallback !== undefined && !isFunction(options.authCallback)) {
        throw new TypeError('Pulse.Realtime: authCallback must be a function');
      }
      if (!token && !options.authUrl && !options.authCallback) {
        throw new TypeError('Pulse.Realtime: give a token, an authUrl or an authCallback');
      }
      this.options = Object.assign({}, DEFAULTS, options);
      var endpoint = options.endpoint || (options.token && options.token.endpoint) || defaultEndpoint();
      if (!endpoint) throw new TypeError('Pulse.Realtime: endpoint is required outside a web page');
      this.endpoint = absoluteEndpoint(endpoint);
      this._initialToken = token || null;
      this._WebSocket = options.WebSocket || (typeof WebSocket !== 'undefined' ? WebSocket : null);
      this._EventSource = options.EventSource || (typeof EventSource !== 'undefined' ? EventSource : null);
      if (!this._WebSocket && !this._EventSource) throw new TypeError('Pulse.Realtime: no WebSocket here; pass options.WebSocket');
      this._transports = new Transports(this); // which transport to open: WebSocket, or SSE as a fallback
      this._idPrefix = randomId(12);
      this._idCounter = 0;
      this.connection = new Connection(this);
      this.channels = new Channels(this);
      this._listenToPage();
      if (this.options.autoConnect) {
        var connection = this.connection;
        // On the next microtask, so listeners added right after the constructor see `connecting`.
        Promise.resolve().then(function () {
          if (connection.state === 'initialized') connection.connect();
        });
      }
    }

    /** The client id (from the token once connected). */
    get clientId() {
      return this.connection.clientId;
    }

    connect() {
      this.connection.connect();
    }

    /** Close the connection: presence members leave at once, nothing reconnects until connect(). */
    close() {
      this.connection.close();
    }

    _nextMessageId() {
      return this._idPrefix + '-' + (++this._idCounter);
    }

    _listenToPage() {
      if (typeof window === 'undefined' || !window.addEventListener) return;
      var connection = this.connection;
      var self = this;
      // Back online: skip the rest of the backoff.
      window.addEventListener('online', function () { connection._retryNow(); });
      if (this.options.closeOnUnload) {
        // A clean close on leaving the page, so other clients see this one leave at once.
        window.addEventListener('pagehide', function () {
          if (connection.state !== 'closed' && connection.state !== 'failed') {
            self._closedByUnload = true;
            connection.close();
          }
        });
        window.addEventListener('pageshow', function (event) {
          if (event.persisted && self._closedByUnload) {
            self._closedByUnload = false;
            connection.connect();
          }
        });
      }
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Live templates (docs/live-templates.md)
  //
  // {% pulse_script %} renders the configuration (a JSON <script id="pulse-live-config">), {% pulse_stream_from %}
  // a <pulse-stream-source> element and {% pulse_presence %} a <pulse-presence> element. The elements share one
  // Realtime, subscribe with the signed stream name the server put in the page (`stream` on each request
  // about that channel), and apply fragments (messages named `pulse:html`, data {action, target, html}) to the
  // element whose id is `target`: with Turbo loaded as <turbo-stream> elements (Turbo's own actions), with
  // htmx loaded through htmx.swap (htmx processes the new content and fires its swap events), otherwise with
  // plain DOM calls. Missed fragments are replayed by the channel's resume; when they cannot be (the
  // channel's `discontinuity`), the element fetches its region again, or the page reloads.

  var FRAGMENT_EVENT = 'pulse:html';
  var LIVE_CONFIG_ID = 'pulse-live-config';
  var HTMX_SWAP = {
    append: 'beforeend', prepend: 'afterbegin', replace: 'outerHTML', update: 'innerHTML',
    before: 'beforebegin', after: 'afterend'
  };
  var live = {
    realtime: null, // the Realtime of the live elements, created by the first one that connects
    refreshDelay: 300, // ms: refresh requests within this window are one refresh
    reloadGuard: 10000, // ms: an automatic reload does not repeat within this time (no reload loop)
    sources: new Map() // channel name -> {channel, elements: Set, listener, onGap, buffer}
  };

  Channels.prototype._setStream = function (name, kind, signed) {
    var entry = this._streams.get(name) || {};
    entry[kind] = signed;
    this._streams.set(name, entry);
  };

  Channels.prototype._addStream = function (frame) {
    if (!frame.channel || frame.stream !== undefined || frame.action === 'unsubscribe') return;
    var entry = this._streams.get(frame.channel);
    if (!entry) return;
    var presence = frame.action.indexOf('presence.') === 0;
    var stream = presence ? entry.presence || entry.subscribe : entry.subscribe || entry.presence;
    if (stream) frame.stream = stream;
  };

  function liveConfig() {
    if (typeof document === 'undefined') return null;
    var script = document.getElementById(LIVE_CONFIG_ID);
    if (!script) return null;
    try {
      return JSON.parse(script.textContent);
    } catch (e) {
      console.error('[pulse] #' + LIVE_CONFIG_ID + ' is not JSON: use {% pulse_script %}');
      return null;
    }
  }

  /** The shared Realtime of the live elements (null when the page has no usable configuration). */
  function liveRealtime() {
    if (live.realtime) return live.realtime;
    var config = liveConfig();
    if (!config || config.disabled) return null;
    live.realtime = new Realtime(config);
    return live.realtime;
  }

  function turboLoaded() {
    return typeof window !== 'undefined' && window.Turbo && typeof customElements !== 'undefined' &&
      customElements.get('turbo-stream');
  }

  function htmxLoaded() {
    return typeof window !== 'undefined' && window.htmx && typeof window.htmx.swap === 'function';
  }

  function parseHTML(html) {
    var template = document.createElement('template');
    template.innerHTML = html;
    return template.content;
  }

  /** Before an append/prepend, remove the target's children that the new content replaces (same id), as
   *  Turbo does: a fragment applied twice (replayed after a refresh) shows once. */
  function removeDuplicates(target, content) {
    var children = content.children;
    for (var i = 0; i < children.length; i++) {
      var id = children[i].id;
      if (!id) continue;
      var old = document.getElementById(id);
      if (old && old.parentNode === target) old.remove();
    }
  }

  function emitLive(node, name, detail) {
    var event = new CustomEvent(name, { bubbles: true, cancelable: true, detail: detail });
    return (node && node.isConnected ? node : document).dispatchEvent(event);
  }

  /**
   * Apply one fragment. Events: `pulse:before-fragment` (cancelable; detail {action, target, html}) on the
   * target (or the document) before, `pulse:fragment` after. Unknown actions and missing targets are ignored,
   * as Turbo does.
   */
  function applyFragment(data, source) {
    if (!data || typeof data !== 'object' || typeof data.action !== 'string') return;
    var action = data.action;
    if (action === 'refresh') {
      requestRefresh(source, false);
      return;
    }
    var target = typeof data.target === 'string' ? document.getElementById(data.target) : null;
    if (!emitLive(target, 'pulse:before-fragment', data)) return;
    if (turboLoaded()) {
      var stream = document.createElement('turbo-stream');
      stream.setAttribute('action', action);
      stream.setAttribute('target', data.target);
      if (data.method === 'morph') stream.setAttribute('method', 'morph');
      var template = document.createElement('template');
      if (typeof data.html === 'string') template.innerHTML = data.html;
      stream.appendChild(template);
      document.body.appendChild(stream); // Turbo renders it and removes it
      emitLive(target, 'pulse:fragment', data);
      return;
    }
    if (!target) return;
    if (action === 'remove') {
      target.remove();
      emitLive(document, 'pulse:fragment', data);
      return;
    }
    if (!HTMX_SWAP[action] || typeof data.html !== 'string') return;
    var content = parseHTML(data.html);
    if (action === 'append' || action === 'prepend') removeDuplicates(target, content);
    if (htmxLoaded()) {
      // htmx processes the new content (hx-* attributes work on it) and fires htmx:afterSwap/afterSettle.
      var holder = document.createElement('div');
      holder.appendChild(content);
      window.htmx.swap(target, holder.innerHTML, { swapStyle: HTMX_SWAP[action], swapDelay: 0, settleDelay: 0 });
    } else if (action === 'append') target.append(content);
    else if (action === 'prepend') target.prepend(content);
    else if (action === 'replace') target.replaceWith(content);
    else if (action === 'update') target.replaceChildren(content);
    else if (action === 'before') target.before(content);
    else if (action === 'after') target.after(content);
    emitLive(action === 'replace' ? document : target, 'pulse:fragment', data);
  }

  function reloadPage() {
    var key = 'pulse:reloaded';
    try {
      var last = Number(sessionStorage.getItem(key) || 0);
      if (Date.now() - last < live.reloadGuard) return; // reloaded a moment ago: keep this page
      sessionStorage.setItem(key, String(Date.now()));
    } catch (e) { /* no sessionStorage: reload anyway */ }
    if (turboLoaded() && window.Turbo.visit) window.Turbo.visit(location.href, { action: 'replace' });
    else location.reload();
  }

  /**
   * Bring the content of `source` up to date after fragments were missed (or on a `refresh` fragment):
   * fetch this page again and swap in its element whose id is the source's `region`; without a region (or
   * with `wholePage`), reload the page. Debounced; fragments arriving meanwhile are applied after the swap.
   */
  function requestRefresh(source, wholePage) {
    var state = source ? live.sources.get(source.channel.name) : null;
    var regions = [];
    if (state && !wholePage) {
      state.elements.forEach(function (element) {
        var region = element.getAttribute('region');
        if (region && regions.indexOf(region) < 0) regions.push(region);
      });
    }
    if (!state || !regions.length) {
      clearTimeout(live.reloadTimer);
      live.reloadTimer = setTimeout(reloadPage, live.refreshDelay);
      return;
    }
    if (!state.buffer) state.buffer = [];
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(function () {
      fetch(location.href, { credentials: 'same-origin', headers: { 'X-Pulse-Refresh': regions.join(' ') } })
        .then(function (response) {
          if (!response.ok) throw new Error('HTTP ' + response.status);
          return response.text();
        })
        .then(function (html) {
          var page = new DOMParser().parseFromString(html, 'text/html');
          for (var i = 0; i < regions.length; i++) {
            var fresh = page.getElementById(regions[i]);
            var current = document.getElementById(regions[i]);
            if (!fresh || !current) throw new Error('region #' + regions[i] + ' not found');
            if (htmxLoaded()) window.htmx.swap(current, fresh.outerHTML, { swapStyle: 'outerHTML', swapDelay: 0, settleDelay: 0 });
            else current.replaceWith(document.importNode(fresh, true));
          }
          var buffered = state.buffer || [];
          state.buffer = null;
          for (var j = 0; j < buffered.length; j++) applyFragment(buffered[j], state);
          emitLive(document, 'pulse:refreshed', { channel: state.channel.name, regions: regions });
        })
        .catch(function (error) {
          state.buffer = null;
          console.error('[pulse] refreshing ' + regions.join(', ') + ' failed (' + error.message + '): reloading');
          reloadPage();
        });
    }, live.refreshDelay);
  }

  /** Attach `element` to the page's subscription of its channel (one listener per channel, however many elements). */
  function joinSource(element, realtime, kind) {
    var name = element.getAttribute('channel');
    var signed = element.getAttribute('signed-stream-name');
    if (!name || !signed) return null;
    var channel;
    try {
      channel = realtime.channels.get(name);
    } catch (error) {
      console.error('[pulse] ' + error.message);
      return null;
    }
    realtime.channels._setStream(name, kind, signed);
    var state = live.sources.get(name);
    if (!state) {
      state = { channel: channel, elements: new Set(), buffer: null, refreshTimer: null };
      state.listener = function (message) {
        if (state.buffer) state.buffer.push(message.data);
        else applyFragment(message.data, state);
      };
      state.onGap = function (gap) {
        emitLive(document, 'pulse:discontinuity', gap);
        requestRefresh(state, false);
      };
      live.sources.set(name, state);
    }
    return state;
  }

  function startStream(element, state) {
    var channel = state.channel;
    var first = state.elements.size === 0;
    state.elements.add(element);
    if (!first) return;
    // A fresh subscription resumes from where the page was rendered: what was published in between follows.
    var serial = element.getAttribute('serial');
    var epoch = element.getAttribute('epoch');
    if (!channel._attached && !channel._wantAttached) {
      channel.serial = serial !== null && /^\d+$/.test(serial) ? Number(serial) : null;
      channel.epoch = channel.serial !== null && epoch ? epoch : null;
    }
    channel.on('discontinuity', state.onGap);
    channel.subscribe(FRAGMENT_EVENT, state.listener).catch(function () { /* reported as a channel error */ });
  }

  function stopStream(element, state) {
    if (!state.elements.delete(element) || state.elements.size) return;
    state.channel.off('discontinuity', state.onGap);
    state.channel.unsubscribe(FRAGMENT_EVENT, state.listener);
    live.sources.delete(state.channel.name);
  }

  function renderPresence(element, members) {
    var count = element.querySelectorAll('[data-pulse-count]');
    for (var i = 0; i < count.length; i++) count[i].textContent = String(members.length);
    var list = element.querySelector('[data-pulse-members]');
    var template = element.querySelector('template[data-pulse-member]');
    if (!list || !template) return;
    var items = [];
    for (var j = 0; j < members.length; j++) {
      var item = template.content.cloneNode(true);
      var fields = item.querySelectorAll('[data-pulse-field]');
      var data = members[j].data && typeof members[j].data === 'object' ? members[j].data : {};
      for (var k = 0; k < fields.length; k++) {
        var value = data[fields[k].getAttribute('data-pulse-field')];
        fields[k].textContent = value === undefined || value === null ? '' : String(value); // text, never HTML
      }
      items.push(item);
    }
    list.replaceChildren.apply(list, items);
  }

  function defineLiveElements() {
    if (typeof window === 'undefined' || typeof customElements === 'undefined' || typeof HTMLElement === 'undefined') return;
    if (!customElements.get('pulse-stream-source')) {
      customElements.define('pulse-stream-source', class extends HTMLElement {
        connectedCallback() {
          var realtime = liveRealtime();
          this._state = realtime && joinSource(this, realtime, 'subscribe');
          if (this._state) startStream(this, this._state);
        }

        disconnectedCallback() {
          if (this._state) stopStream(this, this._state);
          this._state = null;
        }
      });
    }
    if (!customElements.get('pulse-presence')) {
      customElements.define('pulse-presence', class extends HTMLElement {
        connectedCallback() {
          var realtime = liveRealtime();
          var state = realtime && joinSource(this, realtime, 'presence');
          if (!state) return;
          var element = this;
          var presence = state.channel.presence;
          this._presence = presence;
          this._render = function (members) { renderPresence(element, members); };
          this._entered = !this.hasAttribute('watch-only');
          if (this._entered) presence.enter(null).catch(function () { /* reported as a channel error */ });
          presence.subscribe(this._render).catch(function () { /* reported as a channel error */ });
        }

        disconnectedCallback() {
          if (!this._presence) return;
          this._presence.unsubscribe(this._render);
          if (this._entered) this._presence.leave().catch(function () { /* the connection is gone */ });
          this._presence = null;
        }
      });
    }
  }

  defineLiveElements();

  var Live = {
    FRAGMENT_EVENT: FRAGMENT_EVENT,
    applyFragment: function (data) { applyFragment(data, null); },
    realtime: function () { return liveRealtime(); },
    options: live
  };


  return {
    Realtime: Realtime,
    Live: Live,
    PulseError: PulseError,
    EventEmitter: EventEmitter,
    retryDelay: retryDelay,
    DEFAULTS: DEFAULTS,
    STATES: STATES.slice(),
    VERSION: VERSION,
    PROTOCOL_VERSION: PROTOCOL_VERSION
  };
});
