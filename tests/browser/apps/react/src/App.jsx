import { useState } from 'react';
import { useChannel, usePresence, useConnectionState } from 'django-pulse-realtime/react';

// Every message a Chat handler got, for the test: a second subscription would count each message twice.
window.received = [];

function Chat({ name }) {
  const [messages, setMessages] = useState([]);
  const channel = useChannel('room', 'message', (message) => {
    window.received.push(message.data.text);
    setMessages((previous) => [...previous, message.data]);
  });
  const [text, setText] = useState('');
  const send = (event) => {
    event.preventDefault();
    channel.publish('message', { from: name, text });
    setText('');
  };
  return (
    <section>
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

function Members({ name }) {
  const members = usePresence('room', { name });
  return (
    <ul id="members">
      {members.map((m) => <li key={m.connectionId}>{m.data.name}</li>)}
    </ul>
  );
}

export function App({ name }) {
  const state = useConnectionState();
  const [chatShown, setChatShown] = useState(true);
  return (
    <main>
      <p id="state">{state}</p>
      <Members name={name} />
      <button id="toggle-chat" onClick={() => setChatShown(!chatShown)}>
        {chatShown ? 'Hide chat' : 'Show chat'}
      </button>
      {chatShown && <Chat name={name} />}
    </main>
  );
}
