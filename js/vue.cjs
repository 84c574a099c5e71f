/*
 * django-pulse-realtime/vue: Vue 3 composables over pulse.js (docs/js-frameworks.md).
 *
 *     app.use(createPulse({ authUrl: '/api/pulse-token/' }));   // or createPulse(realtime)
 *     useChannel('posts', 'new_post', (message) => ...);
 *     const members = usePresence('room', { name: 'Alice' });    // a Ref of the member list
 *     const state = useConnectionState();                        // a Ref of the state
 *
 * Written by hand as CommonJS, like pulse.js itself (vue.mjs re-exports it for `import`). Subscriptions start in
 * onMounted, which Vue runs only in the browser, so server-side rendering opens nothing.
 */
'use strict';

var vue = require('vue');
var shared = require('./shared.cjs');

var PULSE_KEY = Symbol('django-pulse-realtime');

function isRealtime(value) {
  return Boolean(value && value.connection && value.channels);
}

/**
 * The plugin: app.use(createPulse(realtime)) shares a Realtime the app created; createPulse(options) creates
 * one, connected when the app mounts in a browser (not on the server) and closed when the app unmounts.
 */
function createPulse(clientOrOptions) {
  var given = isRealtime(clientOrOptions) ? clientOrOptions : null;
  var realtime = given || shared.ownedRealtime(clientOrOptions);
  var connect = !given && !(clientOrOptions && clientOrOptions.autoConnect === false);
  return {
    realtime: realtime,
    install: function (app) {
      app.provide(PULSE_KEY, realtime);
      if (!connect || typeof window === 'undefined') return;
      realtime.connect();
      if (typeof app.onUnmount === 'function') app.onUnmount(function () { realtime.close(); });
    }
  };
}

/** In a component's setup(): give the components below it `realtime` (instead of the plugin). */
function providePulse(realtime) {
  vue.provide(PULSE_KEY, realtime);
  return realtime;
}

/** The Realtime of the plugin (or providePulse above); throws without one. */
function useRealtime() {
  var realtime = vue.inject(PULSE_KEY, null);
  if (!realtime) throw new Error('useRealtime() and the pulse composables need app.use(createPulse(...))');
  return realtime;
}

/** Run start() while the component is mounted and again whenever `source` changes; stop() what it started. */
function whileMounted(source, start) {
  var stop = null;
  var mounted = false;
  function restart() {
    if (stop) stop();
    stop = mounted ? start(vue.toValue(source)) : null;
  }
  vue.onMounted(function () {
    mounted = true;
    restart();
  });
  vue.watch(source, function () { if (mounted) restart(); });
  vue.onBeforeUnmount(function () {
    mounted = false;
    restart();
  });
}

/**
 * useChannel(name, handler) or useChannel(name, event | [events], handler): subscribed while the component is
 * mounted. `name` may be a ref or getter: the subscription follows it. Returns a ShallowRef of the Channel.
 */
function useChannel(name, event, handler) {
  var args = shared.channelArguments(event, handler);
  var realtime = useRealtime();
  var channelRef = vue.shallowRef(null);
  whileMounted(function () { return vue.toValue(name); }, function (current) {
    if (current == null) {
      channelRef.value = null;
      return null;
    }
    var channel = realtime.channels.get(current);
    channelRef.value = channel;
    return shared.listen(channel, args[0], function (message) { args[1](message); });
  });
  return channelRef;
}

/**
 * usePresence(name) -> a ShallowRef of the channel's present members, kept live. usePresence(name, data) also
 * enters with `data` (a ref or getter too: changes update the entry) while the component is mounted.
 */
function usePresence(name, data) {
  var realtime = useRealtime();
  var members = vue.shallowRef([]);
  var enters = data !== undefined;
  whileMounted(function () { return vue.toValue(name); }, function (current) {
    if (current == null) {
      members.value = [];
      return null;
    }
    var presence = realtime.channels.get(current).presence;
    if (!presence.syncComplete) members.value = [];
    var stopWatching = shared.watchMembers(presence, function (list) { members.value = list; });
    var stopUpdates = null;
    var release = null;
    if (enters) {
      release = shared.holdPresence(presence);
      presence.enter(vue.toValue(data)).catch(function () { /* reported on the channel */ });
      stopUpdates = vue.watch(function () { return vue.toValue(data); }, function (value) {
        presence.update(value).catch(function () { /* reported on the channel */ });
      }, { deep: true });
    }
    return function () {
      stopWatching();
      if (!enters) return;
      stopUpdates();
      release();
    };
  });
  return members;
}

/** A Ref of the connection's state ('connecting', 'connected', ...); 'initialized' during server rendering. */
function useConnectionState() {
  var realtime = useRealtime();
  var state = vue.ref(realtime.connection.state);
  var stop = null;
  vue.onMounted(function () {
    state.value = realtime.connection.state;
    stop = shared.watchConnection(realtime, function (change) { state.value = change.current; });
  });
  vue.onBeforeUnmount(function () { if (stop) stop(); });
  return state;
}

exports.PULSE_KEY = PULSE_KEY;
exports.createPulse = createPulse;
exports.providePulse = providePulse;
exports.useRealtime = useRealtime;
exports.useChannel = useChannel;
exports.usePresence = usePresence;
exports.useConnectionState = useConnectionState;
