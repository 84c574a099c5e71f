// src/main.js: the test harness (tests/browser/test_js_frameworks.py); docs/js-frameworks.md shows the plugin.
import { createApp } from 'vue';
import { createPulse } from 'django-pulse-realtime/vue';
import App from './App.vue';

// Who this tab is: ?client=alice (a real site knows its user from the session; see docs/js-frameworks.md).
const clientId = new URLSearchParams(location.search).get('client') || 'guest';

createApp(App, { name: clientId })
  .use(createPulse({ authUrl: '/__test__/token/', authParams: { clientId }, retryMax: 2000 }))
  .mount('#app');
