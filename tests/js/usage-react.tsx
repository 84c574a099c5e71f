// The React hooks of django-pulse-realtime/react as docs/js-frameworks.md uses them, typed against react.d.ts
// (make lint: tsc --noEmit --strict). Nothing here runs; the apps in tests/browser/apps/ run the same calls.
import { useState, type ReactElement } from 'react';
import { Realtime, type PresenceMember } from 'django-pulse-realtime';
import {
  PulseProvider,
  useChannel,
  useConnectionState,
  usePresence,
  useRealtime,
} from 'django-pulse-realtime/react';

interface Post {
  id: number;
  title: string;
}

function Posts(): ReactElement {
  const [posts, setPosts] = useState<Post[]>([]);
  const channel = useChannel<{ post: Post }>('posts', 'new_post', (message) => {
    setPosts((previous) => [message.data.post, ...previous]);
  });
  useChannel('posts', ['edited', 'deleted'], (message) => console.log(message.name, message.serial));
  useChannel('everything', (message) => console.log(message.channel));
  const maybe = useChannel(null, () => undefined);
  const publish = (): Promise<unknown> => channel.publish('new_post', { title: 'Hi' });
  return <button onClick={() => void publish()}>{posts.length + (maybe ? 1 : 0)}</button>;
}

function Room({ name }: { name: string }): ReactElement {
  const members: PresenceMember<{ name: string }>[] = usePresence('room', { name });
  const watching = usePresence<{ name: string }>('lobby');
  const state = useConnectionState();
  const realtime: Realtime = useRealtime();
  return (
    <p title={realtime.clientId ?? ''}>
      {state === 'connected' ? members.map((m) => m.data.name).join(', ') : state} {watching.length}
    </p>
  );
}

export function WithOptions(): ReactElement {
  return (
    <PulseProvider options={{ authUrl: '/api/pulse-token/' }}>
      <Posts />
      <Room name="Alice" />
    </PulseProvider>
  );
}

const shared = new Realtime({ authUrl: '/api/pulse-token/', autoConnect: false });

export function WithClient(): ReactElement {
  return (
    <PulseProvider client={shared}>
      <Posts />
    </PulseProvider>
  );
}
