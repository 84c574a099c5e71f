/*
 * django-pulse-realtime/react: React hooks over pulse.js (docs/js-frameworks.md).
 *
 *     <PulseProvider options={{ authUrl: '/api/pulse-token/' }}>  <App />  </PulseProvider>
 *     useChannel('posts', 'new_post', (message) => ...);
 *     const members = usePresence('room', { name: 'Alice' });
 *     const state = useConnectionState();
 *
 * Written by hand as CommonJS, like pulse.js itself (react.mjs re-exports it for `import`), so one copy of the
 * React context exists whichever way an app loads it. Nothing here runs during server rendering: hooks act in
 * effects, which React runs only in the browser.
 */
'use strict';

var React = require('react');
var shared = require('./shared.cjs');

var PulseContext = React.createContext(null);

// React's StrictMode (in development) mounts, unmounts and mounts again at once. The provider's connection is
// therefore closed a moment later, not at once: a remount within the same task cancels the close.
function later(fn) {
  var timer = setTimeout(fn, 0);
  return function cancel() { clearTimeout(timer); };
}

/**
 * <PulseProvider client={realtime}> shares a Realtime the app created; <PulseProvider options={...}> creates one
 * (connected while the provider is mounted, closed when it unmounts). One Realtime per app: one connection.
 */
function PulseProvider(props) {
  var given = props.client || null;
  var options = props.options;
  var owned = React.useState(function () {
    // Connected by the effect below, so a render that React throws away (or a server render) opens nothing.
    return given || !options ? null : shared.ownedRealtime(options);
  })[0];
  if (!given && !owned) throw new Error('PulseProvider needs a `client` (a Realtime) or `options`');
  var realtime = given || owned;
  var pendingClose = React.useRef(null);
  React.useEffect(function () {
    if (!owned) return undefined;
    if (pendingClose.current) {
      pendingClose.current();
      pendingClose.current = null;
    }
    // autoConnect: false in the provider's options leaves connecting to the app (useRealtime().connect()).
    var state = owned.connection.state;
    if (options.autoConnect !== false && (state === 'initialized' || state === 'closed')) owned.connect();
    return function () {
      pendingClose.current = later(function () {
        pendingClose.current = null;
        owned.close();
      });
    };
  }, [owned]);
  return React.createElement(PulseContext.Provider, { value: realtime }, props.children);
}

/** The provider's Realtime; throws outside a <PulseProvider>. */
function useRealtime() {
  var realtime = React.useContext(PulseContext);
  if (!realtime) throw new Error('useRealtime() and the pulse hooks need a <PulseProvider> above them');
  return realtime;
}

/**
 * useChannel(name, handler) or useChannel(name, event | [events], handler): the channel, subscribed while the
 * component is mounted. The newest `handler` is called (no resubscribe when it changes); `name` or `event`
 * changing moves the subscription. Returns the Channel (channel.publish(...)); null while `name` is null.
 */
function useChannel(name, event, handler) {
  var args = shared.channelArguments(event, handler);
  event = args[0];
  handler = args[1];
  var realtime = useRealtime();
  var latest = React.useRef(handler);
  latest.current = handler;
  var channel = name == null ? null : realtime.channels.get(name);
  var eventKey = event === null ? '' : JSON.stringify(event);
  React.useEffect(function () {
    if (!channel) return undefined;
    var events = eventKey ? JSON.parse(eventKey) : null;
    var listener = function (message) {
      if (latest.current) latest.current(message);
    };
    return shared.listen(channel, events, listener);
  }, [channel, eventKey]);
  return channel;
}

/**
 * usePresence(name) -> the channel's present members, kept live (PresenceMember[]).
 * usePresence(name, data) also enters the channel with `data` while the component is mounted (null enters
 * with no data); new `data` (by value) updates the entry.
 */
function usePresence(name, data) {
  var realtime = useRealtime();
  var presence = name == null ? null : realtime.channels.get(name).presence;
  var members = React.useState(function () {
    return presence && presence.syncComplete ? presence.members() : [];
  });
  var list = members[0];
  var setList = members[1];
  var enters = data !== undefined;
  var dataKey = enters ? JSON.stringify(data) : undefined;

  React.useEffect(function () {
    if (!presence) {
      setList([]);
      return undefined;
    }
    return shared.watchMembers(presence, function (current) { setList(current); });
  }, [presence]);

  React.useEffect(function () {
    if (!presence || !enters) return undefined;
    // Under strict mode the remount enters again at once; pulse.js, still waiting for the server's answer to the
    // first enter, then sends neither the leave nor the second enter.
    return shared.holdPresence(presence);
  }, [presence, enters]);

  React.useEffect(function () {
    if (!presence || !enters) return;
    // enter() of a member already present updates its data: one call for the first entry and for changes.
    presence.enter(JSON.parse(dataKey)).catch(function () { /* reported on the channel */ });
  }, [presence, enters, dataKey]);

  return list;
}

/** The connection's state ('connecting', 'connected', 'disconnected', ...), re-rendering on every change. */
function useConnectionState() {
  var realtime = useRealtime();
  var subscribe = React.useMemo(function () {
    return function (notify) { return shared.watchConnection(realtime, notify); };
  }, [realtime]);
  return React.useSyncExternalStore(
    subscribe,
    function () { return realtime.connection.state; },
    function () { return 'initialized'; }
  );
}

exports.PulseProvider = PulseProvider;
exports.PulseContext = PulseContext;
exports.useRealtime = useRealtime;
exports.useChannel = useChannel;
exports.usePresence = usePresence;
exports.useConnectionState = useConnectionState;
