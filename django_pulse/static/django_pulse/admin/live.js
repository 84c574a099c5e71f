/*
 * The admin's live view (django_pulse/ops/live_view.py, docs/admin.md): renders the snapshot the page carries,
 * then every snapshot published on the staff channel, which it subscribes to with pulse.js.
 *
 * Everything shown comes from clients (channel names, presence data, client ids), so it is inserted as text
 * (textContent), never as markup. Buttons POST with the page's CSRF token.
 */
(function () {
  'use strict';

  var config = JSON.parse(document.getElementById('pulse-live-config').textContent);
  var csrf = document.querySelector('#pulse-live [name=csrfmiddlewaretoken]').value;
  var state = { snapshot: config.snapshot, selected: null, snapshots: 0 };
  // For tests and curious operators: what the page last rendered and how many snapshots arrived live.
  window.pulseLive = state;

  function $(id) { return document.getElementById(id); }

  function cell(row, text, className) {
    var td = document.createElement('td');
    td.textContent = text === null || text === undefined ? '' : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function button(label, onClick, attrs) {
    var b = document.createElement('button');
    b.type = 'button';
    b.className = 'button';
    b.textContent = label;
    Object.keys(attrs || {}).forEach(function (k) { b.setAttribute(k, attrs[k]); });
    b.addEventListener('click', onClick);
    return b;
  }

  function clear(tbody) {
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
  }

  function emptyRow(tbody, columns, text) {
    var row = document.createElement('tr');
    var td = cell(row, text, 'pulse-live-empty');
    td.colSpan = columns;
    tbody.appendChild(row);
  }

  function time(ms) {
    return ms ? new Date(ms).toLocaleString() : '';
  }

  function ago(ms, now) {
    if (!ms) return '';
    var s = Math.max(0, Math.round((now - ms) / 1000));
    return s + ' s ago';
  }

  function message(text, isError) {
    var p = $('pulse-live-message');
    p.textContent = text || '';
    p.className = 'pulse-live-message' + (isError ? ' errornote' : '');
  }

  function post(url, fields) {
    var body = new URLSearchParams(fields);
    return fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRFToken': csrf, Accept: 'application/json' },
      body: body
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var error = (data && data.error) || {};
          throw new Error(error.message || ('HTTP ' + response.status));
        }
        return data;
      });
    });
  }

  function getJSON(url) {
    return fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } }).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) throw new Error((data.error && data.error.message) || ('HTTP ' + r.status));
        return data;
      });
    });
  }

  // -- rendering --------------------------------------------------------------------------------------------

  function renderProcesses(snap) {
    var tbody = $('pulse-live-processes').tBodies[0];
    clear(tbody);
    var list = (snap.processList || []).concat(snap.drainingList || []);
    $('pulse-live-summary').textContent =
      'mode ' + snap.mode + ', ' + (snap.processes === null ? '?' : snap.processes) + ' process(es), ' +
      (snap.connections === null ? '?' : snap.connections) + ' connection(s)' +
      (snap.redis ? ', Redis ' + (snap.redis.ok ? 'ok' : 'DOWN: ' + snap.redis.error) : '') +
      (snap.error ? ', ' + snap.error : '');
    if (!list.length) emptyRow(tbody, 7, 'No server process has registered (none has served a connection yet).');
    list.forEach(function (p) {
      var row = document.createElement('tr');
      row.setAttribute('data-process', p.id);
      cell(row, p.id);
      cell(row, p.host);
      cell(row, p.pid);
      cell(row, p.connections, 'pulse-live-connections');
      cell(row, time(p.startedAt));
      cell(row, ago(p.beatAt, snap.at));
      cell(row, p.health, 'pulse-live-health pulse-live-health-' + p.health);
      tbody.appendChild(row);
    });
  }

  function renderApps(snap) {
    var tbody = $('pulse-live-apps').tBodies[0];
    clear(tbody);
    var select = $('pulse-live-disconnect-kb');
    var chosen = select.value;
    clear(select);
    snap.apps.forEach(function (app) {
      var row = document.createElement('tr');
      row.setAttribute('data-kb', app.kbId);
      cell(row, app.kbId + (app.internal ? ' (this page)' : ''));
      cell(row, app.enabled ? 'yes' : 'no', 'pulse-live-enabled');
      cell(row, app.keys);
      cell(row, app.channels === null ? (app.error || '?') : app.channels);
      var actions = cell(row, '');
      if (config.canManage && !(app.internal && app.enabled)) {
        actions.appendChild(button(app.enabled ? 'Disable' : 'Enable', function () {
          var verb = app.enabled ? 'Disable' : 'Enable';
          if (app.enabled && !window.confirm('Disable app ' + app.kbId + '? Its clients are disconnected at once.')) return;
          post(config.urls.app, { kbId: app.kbId, enabled: app.enabled ? '0' : '1' }).then(function () {
            message(verb + 'd app ' + app.kbId + '.');
            refresh();
          }, function (error) { message(error.message, true); });
        }, { 'data-action': app.enabled ? 'disable' : 'enable' }));
      }
      tbody.appendChild(row);
      var option = document.createElement('option');
      option.value = app.kbId;
      option.textContent = app.kbId;
      select.appendChild(option);
    });
    if (chosen) select.value = chosen;
  }

  function renderChannels(snap) {
    var tbody = $('pulse-live-channels').tBodies[0];
    clear(tbody);
    var any = false;
    snap.apps.forEach(function (app) {
      (app.channelList || []).forEach(function (ch) {
        any = true;
        var row = document.createElement('tr');
        row.setAttribute('data-kb', app.kbId);
        row.setAttribute('data-channel', ch.name);
        var sel = state.selected;
        if (sel && sel.kbId === app.kbId && sel.channel === ch.name) row.className = 'selected';
        cell(row, app.kbId);
        var name = cell(row, '');
        var link = document.createElement('a');
        link.href = '#';
        link.textContent = ch.name;
        link.addEventListener('click', function (event) {
          event.preventDefault();
          state.selected = { kbId: app.kbId, channel: ch.name };
          renderChannels(state.snapshot);
          loadMembers();
        });
        name.appendChild(link);
        cell(row, ch.subscribers, 'pulse-live-subscribers');
        cell(row, ch.presence, 'pulse-live-presence');
        tbody.appendChild(row);
      });
      if (app.channelsLeftOut) emptyRow(tbody, 4, app.kbId + ': ' + app.channelsLeftOut + ' quieter channel(s) not listed');
    });
    if (!any) emptyRow(tbody, 4, 'No channel has a subscriber or a member.');
  }

  function renderMembers(result) {
    var tbody = $('pulse-live-members').tBodies[0];
    clear(tbody);
    var sel = state.selected;
    $('pulse-live-members-title').textContent = sel ? 'Members of ' + sel.channel + ' (' + sel.kbId + ')' : 'Members';
    if (!sel) { emptyRow(tbody, 5, 'No channel picked.'); return; }
    if (!result) return;
    if (!result.members.length) emptyRow(tbody, 5, 'Nobody is present.');
    result.members.forEach(function (m) {
      var row = document.createElement('tr');
      row.setAttribute('data-client', m.clientId);
      cell(row, m.clientId);
      cell(row, m.connectionId);
      cell(row, JSON.stringify(m.data), 'pulse-live-data');
      cell(row, time(m.timestamp));
      var actions = cell(row, '');
      if (config.canManage) {
        actions.appendChild(button('Disconnect', function () {
          disconnect(sel.kbId, m.clientId);
        }, { 'data-action': 'disconnect' }));
      }
      tbody.appendChild(row);
    });
    if (result.membersLeftOut) emptyRow(tbody, 5, result.membersLeftOut + ' more not listed');
  }

  function render(snap) {
    state.snapshot = snap;
    $('pulse-live-at').textContent = '(as of ' + time(snap.at) + ')';
    renderProcesses(snap);
    renderApps(snap);
    renderChannels(snap);
  }

  function loadMembers() {
    var sel = state.selected;
    if (!sel) { renderMembers(null); return; }
    var url = config.urls.members + '?' + new URLSearchParams({ kbId: sel.kbId, channel: sel.channel });
    getJSON(url).then(function (result) {
      if (state.selected === sel) renderMembers(result);
    }, function (error) { message(error.message, true); });
  }

  function refresh() {
    return getJSON(config.urls.snapshot).then(function (snap) {
      render(snap);
      loadMembers();
    }, function (error) { message(error.message, true); });
  }

  function disconnect(kbId, clientId) {
    return post(config.urls.disconnect, { kbId: kbId, clientId: clientId }).then(function () {
      message('Disconnected ' + clientId + ' (' + kbId + ') on every server process.');
    }, function (error) { message(error.message, true); });
  }

  // -- wiring -----------------------------------------------------------------------------------------------

  $('pulse-live-refresh').addEventListener('click', refresh);
  var form = $('pulse-live-disconnect-form');
  if (!config.canManage) form.hidden = true;
  form.addEventListener('submit', function (event) {
    event.preventDefault();
    disconnect($('pulse-live-disconnect-kb').value, $('pulse-live-disconnect-client').value.trim());
  });

  render(state.snapshot);
  renderMembers(null);

  var realtime = new window.Pulse.Realtime({
    kbId: config.kbId,
    clientId: config.clientId,
    endpoint: config.endpoint,
    authUrl: config.urls.token,
    authHeaders: { 'X-CSRFToken': csrf }
  });
  state.realtime = realtime;
  realtime.connection.on(function (change) {
    var current = change && change.current ? change.current : realtime.connection.state;
    $('pulse-live-state').textContent = current;
    if (current === 'failed') {
      var reason = change && change.reason ? ': ' + (change.reason.message || change.reason.code || '') : '';
      message('Live updates stopped' + reason + '. "Refresh now" still reads the current state.', true);
    }
  });
  realtime.channels.get(config.channel).subscribe(config.event, function (msg) {
    state.snapshots += 1;
    render(msg.data);
    loadMembers();
  });
})();
