// django-pulse-realtime/vue as an ES module: vue.cjs is the one implementation (one injection key).
import composables from './vue.cjs';

export const { PULSE_KEY, createPulse, providePulse, useRealtime, useChannel, usePresence, useConnectionState } =
  composables;
