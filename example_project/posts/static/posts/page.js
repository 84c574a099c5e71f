// What both example pages share: a JSON POST that rejects with the server's error, and the error and
// connection-status lines. Defines window.examplePage.
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);

  window.examplePage = {
    // POST ``body`` as JSON to ``url``; resolves to the JSON answer, rejects with its ``error`` text.
    postJSON(url, body, headers) {
      return fetch(url, {
        method: 'POST',
        credentials: 'same-origin',
        headers: Object.assign({ 'Content-Type': 'application/json' }, headers || {}),
        body: JSON.stringify(body),
      }).then(async (r) => {
        const answer = await r.json();
        if (!r.ok) throw new Error(answer.error || ('HTTP ' + r.status));
        return answer;
      });
    },
    showError(err) {
      $('error').hidden = !err;
      $('error').textContent = err ? String(err.message || err) : '';
    },
    setStatus(state) {
      $('status').dataset.state = state;
      $('status').textContent = state;
    },
  };
})();
