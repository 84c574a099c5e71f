/*
 * pulse.mjs: pulse.js as an ES module, for `import` without a bundler:
 *
 *     import Pulse, { Realtime } from '/static/django_pulse/pulse.mjs';
 *
 * pulse.js is the one implementation (a UMD file: <script>, CommonJS, AMD); evaluated as a module it
 * defines globalThis.Pulse, which this file re-exports.
 */
import './pulse.js';

const Pulse = globalThis.Pulse;

export default Pulse;
export const { Realtime, PulseError, EventEmitter, retryDelay, DEFAULTS, STATES, VERSION, PROTOCOL_VERSION } = Pulse;
