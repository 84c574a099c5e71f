const channel = realtime.channels.get('posts');

// Enter presence with data
channel.presence.enter({ name: 'Alice', avatar: '/alice.jpg' });

// Get current members
channel.presence.get((members) => {
    console.log('Online:', members.length);
    members.forEach(m => console.log(m.data.name));
});

// Subscribe to presence changes
channel.presence.subscribe((members) => {
    console.log('Members updated:', members);
});

// Specific events
channel.presence.subscribe('enter', (member) => {
    console.log(`${member.data.name} joined`);
});

channel.presence.subscribe('leave', (member) => {
    console.log(`${member.data.name} left`);
});

// Leave when done
channel.presence.leave();
