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

exports.ownedRealtime = ownedRealtime;
