// src/Chat.jsx
import { useState } from 'react';
import { useChannel, usePresence } from 'django-pulse-realtime/react';

export function Chat({ name }) {
  const [messages, setMessages] = useState([]);
  const [text, setText] = useState('');
  // Subscribed while the component is mounted; the newest handler is called.
  const channel = useChannel('room', 'message', (message) => {
    setMessages((previous) => [...previous, message.data]);
  });
  // Members (another component) enters 'room' too: present while either is mounted.
  const here = usePresence('room', { name });
  const send = (event) => {
    event.preventDefault();
    channel.publish('message', { from: name, text });
    setText('');
  };
  return (
    <section>
      <p id="here">{here.length} here</p>
      <ul id="messages">
        {messages.map((m, i) => <li key={i}>{m.from}: {m.text}</li>)}
      </ul>
      <form onSubmit={send}>
        <input id="text" value={text} onChange={(e) => setText(e.target.value)} />
        <button id="send" type="submit">Send</button>
      </form>
    </section>
  );
}
