// Live Posts: the seed's frontend, made safe. User content only ever goes into the page as text
// (textContent), never as HTML, so a post such as <img src=x onerror=alert(1)> shows as those characters.
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const shown = new Set();  // post ids on the page: a post arriving twice (list + live, own create) shows once
  const nameInput = $('name');
  nameInput.value = localStorage.getItem('livePosts.name') ||
    'user_' + Math.random().toString(36).slice(2, 11);
  const userId = nameInput.value;
  let realtime;

  const { showError, setStatus } = window.examplePage;
  const api = (body) => window.examplePage.postJSON('/posts', body);

  function postElement(post) {
    const li = document.createElement('li');
    li.className = 'post';
    li.dataset.id = post.id;
    const who = document.createElement('b');
    who.textContent = post.user_name;
    const when = document.createElement('time');
    when.dateTime = post.created_at;
    when.textContent = new Date(post.created_at).toLocaleTimeString();
    const text = document.createElement('p');
    text.textContent = post.content;
    li.append(who, when, text);
    return li;
  }

  // newest: a live post goes on top; an older one (from the list) goes below what is shown.
  function addPost(post, newest) {
    if (!post || shown.has(post.id)) return;
    shown.add(post.id);
    const list = $('posts');
    if (newest) list.prepend(postElement(post)); else list.append(postElement(post));
  }

  // After a gap the channel could not replay (the server restarted with the in-memory broker, so its history
  // went with it): load the list again and put each post it did not show where it belongs (newest first).
  async function catchUp() {
    const { posts } = await api({ action: 'list' });
    const list = $('posts');
    posts.forEach((post) => {
      if (shown.has(post.id)) return;
      shown.add(post.id);
      const older = [...list.children].find((li) => Number(li.dataset.id) < post.id);
      list.insertBefore(postElement(post), older || null);
    });
  }

  async function init() {
    // Subscribe first, then load the list: a post created in between is not missed (ids dedupe it).
    const { token, endpoint, kbId } = await api({ action: 'getPulseToken', userId });
    realtime = new Pulse.Realtime({
      kbId, token, endpoint, clientId: userId,
      // Tokens expire (an hour by default): pulse.js asks for a new one here when it needs to.
      authCallback: () => api({ action: 'getPulseToken', userId }),
    });
    realtime.connection.on('connected', () => setStatus('connected'));
    realtime.connection.on('disconnected', () => setStatus('disconnected'));

    const channel = realtime.channels.get('posts');
    channel.subscribe('new_post', (msg) => addPost(msg.data.post, true));
    channel.on('discontinuity', () => catchUp().catch(showError));
    channel.presence.enter({ name: userId });
    channel.presence.subscribe((members) => {
      $('online').textContent = 'Online: ' + members.length;
    });

    const { posts } = await api({ action: 'list' });  // newest first
    posts.forEach((post) => addPost(post, false));
  }

  $('form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const content = $('content').value;
    const userName = nameInput.value.trim() || userId;
    if (!content.trim()) return;
    localStorage.setItem('livePosts.name', userName);
    try {
      const { post } = await api({ action: 'create', content, userName });
      addPost(post, true);
      $('content').value = '';
      showError(null);
    } catch (err) {
      showError(err);
    }
  });

  init().catch(showError);
})();
