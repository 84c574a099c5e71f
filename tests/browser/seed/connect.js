// Get token from your API (see Server SDK below)
const { token, endpoint, kbId } = await fetch('/auth', {
    method: 'POST',
    body: JSON.stringify({ action: 'getPulseToken', userId: 'user123' })
}).then(r => r.json());

// Connect to Pulse
const realtime = new Pulse.Realtime({
    kbId,
    token,
    endpoint,
    clientId: 'user123'
});

// Connection events
realtime.connection.on('connected', () => console.log('Connected!'));
realtime.connection.on('disconnected', () => console.log('Disconnected'));
