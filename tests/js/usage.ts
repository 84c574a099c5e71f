// The seed tutorial's browser API, typed against pulse.d.ts as a module import (make lint: tsc --noEmit).
// Nothing here runs; tsc fails when pulse.d.ts stops describing what the tutorial (and pulse.js) offer.
import {
  Realtime,
  PulseError,
  retryDelay,
  VERSION,
  PROTOCOL_VERSION,
  type ConnectionStateChange,
  type Discontinuity,
  type Message,
  type PresenceMember,
  type PublishResult,
  type Resumed,
  type Whisper,
} from '../../django_pulse/static/django_pulse/pulse.js';

interface Post {
  user_name: string;
  content: string;
}

interface Who {
  name: string;
  avatar?: string;
}

export async function seedTutorial(userId: string): Promise<void> {
  const { token, endpoint, kbId } = (await fetch('/auth', {
    method: 'POST',
    body: JSON.stringify({ action: 'getPulseToken', userId }),
  }).then((r) => r.json())) as { token: string; endpoint: string; kbId: string };

  const realtime = new Realtime({ kbId, token, endpoint, clientId: userId });
  realtime.connection.on('connected', () => console.log('Connected!'));
  realtime.connection.on('disconnected', (change: ConnectionStateChange) => console.log(change.reason?.code));
  realtime.connection.on('error', (error: PulseError) => console.log(error.code, error.closeCode));

  const channel = realtime.channels.get('posts');
  await channel.subscribe<{ post: Post }>('new_post', (message) => {
    const post: Post = message.data.post;
    console.log(post.user_name, post.content, message.serial);
  });
  await channel.subscribe((message: Message) => console.log('Event:', message.name, message.data));
  channel.on('resumed', (r: Resumed) => console.log(r.channel, r.serial, r.reason));
  channel.on('discontinuity', (d: Discontinuity) => console.log(d.reason, d.lastSerial, d.serial));

  const me: PresenceMember<Who> | undefined = await channel.presence.enter<Who>({ name: 'Alice', avatar: '/a.jpg' });
  console.log(me?.clientId);
  channel.presence.get<Who>((members) => {
    console.log('Online:', members.length);
    members.forEach((m) => console.log(m.data.name));
  });
  const members: PresenceMember<Who>[] = await channel.presence.get<Who>();
  console.log(members.length);
  await channel.presence.subscribe<Who>((all) => console.log('Members updated:', all.length));
  await channel.presence.subscribe<Who>('enter', (member) => console.log(`${member.data.name} joined`));
  await channel.presence.subscribe<Who>('leave', (member) => console.log(`${member.data.name} left`));
  await channel.presence.leave();

  const result: PublishResult = await channel.publish('new_post', { post: { user_name: userId, content: 'hi' } });
  console.log(result.id, result.serial);
  console.log(retryDelay(3, { retryInitial: 500 }), VERSION, PROTOCOL_VERSION);

  // Whispers and others-only publishes (docs/js-sdk.md).
  const room = realtime.channels.get('chat.lobby');
  await room.listenForWhisper<{ on: boolean }>('typing', (w: Whisper<{ on: boolean }>) => {
    console.log(w.clientId, w.connectionId, w.data.on);
  });
  const relayed: boolean = await room.whisper('typing', { on: true });
  console.log(relayed);
  room.stopListeningForWhisper('typing');
  const mine: PublishResult = await room.publish('said', { text: 'hi' }, { toOthers: true });
  console.log(mine.serial, realtime.connection.limits?.whisperRate);
  realtime.close();
}

export function misuseIsRejected(realtime: Realtime): void {
  // @ts-expect-error: a channel name is a string
  realtime.channels.get(42);
  // @ts-expect-error: not a connection event
  realtime.connection.on('connceted', () => undefined);
  // @ts-expect-error: presence events are enter / leave / update
  void realtime.channels.get('posts').presence.subscribe('joined', () => undefined);
}
