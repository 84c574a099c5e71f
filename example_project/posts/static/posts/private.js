// Private messages over secret per-user channels (the seed's "Private Channels"). All user content is
// inserted as text, never as HTML.
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const csrf = (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] || '';
  let me = null;
  let realtime = null;

  const { showError, setStatus } = window.examplePage;
  const api = (body) => window.examplePage.postJSON('/private/api', body, { 'X-CSRFToken': decodeURIComponent(csrf) });

  function addMessage(kind, other, text) {
    const li = document.createElement('li');
    li.className = 'post ' + kind;
    const who = document.createElement('b');
    who.textContent = kind === 'received' ? 'From ' + other.name : 'To ' + other.name;
    const body = document.createElement('p');
    body.textContent = text;
    li.append(who, body);
    $('messages').prepend(li);
  }

  // The lobby's presence members (one per open tab) -> one option per other member.
  function renderPeople(members) {
    const select = $('to');
    const chosen = select.value;
    const people = new Map();
    members.forEach((m) => {
      if (m.data && typeof m.data.id === 'number' && m.data.id !== me.id) people.set(m.data.id, m.data.name);
    });
    select.replaceChildren();
    for (const [id, name] of people) {
      const option = document.createElement('option');
      option.value = String(id);
      option.textContent = name;
      select.append(option);
    }
    if (people.has(Number(chosen))) select.value = chosen;
    $('nobody').hidden = people.size > 0;
  }

  async function start(member) {
    me = member;
    $('join-form').hidden = true;
    $('chat').hidden = false;
    $('me').textContent = me.name;
    const { token, endpoint, kbId } = await api({ action: 'getPulseToken' });
    realtime = new Pulse.Realtime({
      kbId, token, endpoint, clientId: 'member-' + me.id,
      authCallback: () => api({ action: 'getPulseToken' }),  // a fresh token when this one expires
    });
    realtime.connection.on('connected', () => setStatus('connected'));
    realtime.connection.on('disconnected', () => setStatus('disconnected'));

    // My secret channel: only the server publishes here, only I subscribe.
    realtime.channels.get(me.privateChannel).subscribe('message', (msg) => {
      addMessage('received', msg.data.from, msg.data.text);
    });
    const lobby = realtime.channels.get('lobby');
    lobby.presence.enter({ id: me.id, name: me.name });
    lobby.presence.subscribe(renderPeople);
  }

  $('join-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const { me: member } = await api({ action: 'join', name: $('join-name').value });
      showError(null);
      await start(member);
    } catch (err) {
      showError(err);
    }
  });

  $('send-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const to = Number($('to').value);
    const text = $('text').value;
    if (!to || !text.trim()) return;
    try {
      const { sent } = await api({ action: 'send', to, text });
      addMessage('sent', sent.to, sent.text);
      $('text').value = '';
      showError(null);
    } catch (err) {
      showError(err);
    }
  });

  api({ action: 'me' }).then(({ me: member }) => member && start(member)).catch(showError);
})();
