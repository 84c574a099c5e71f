// The same API through the global `Pulse` of a <script src=".../pulse.js"> page (a script file, not a module).
const page = new Pulse.Realtime({ kbId: 'demo', token: 't', clientId: 'user123', authUrl: '/pulse/token/' });
page.connection.on('connected', () => console.log('Connected!', page.connection.id));
page.channels.get('posts').subscribe('new_post', (msg: Pulse.Message<{ post: string }>) => console.log(msg.data.post));
page.channels.get('posts').presence.enter({ name: 'user123' });
