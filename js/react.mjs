// django-pulse-realtime/react as an ES module: react.cjs is the one implementation (one React context).
import hooks from './react.cjs';

export const { PulseProvider, PulseContext, useRealtime, useChannel, usePresence, useConnectionState } = hooks;
