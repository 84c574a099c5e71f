// src/Members.jsx
import { usePresence } from 'django-pulse-realtime/react';

export function Members({ name }) {
  // Present in 'room' with { name } while mounted; the live member list.
  const members = usePresence('room', { name });
  return (
    <ul id="members">
      {members.map((m) => <li key={m.connectionId}>{m.data.name}</li>)}
    </ul>
  );
}
