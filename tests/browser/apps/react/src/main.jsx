// src/main.jsx: the test harness (tests/browser/test_js_frameworks.py); docs/js-frameworks.md shows the provider.
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { PulseProvider } from 'django-pulse-realtime/react';
import { App } from './App.jsx';

// Who this tab is: ?client=alice (a real site knows its user from the session; see docs/js-frameworks.md).
const clientId = new URLSearchParams(location.search).get('client') || 'guest';

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <PulseProvider options={{ authUrl: '/__test__/token/', authParams: { clientId }, retryMax: 2000 }}>
      <App name={clientId} />
    </PulseProvider>
  </StrictMode>,
);
