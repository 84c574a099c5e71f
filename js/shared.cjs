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

exports.ownedRealtime = ownedRealtime;
exports.channelArguments = channelArguments;
exports.listen = listen;
