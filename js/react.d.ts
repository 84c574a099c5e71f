// Types of django-pulse-realtime/react (react.cjs): React hooks over pulse.js.
import type { Context, ReactElement, ReactNode } from 'react';
import type { Channel, ConnectionState, Message, PresenceMember, Realtime, RealtimeOptions } from 'django-pulse-realtime';

export type PulseProviderProps =
  | { /** A Realtime the app created (shared, never closed by the provider). */ client: Realtime; options?: never; children?: ReactNode }
  | { /** Options of the Realtime the provider creates, connects and closes on unmount. */ options: RealtimeOptions; client?: never; children?: ReactNode };

/** Holds the app's one Realtime for the hooks below it. */
export function PulseProvider(props: PulseProviderProps): ReactElement;
export const PulseContext: Context<Realtime | null>;

/** The provider's Realtime; throws outside a <PulseProvider>. */
export function useRealtime(): Realtime;

/** Subscribed to every event of channel `name` while mounted; null `name`: nothing. Returns the channel. */
export function useChannel<T = any>(name: string, handler: (message: Message<T>) => void): Channel;
export function useChannel<T = any>(name: string | null, handler: (message: Message<T>) => void): Channel | null;
/** Subscribed to `event` (or each of `events`) of channel `name` while mounted. */
export function useChannel<T = any>(
  name: string, event: string | string[] | null, handler: (message: Message<T>) => void
): Channel;
export function useChannel<T = any>(
  name: string | null, event: string | string[] | null, handler: (message: Message<T>) => void
): Channel | null;

/** The live member list of channel `name`; with `data` (null: no data) also present while mounted. */
export function usePresence<T = any>(name: string | null, data?: T): PresenceMember<T>[];

/** The connection state, re-rendered on every change ('initialized' during server rendering). */
export function useConnectionState(): ConnectionState;
