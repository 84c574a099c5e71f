// What the React hooks and the Vue composables share.
'use strict';

var Pulse = require('./pulse.js');

function notDuringServerRendering() {
  throw new Error('django-pulse-realtime: nothing connects during server rendering');
}

/**
 * A Realtime for a provider or plugin to own: not connected yet (the provider connects it once mounted in a
 * browser). During server rendering there is no page to take the endpoint from and maybe no WebSocket; the
 * Realtime made there never connects (effects and onMounted run only in the browser), so placeholders do.
 */
function ownedRealtime(options) {
  var settings = Object.assign({}, options, { autoConnect: false });
  if (typeof window === 'undefined') {
    if (!settings.endpoint) settings.endpoint = 'ws://server-rendering.invalid/pulse/ws/';
    if (!settings.WebSocket) settings.WebSocket = notDuringServerRendering;
  }
  return new Pulse.Realtime(settings);
}

/** useChannel's arguments, (handler) or (event | [events] | null, handler): [events or null, handler]. */
function channelArguments(event, handler) {
  return handler === undefined && typeof event === 'function' ? [null, event] : [event == null ? null : event, handler];
}

/**
 * Subscribe `listener` to `events` of `channel` (null: every event); the function returned unsubscribes it (the
 * channel's last listener detaches it from the server). A refusal is reported on the channel (its state, its
 * 'failed' event), so the promise's rejection is not an unhandled one.
 */
function listen(channel, events, listener) {
  var subscribed = events === null ? channel.subscribe(listener) : channel.subscribe(events, listener);
  subscribed.catch(function () { /* reported on the channel */ });
  return function () {
    if (events === null) channel.unsubscribe(listener);
    else channel.unsubscribe(events, listener);
  };
}

/**
 * Tell `onList` the present members of `presence` now (when synced) and after every change; the function returned
 * stops telling it. A refusal is reported on the channel, as for listen().
 */
function watchMembers(presence, onList) {
  if (presence.syncComplete) onList(presence.members());
  presence.subscribe(onList).catch(function () { /* reported on the channel */ });
  return function () { presence.unsubscribe(onList); };
}

/** Call `listener` on every change of `realtime`'s connection state; the function returned stops it. */
function watchConnection(realtime, listener) {
  realtime.connection.on(listener);
  return function () { realtime.connection.off(listener); };
}

// How many mounted components are present on each channel.
var presentCount = new WeakMap();

/**
 * Count one more component present on `presence`'s channel; the function returned uncounts it, and the last one
 * leaves: one connection is one member, however many of its components entered.
 */
function holdPresence(presence) {
  presentCount.set(presence, (presentCount.get(presence) || 0) + 1);
  return function release() {
    var count = presentCount.get(presence) - 1;
    presentCount.set(presence, count);
    if (count === 0) presence.leave().catch(function () { /* the connection is gone: the server ends the entry */ });
  };
}

// Required only by react.cjs and vue.cjs.
module.exports = {
  ownedRealtime: ownedRealtime, holdPresence: holdPresence, channelArguments: channelArguments, listen: listen,
  watchMembers: watchMembers, watchConnection: watchConnection
};
