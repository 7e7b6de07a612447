// The dashboard's page, script and style (served by dashboard.ts), kept as text so that the package needs no
// build step or bundler for them. The script builds every element with textContent (nothing from /status is
// ever parsed as HTML), reads the event stream, and computes rates and percentiles between two samples.

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Portico dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/app.css">
<script src="/dashboard/app.js" defer></script>
</head>
<body>
<header>
  <h1>Portico</h1>
  <span id="live" class="badge off">connecting</span>
  <span id="instance"></span>
  <label class="token">admin token <input id="token" type="password" autocomplete="off" placeholder="(when admin.token is set)"></label>
</header>
<section id="config" class="panel"></section>
<section class="cards">
  <div class="card"><div class="label">requests/s</div><div class="value" id="rps">-</div><svg id="chart-rps" viewBox="0 0 240 48" preserveAspectRatio="none"></svg></div>
  <div class="card"><div class="label">5xx/s</div><div class="value" id="errs">-</div><svg id="chart-errs" viewBox="0 0 240 48" preserveAspectRatio="none"></svg></div>
  <div class="card"><div class="label">latency p50 / p95 / p99</div><div class="value" id="lat">-</div><svg id="chart-lat" viewBox="0 0 240 48" preserveAspectRatio="none"></svg></div>
  <div class="card"><div class="label">open connections</div><div class="value" id="conns">-</div><svg id="chart-conns" viewBox="0 0 240 48" preserveAspectRatio="none"></svg></div>
  <div class="card"><div class="label">open tunnels</div><div class="value" id="tunnels">-</div><svg id="chart-tunnels" viewBox="0 0 240 48" preserveAspectRatio="none"></svg></div>
  <div class="card"><div class="label">TLS handshakes/s (errors/s)</div><div class="value" id="tls">-</div><svg id="chart-tls" viewBox="0 0 240 48" preserveAspectRatio="none"></svg></div>
