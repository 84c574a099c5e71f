/*
 * pulse.mjs: pulse.js as an ES module, for `import` without a bundler:
 *
 *     import Pulse, { Realtime } from '/static/django_pulse/pulse.mjs';
 *
 * pulse.js is the one implementation (a UMD file: <script>, CommonJS, AMD); this file re-exports it.
 */
import * as loaded from './pulse.js';

// In a browser pulse.js runs as a module with no exports and sets globalThis.Pulse; in Node (and bundlers)
// it is CommonJS and its module.exports arrives as the default export.
const Pulse = (loaded && loaded.default) || globalThis.Pulse;

export default Pulse;
export const { Realtime, PulseError, EventEmitter, retryDelay, DEFAULTS, STATES, VERSION, PROTOCOL_VERSION, Live } =
  Pulse;
