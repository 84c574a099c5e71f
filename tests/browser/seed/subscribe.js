const channel = realtime.channels.get('posts');

// Subscribe to specific event
channel.subscribe('new_post', (message) => {
    console.log('New post:', message.data);
});

// Subscribe to all events
channel.subscribe((message) => {
    console.log('Event:', message.name, message.data);
});
