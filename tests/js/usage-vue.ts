// The Vue composables of django-pulse-realtime/vue as docs/js-frameworks.md uses them, typed against vue.d.ts
// (make lint: tsc --noEmit --strict). Nothing here runs; the app in tests/browser/apps/vue runs the same calls.
import { createApp, defineComponent, h, ref, type Ref, type ShallowRef } from 'vue';
import { Realtime, type Channel, type ConnectionState, type PresenceMember } from 'django-pulse-realtime';
import {
  createPulse,
  providePulse,
  useChannel,
  useConnectionState,
  usePresence,
  useRealtime,
} from 'django-pulse-realtime/vue';

interface Post {
  id: number;
  title: string;
}

const Posts = defineComponent({
  props: { room: { type: String, required: true } },
  setup(props) {
    const posts = ref<Post[]>([]);
    const channel: ShallowRef<Channel | null> = useChannel<{ post: Post }>('posts', 'new_post', (message) => {
      posts.value.unshift(message.data.post);
    });
    useChannel(() => props.room, (message) => console.log(message.name));
    const members: ShallowRef<PresenceMember<{ name: string }>[]> = usePresence('room', { name: 'Alice' });
    const typing = ref({ name: 'Alice', typing: false });
    usePresence(() => props.room, typing);
    const state: Ref<ConnectionState> = useConnectionState();
    const realtime: Realtime = useRealtime();
    const publish = () => channel.value?.publish('new_post', { title: 'Hi' });
    return () => h('p', { onClick: publish, title: realtime.clientId }, `${state.value} ${members.value.length}`);
  },
});

createApp(Posts, { room: 'lobby' }).use(createPulse({ authUrl: '/api/pulse-token/' })).mount('#app');

const shared = new Realtime({ authUrl: '/api/pulse-token/' });
const plugin = createPulse(shared);
createApp(Posts, { room: 'lobby' }).use(plugin).mount('#other');
export const Parent = defineComponent({
  setup() {
    providePulse(plugin.realtime);
    return () => h(Posts, { room: 'lobby' });
  },
});
