// src/App.jsx
import { useState } from 'react';
import { useConnectionState } from 'django-pulse-realtime/react';
import { Chat } from './Chat.jsx';
import { Members } from './Members.jsx';

export function App({ name }) {
  const state = useConnectionState(); // 'connecting', 'connected', 'disconnected', ...
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
