// Types of django-pulse-realtime/vue (vue.cjs): Vue 3 composables over pulse.js.
import type { App, InjectionKey, MaybeRefOrGetter, Ref, ShallowRef } from 'vue';
import type { Channel, ConnectionState, Message, PresenceMember, Realtime, RealtimeOptions } from 'django-pulse-realtime';

export const PULSE_KEY: InjectionKey<Realtime>;

/** The plugin: app.use(createPulse(realtime)) or app.use(createPulse(options)). */
export function createPulse(clientOrOptions: Realtime | RealtimeOptions): {
  readonly realtime: Realtime;
  install(app: App): void;
};

/** In setup(): give the components below `realtime`. */
export function providePulse(realtime: Realtime): Realtime;

/** The plugin's Realtime; throws without one. */
export function useRealtime(): Realtime;

/** Subscribed to every event (or `event`, or each of `events`) of channel `name` while mounted. */
export function useChannel<T = any>(
  name: MaybeRefOrGetter<string | null>, handler: (message: Message<T>) => void
): ShallowRef<Channel | null>;
export function useChannel<T = any>(
  name: MaybeRefOrGetter<string | null>, event: string | string[] | null, handler: (message: Message<T>) => void
): ShallowRef<Channel | null>;

/** The live member list of channel `name`; with `data` (null: no data) also present while mounted. */
export function usePresence<T = any>(
  name: MaybeRefOrGetter<string | null>, data?: MaybeRefOrGetter<T>
): ShallowRef<PresenceMember<T>[]>;

/** The connection state ('initialized' during server rendering). */
export function useConnectionState(): Ref<ConnectionState>;