</section>
<section class="panel"><h2>Responses by status</h2><table id="statuses"></table></section>
<section class="panel"><h2>Routes</h2><table id="routes"></table></section>
<section class="panel"><h2>Listeners</h2><table id="listeners"></table></section>
<section class="panel"><h2>Upstreams</h2><div id="upstreams"></div><p id="action" class="note"></p></section>
<section class="panel"><h2>Workers</h2><table id="workers"></table></section>
<footer>Figures from <a href="/status">/status</a> and <a href="/metrics">/metrics</a>, one sample a second while this page is open.</footer>
</body>
</html>
`;

export const APP_CSS = `
:root { --bg: #0f1419; --panel: #171d24; --text: #d8dee6; --muted: #8a96a3; --ok: #3fb950; --bad: #f85149; --warn: #d29922; --line: #58a6ff; }
* { box-sizing: border-box; }
body { margin: 0; padding: 16px 20px; background: var(--bg); color: var(--text); font: 14px/1.4 system-ui, sans-serif; }
header { display: flex; align-items: center; gap: 14px; flex-wrap: wrap; margin-bottom: 12px; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 15px; margin: 0 0 8px; color: var(--muted); font-weight: 600; }
.badge { padding: 2px 8px; border-radius: 10px; font-size: 12px; }
.badge.on { background: #1f3d2a; color: var(--ok); } .badge.off { background: #3d1f1f; color: var(--bad); }
.token { margin-left: auto; color: var(--muted); font-size: 12px; }
.token input { background: var(--panel); color: var(--text); border: 1px solid #30363d; border-radius: 4px; padding: 3px 6px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 10px; margin-bottom: 12px; }
.card, .panel { background: var(--panel); border-radius: 6px; padding: 10px 12px; }
.panel { margin-bottom: 12px; overflow-x: auto; }
.label { color: var(--muted); font-size: 12px; }
.value { font-size: 22px; font-variant-numeric: tabular-nums; margin: 2px 0 4px; }
svg { width: 100%; height: 48px; display: block; }
svg polyline { fill: none; stroke: var(--line); stroke-width: 1.5; vector-effect: non-scaling-stroke; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 3px 10px 3px 0; border-bottom: 1px solid #222a33; white-space: nowrap; }
th { color: var(--muted); font-weight: 500; }
.ok { color: var(--ok); } .bad { color: var(--bad); } .warn { color: var(--warn); }
button { background: #21262d; color: var(--text); border: 1px solid #30363d; border-radius: 4px; padding: 1px 8px; cursor: pointer; }
button:hover { border-color: var(--line); }
.note { color: var(--muted); font-size: 12px; min-height: 1em; }
.errors { color: var(--bad); font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap; }
footer { color: var(--muted); font-size: 12px; } a { color: var(--line); }
`;

export const APP_JS = `'use strict';
(() => {
  const HISTORY = 120;
  const series = { rps: [], errs: [], lat: [], conns: [], tunnels: [], tls: [] };
  let prev = null;
  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers: text only, never HTML ----
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function table(target, head, rows) {
    const t = $(target);
    t.replaceChildren();
    const tr = el('tr');
    for (const h of head) tr.appendChild(el('th', h));
    t.appendChild(tr);
    for (const r of rows) {
      const row = el('tr');
      for (const c of r) {
        if (c instanceof Node) { const td = el('td'); td.appendChild(c); row.appendChild(td); }
        else if (c && typeof c === 'object') row.appendChild(el('td', c.text, c.cls));
        else row.appendChild(el('td', c));
      }
      t.appendChild(row);
    }
    if (rows.length === 0) { const row = el('tr'); const td = el('td', 'none', 'note'); td.colSpan = head.length; row.appendChild(td); t.appendChild(row); }
  }
  function fmt(n, digits) {
    if (n === null || n === undefined || !isFinite(n)) return '-';
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + 'M';
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    return n.toFixed(digits === undefined ? (Number.isInteger(n) ? 0 : 1) : digits);
  }
  function ms(seconds) { return seconds === null ? '-' : seconds < 0.001 ? (seconds * 1e6).toFixed(0) + ' µs' : seconds < 1 ? (seconds * 1e3).toFixed(1) + ' ms' : seconds.toFixed(2) + ' s'; }
  function push(name, v) { const s = series[name]; s.push(isFinite(v) ? v : 0); if (s.length > HISTORY) s.shift(); draw('chart-' + name, s); }
  function draw(id, s) {
    const svg = $(id);
    const max = Math.max(1e-9, ...s);
    const pts = s.map((v, i) => (((HISTORY - s.length + i) / (HISTORY - 1)) * 240).toFixed(1) + ',' + (46 - (v / max) * 44).toFixed(1)).join(' ');
    let line = svg.firstChild;
    if (!line) { line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline'); svg.appendChild(line); }
    line.setAttribute('points', pts);
  }

  // ---- Prometheus text -> { name: [{ labels, value }] } ----
  function parseMetrics(text) {
    const out = {};
    for (const line of text.split('\\n')) {
      if (line === '' || line[0] === '#') continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{(.*)\\})?\\s+(\\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      if (m[3]) for (const p of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\\]|\\\\.)*)"/g)) labels[p[1]] = p[2].replace(/\\\\(.)/g, '$1');
      (out[m[1]] ||= []).push({ labels, value: Number(m[4]) });
    }
    return out;
  }
  const sum = (m, name, pick) => (m[name] || []).filter((s) => !pick || pick(s.labels)).reduce((a, s) => a + s.value, 0);
  const has = (m, name) => Array.isArray(m[name]);
  function rate(name, pick) {
    if (!prev || !has(cur.m, name)) return null;
    const dt = (cur.t - prev.t) / 1000;
    return dt > 0 ? Math.max(0, sum(cur.m, name, pick) - sum(prev.m, name, pick)) / dt : null;
  }
  /** Percentile of the requests between the two samples, from a histogram's cumulative buckets (summed over labels). */
  function quantile(base, q) {
    if (!prev || !has(cur.m, base + '_bucket')) return null;
    const buckets = new Map();
    for (const s of cur.m[base + '_bucket']) buckets.set(s.labels.le, (buckets.get(s.labels.le) || 0) + s.value);
    for (const s of prev.m[base + '_bucket'] || []) buckets.set(s.labels.le, (buckets.get(s.labels.le) || 0) - s.value);
    const les = [...buckets.keys()].sort((a, b) => (a === '+Inf' ? 1 : b === '+Inf' ? -1 : Number(a) - Number(b)));
    const total = buckets.get('+Inf') || 0;
    if (total <= 0) return null;
    const want = q * total;
    let lower = 0, below = 0;
    for (const le of les) {
      const count = buckets.get(le);
      if (count >= want) {
        if (le === '+Inf') return lower;
        const upper = Number(le);
        const inBucket = count - below;
        return inBucket <= 0 ? upper : lower + (upper - lower) * ((want - below) / inBucket);
      }
      below = count;
      lower = le === '+Inf' ? lower : Number(le);
    }
    return lower;
  }
  function findHistogram(m, words) {
    return Object.keys(m).filter((n) => n.endsWith('_bucket')).map((n) => n.slice(0, -7)).find((n) => words.every((w) => n.includes(w)));
  }

  // ---- one sample ----
  let cur = null;
  function render(frame) {
    cur = { t: frame.t, m: parseMetrics(frame.metrics) };
    const st = frame.status;
    $('instance').textContent = 'pid ' + st.pid + ' · up ' + fmt(st.uptime, 0) + ' s · ' + st.listenStrategy + ' · native ' + (st.native && st.native.native ? 'on' : 'off');
    renderConfig(st.config);

    const rps = rate('portico_requests_total');
    const errs = rate('portico_requests_total', (l) => (l.class || l.status_class || l.status || '').startsWith('5'));
    $('rps').textContent = fmt(rps);
    $('errs').textContent = fmt(errs);
    push('rps', rps || 0);
    push('errs', errs || 0);
    const hist = findHistogram(cur.m, ['request', 'duration']);
    const p = hist ? [0.5, 0.95, 0.99].map((q) => quantile(hist, q)) : [null, null, null];
    $('lat').textContent = hist ? p.map(ms).join(' / ') : 'no histogram';
    push('lat', p[2] || 0);
    const conns = has(cur.m, 'portico_connections_open') ? sum(cur.m, 'portico_connections_open') : st.connections;
    $('conns').textContent = fmt(conns);
    push('conns', conns);
    $('tunnels').textContent = fmt(st.tunnels);
    push('tunnels', st.tunnels);
    // handshakes: a counter if there is one, else the count of the handshake-time histogram
    const tlsName = Object.keys(cur.m).find((n) => /^portico_tls_handshakes?_total$/.test(n)) || (has(cur.m, 'portico_tls_handshake_seconds_count') ? 'portico_tls_handshake_seconds_count' : undefined);
    const tls = tlsName ? rate(tlsName) : null;
    const tlsErr = rate('portico_tls_handshake_errors_total');
    $('tls').textContent = (tls === null ? '-' : fmt(tls)) + ' (' + fmt(tlsErr) + ')';
    push('tls', tls || 0);

    const classes = [...new Set((cur.m.portico_requests_total || []).map((s) => s.labels.class || s.labels.status_class || s.labels.status || ''))].sort();
    table('statuses', ['class', 'total', 'per second'], classes.map((c) => {
      const pick = (l) => (l.class || l.status_class || l.status || '') === c;
      return [{ text: c, cls: c.startsWith('5') ? 'bad' : c.startsWith('4') ? 'warn' : '' }, fmt(sum(cur.m, 'portico_requests_total', pick)), fmt(rate('portico_requests_total', pick))];
    }));
    renderRoutes();
    table('listeners', ['address', 'port', 'tls', 'backlog'], (st.listeners || []).map((l) => [l.address, l.port, l.tls ? 'yes' : 'no', l.backlog]));
    renderUpstreams(st);
    table('workers', ['id', 'pid', 'state', 'up (s)', 'restarts', 'config', 'connections', 'tunnels', 'fds', 'event-loop lag', 'heap', 'RSS'], (st.workers || []).map((w) => [
      w.id, w.pid === null ? '-' : w.pid, { text: w.state, cls: w.state === 'ready' || w.state === 'running' ? 'ok' : 'warn' }, fmt(w.uptime, 0), w.restarts, w.generation,
      w.connections === undefined ? '-' : w.connections, w.tunnels === undefined ? '-' : w.tunnels, w.fds ? w.fds.open + ' / ' + w.fds.limit : '-',
      lagOf(w), bytes(perWorker('portico_worker_heap_used_bytes', w.id)), bytes(perWorker('portico_worker_resident_bytes', w.id)),
    ]));
    prev = cur;
  }
  /** A worker's gauge from /metrics (label worker="ID"), or undefined. */
  function perWorker(name, id) {
    const s = (cur.m[name] || []).find((x) => x.labels.worker === String(id));
    return s ? s.value : undefined;
  }
  function lagOf(w) {
    const p99 = perWorker('portico_worker_event_loop_delay_p99_seconds', w.id);
    return p99 === undefined ? '-' : 'p99 ' + ms(p99);
  }
  function bytes(n) { return n === undefined || n === null ? '-' : n >= 1 << 30 ? (n / (1 << 30)).toFixed(2) + ' GiB' : (n / (1 << 20)).toFixed(1) + ' MiB'; }
  function renderRoutes() {
    const name = Object.keys(cur.m).find((n) => (cur.m[n] || []).some((s) => s.labels.route !== undefined) && /requests_total$/.test(n));
    if (!name) { table('routes', ['route', 'requests/s'], []); return; }
    const routes = [...new Set(cur.m[name].map((s) => s.labels.route))].sort();
    table('routes', ['route', 'requests', 'per second'], routes.map((r) => [r, fmt(sum(cur.m, name, (l) => l.route === r)), fmt(rate(name, (l) => l.route === r))]));
  }
  function renderConfig(c) {
    const p = $('config');
    p.replaceChildren(el('h2', 'Config'));
    p.appendChild(el('div', c.file + ' · generation ' + c.generation + ' · loaded ' + c.loadedAt + ' · reloads ' + c.reloads.ok + ' ok, ' + c.reloads.failed + ' failed'));
    const r = c.lastReload;
    if (r) {
      p.appendChild(el('div', 'last reload ' + r.at + ': ' + (r.ok ? 'ok, ' + r.summary : 'FAILED: ' + r.error), r.ok ? 'ok' : 'bad'));
      if (!r.ok && r.errors && r.errors.length) p.appendChild(el('div', r.errors.join('\\n'), 'errors'));
    }
  }
  function renderUpstreams(st) {
    const box = $('upstreams');
    box.replaceChildren();
    for (const [name, targets] of Object.entries(st.upstreams || {})) {
      box.appendChild(el('h3', name));
      const t = el('table');
      t.id = 'upstream-' + name;
      box.appendChild(t);
      const health = (st.health && st.health[name]) || [];
      table(t.id, ['target', 'available', 'health check', 'passive', 'draining', 'active', 'open', 'idle', ''], targets.map((x) => {
        const h = health.find((y) => y.target === x.target) || {};
        const a = h.active;
        const check = a ? { text: (a.healthy ? 'up' : 'down') + (a.lastReason ? ' (' + a.lastReason + ')' : ''), cls: a.healthy ? 'ok' : 'bad' } : 'none';
        const passive = h.passive && h.passive.downInWorkers && h.passive.downInWorkers.length ? { text: 'out in ' + h.passive.downInWorkers.length + ' worker(s)', cls: 'bad' } : 'ok';
        const button = el('button', h.draining ? 'undrain' : 'drain');
        button.dataset.upstream = name;
        button.dataset.target = x.target;
        button.dataset.action = h.draining ? 'undrain' : 'drain';
        button.addEventListener('click', onDrain);
        return [x.target, { text: x.available ? 'yes' : 'no', cls: x.available ? 'ok' : 'bad' }, check, passive, h.draining ? { text: 'yes', cls: 'warn' } : 'no', x.active, x.open, x.idle, button];
      }));
    }
  }

  // ---- drain / undrain: the admin API, with the token when one is set ----
  const tokenInput = $('token');
  tokenInput.value = sessionStorage.getItem('portico-admin-token') || '';
  tokenInput.addEventListener('change', () => sessionStorage.setItem('portico-admin-token', tokenInput.value));
  async function onDrain(ev) {
    const b = ev.currentTarget;
    const { upstream, target, action } = b.dataset;
    const headers = { 'X-Portico-Admin': '1' };
    if (tokenInput.value) headers.Authorization = 'Bearer ' + tokenInput.value;
    b.disabled = true;
    try {
      const res = await fetch('/upstreams/' + encodeURIComponent(upstream) + '/targets/' + encodeURIComponent(target) + '/' + action, { method: 'POST', headers });
      const text = await res.text();
      $('action').textContent = res.ok ? action + ' ' + upstream + ' ' + target + ': done' : action + ' ' + upstream + ' ' + target + ': ' + res.status + ' ' + text.trim();
      $('action').className = res.ok ? 'note ok' : 'note bad';
    } catch (err) {
      $('action').textContent = action + ' failed: ' + err;
      $('action').className = 'note bad';
    } finally {
      b.disabled = false;
    }
  }

  // ---- the stream ----
  const events = new EventSource('/dashboard/events');
  events.onopen = () => { $('live').textContent = 'live'; $('live').className = 'badge on'; };
  events.onerror = () => { $('live').textContent = 'reconnecting'; $('live').className = 'badge off'; };
  events.onmessage = (e) => {
    render(JSON.parse(e.data));
    window.__porticoSamples = (window.__porticoSamples || 0) + 1;
  };
})();
`;
