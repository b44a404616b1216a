// The Shoal web UI (docs/observability.md, "The web UI"). Plain JS, no dependencies.
//
// State comes from the agent's JSON API (/v1/nodes, /v1/jobs) and changes arrive on its event
// stream (/v1/events). The stream is read with fetch() rather than EventSource because
// EventSource cannot send the API token, which an agent off loopback requires on every read.
// Every event is applied at once where it says enough (a member's status) and schedules one
// re-read of the state (at most every REFRESH_MS); nothing polls on a timer.
'use strict';

const TOPICS = ['Node', 'Job', 'Placement', 'Attempt', 'Task', 'Service', 'Deployment', 'Stream'];
const REFRESH_MS = 250;        // at most one state re-read this often while events arrive
const FEED_KEEP = 2000;        // events kept for the feed
const FEED_SHOW = 400;         // rows drawn
const AGGREGATE_ABOVE = 150;   // more nodes than this: groups are summarised until opened
const RECONNECT_MS = 1000;
const LEGEND_JOBS = 12;        // jobs named in the map's colour legend
// A drain completes when the draining node writes so; other nodes tell no event of it (their
// tables change, their eligibility does not), so while a drain shows no live task left but is
// not complete, /v1/nodes is re-read this often, at most DRAIN_CHECKS times after an event.
const DRAIN_CHECK_MS = 1000;
const DRAIN_CHECKS = 30;

const S = {
  nodes: [], jobs: [], self: null, events: [], since: null, live: false, versions: null,
  gen: null, view: 'map', job: null, node: null, group: null, opened: new Set(),
  // Per draining node, the most live tasks this page saw it hold during its drain: the
  // denominator of its progress (a page opened mid-drain starts from what it first saw).
  drainSeen: new Map(), drainChecks: 0,
  topics: new Set(TOPICS), text: '', paused: false, all: false,
  // Timings (ms) for the title and bench/ui.py: the first draw with nodes, each draw, and
  // each update (the first undrawn event's arrival → the end of the draw showing it).
  perf: { first: null, draws: [], updates: [], pendingSince: null },
};

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

// Page loads in this tab: a test reads it to know an update came without a reload.
const LOADS = Number(sessionStorage.getItem('shoal-loads') || 0) + 1;
sessionStorage.setItem('shoal-loads', String(LOADS));

// ---- the API, with the token ----------------------------------------------------------

function token() { return sessionStorage.getItem('shoal-token') || ''; }

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h['X-Shoal-Token'] = token();
  return h;
}

function notice(text) {
  const n = $('notice');
  n.hidden = !text;
  n.textContent = text || '';
}

async function api(path, opts) {
  opts = opts || {};
  const r = await fetch(path, Object.assign({}, opts, { headers: headers(opts.headers) }));
  const body = await r.text();
  let json = null;
  try { json = body ? JSON.parse(body) : null; } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const msg = (json && json.error) || body || r.statusText;
    if (r.status === 401 || r.status === 403) notice('The agent refused the request: ' + msg + ' Enter its token above.');
    throw new Error(r.status + ': ' + msg);
  }
  return json;
}

// ---- state --------------------------------------------------------------------------

let refreshTimer = null;
let refreshing = false;
let refreshAgain = false;
let drainTimer = null;         // the one pending re-read while a drain is completing

async function refresh() {
  if (refreshing) { refreshAgain = true; return; }
  refreshing = true;
  try {
    const [nodes, jobs] = await Promise.all([api('/v1/nodes'), api('/v1/jobs')]);
    S.nodes = nodes; S.jobs = jobs;
    if (!S.self) S.self = await api('/v1/agent/self');
    // The open job's versions (its rollouts): re-read with the rest, so events keep them live.
    const open = S.job;
    if (open && jobs.some((j) => j.id === open)) {
      S.versions = { job: open, list: await api('/v1/jobs/' + encodeURIComponent(open) + '/versions') };
    }
    notice('');
  } catch (e) {
    if (!$('notice').textContent) notice('Cannot read the cluster state: ' + e.message);
  } finally {
    refreshing = false;
  }
  noteDrains();
  draw();
  if (refreshAgain) { refreshAgain = false; refreshSoon(); }
  else if (!drainTimer && S.drainChecks < DRAIN_CHECKS &&
           S.nodes.some((n) => drainState(n) === 'draining' && n.drain && n.drain.live_tasks === 0)) {
    S.drainChecks++;
    drainTimer = setTimeout(() => { drainTimer = null; refreshSoon(); }, DRAIN_CHECK_MS);
  }
}

// Remembers, per draining node, the most live tasks seen during its drain.
function noteDrains() {
  for (const n of S.nodes) {
    if (drainState(n) !== 'draining' || !n.drain) { S.drainSeen.delete(n.name); continue; }
    S.drainSeen.set(n.name, Math.max(S.drainSeen.get(n.name) || 0, n.drain.live_tasks));
  }
}

function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, REFRESH_MS);
}

// ---- the event stream ---------------------------------------------------------------

function setLive(on) {
  S.live = on;
  const l = $('live');
  l.textContent = on ? 'live' : 'reconnecting';
  l.className = 'pill ' + (on ? 'on' : 'off');
}

async function stream() {
  // The generation too: after an agent restart, its stream starts again from its oldest event.
  const q = S.since === null ? '' : '?since=' + S.since + '&generation=' + S.gen;
  try {
    const r = await fetch('/v1/events' + q, { headers: headers() });
    if (r.status === 400 && S.since !== null) {
      // The agent restarted (indexes start again): read its whole ring.
      S.since = null;
      setTimeout(stream, 0);
      return;
    }
    if (!r.ok) throw new Error(r.status + ' ' + (await r.text()));
    setLive(true);
    refreshSoon();
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith('data:')) onEvent(JSON.parse(line.slice(5)));
      }
    }
  } catch (e) {
    if (String(e.message).startsWith('40')) notice('The event stream was refused: ' + e.message);
  }
  setLive(false);
  setTimeout(stream, RECONNECT_MS);
}

function onEvent(e) {
  if (e.topic !== 'Stream' || e.type === 'Restarted') S.since = e.index;
  else S.since = Math.max(S.since || 0, e.index);
  S.gen = e.generation;
  if (S.perf.pendingSince === null) S.perf.pendingSince = performance.now();
  S.events.push(e);
  if (S.events.length > FEED_KEEP) S.events.splice(0, S.events.length - FEED_KEEP);
  if (e.topic === 'Node') {
    const n = S.nodes.find((x) => x.name === e.payload.node);
    if (n && e.type === 'StatusChanged') n.status = e.payload.to;
    if (n && e.type === 'Eligibility') n.eligible = e.payload.eligible;
    if (n && e.type === 'DrainComplete' && n.drain) n.drain.complete = true;
  }
  if (e.topic !== 'Stream') { S.drainChecks = 0; refreshSoon(); }
  drawSoon();
}

// ---- drawing ------------------------------------------------------------------------

let drawPending = false;
function drawSoon() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; draw(); });
}

function route() {
  const h = location.hash.replace(/^#\/?/, '');
  const [view, ...rest] = h.split('/');
  S.view = ['map', 'jobs', 'nodes', 'events', 'sim'].includes(view) ? view : 'map';
  // `#/map/all`: every node as a tile, however many.
  S.all = view === 'map' && rest[0] === 'all';
  S.job = view === 'jobs' && rest.length ? decodeURIComponent(rest.join('/')) : null;
  // `#/nodes/NAME`: one node, its drain and the buttons that change it.
  S.node = view === 'nodes' && rest.length ? decodeURIComponent(rest.join('/')) : null;
  if (view === 'nodes' && !S.node) S.view = 'map';
  if (S.job && !(S.versions && S.versions.job === S.job)) refreshSoon();
  draw();
}

function draw() {
  const t0 = performance.now();
  drawViews();
  void document.body.offsetHeight; // count the layout in the draw's time
  const t1 = performance.now();
  const p = S.perf;
  if (S.nodes.length) {
    if (p.first === null) p.first = t1;
    keep(p.draws, t1 - t0);
    if (p.pendingSince !== null) { keep(p.updates, t1 - p.pendingSince); p.pendingSince = null; }
  }
  writeTitle();
}

function keep(list, x) {
  list.push(x);
  if (list.length > 1000) list.shift();
}

function quantile(list, q) {
  if (!list.length) return 0;
  const s = [...list].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.round(q * (s.length - 1)))];
}

function drawViews() {
  const view = S.job ? 'job' : S.node ? 'node' : S.view;
  for (const v of ['map', 'jobs', 'job', 'node', 'events', 'sim']) $('view-' + v).hidden = v !== view;
  const tab = S.view === 'nodes' ? 'map' : S.view;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('on', a.dataset.view === tab);
  if (S.self) $('agent').textContent = 'agent ' + S.self.node.name + ' · cluster ' + S.self.cluster;
  if (view === 'map') drawMap();
  if (view === 'jobs') drawJobs();
  if (view === 'job') drawJob();
  if (view === 'node') drawNode();
  if (view === 'events') drawEvents();
  if (view === 'sim' && S.sim && !S.simDrawn) { $('sim').innerHTML = simReport(S.sim); S.simDrawn = true; }
}

// A short, stable summary of what the page shows, read from the drawn DOM (the browser test
// reads it through the DevTools page list; people see it in the tab).
function writeTitle() {
  const tiles = [...document.querySelectorAll('#map .tile[data-node]')]
    .map((t) => t.dataset.node + ':' + t.dataset.status + (t.dataset.drain ? '/' + t.dataset.drain : '')).sort();
  const tasks = {};
  for (const t of document.querySelectorAll('#map .task[data-job]')) tasks[t.dataset.job] = (tasks[t.dataset.job] || 0) + 1;
  const jobs = Object.keys(tasks).sort().map((j) => j + ':' + tasks[j]);
  const p = S.perf, ms = (x) => Math.round(x * 10) / 10;
  const perf = ' · first_ms=' + ms(p.first || 0) + ' · draw_ms=' + ms(quantile(p.draws, 0.5)) + '/' + ms(quantile(p.draws, 0.99)) +
    '/' + p.draws.length + ' · update_ms=' + ms(quantile(p.updates, 0.5)) + '/' + ms(quantile(p.updates, 0.99)) + '/' + p.updates.length;
  // Past 50 nodes the list would drown the rest: counts only.
  const nodes = tiles.length > 50 ? tiles.length + ' tiles' : tiles.join(',');
  document.title = 'shoal · loads=' + LOADS + ' · live=' + (S.live ? 1 : 0) + ' · events=' + S.events.length +
    ' · nodes=' + nodes + ' · tasks=' + jobs.join(',') + perf;
}

function hue(s) {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
  return (h >>> 0) % 360;
}

// The content security policy forbids style attributes in markup; sizes and colours are set
// through the CSSOM after drawing, from data attributes.
function applyStyles(root) {
  for (const el of root.querySelectorAll('[data-w]')) el.style.width = el.dataset.w + '%';
  for (const el of root.querySelectorAll('[data-hue]')) el.style.background = 'hsl(' + el.dataset.hue + ',55%,55%)';
}

function pct(used, cap) { return cap > 0 ? Math.min(100, Math.round(100 * used / cap)) : 0; }

function meter(label, used, cap, unit) {
  const p = pct(used, cap);
  return '<div class="meter' + (p >= 90 ? ' hot' : '') + '"><b data-w="' + p + '"></b></div>' +
    '<small>' + label + ' ' + used + ' / ' + cap + (unit ? ' ' + unit : '') + ' (' + p + '%)</small>';
}

// A node's ports held by its live tasks, against its advertised range (docs/observability.md,
// "Ports on the map"): `inRange` counts against the range, `outside` are static ports beyond it.
function portsUsed(n, tasks) {
  const r = n.port_range;
  let inRange = 0, outside = 0;
  for (const { t } of tasks || []) {
    for (const p of Object.values(t.ports || {})) {
      if (r && p >= r.first && p <= r.last) inRange++; else outside++;
    }
  }
  return { inRange, outside, size: r ? r.last - r.first + 1 : 0 };
}

function portsMeter(u) {
  if (!u.size) return '<small class="ports">ports ' + (u.inRange + u.outside) + ' in use · range not advertised</small>';
  return '<span class="ports">' + meter('ports', u.inRange, u.size, '') + '</span>' +
    (u.outside ? '<small> +' + u.outside + ' outside the range</small>' : '');
}

// What the map says of a node's drain: 'draining', 'drained' (complete), 'ineligible' (no new
// work, no drain), or '' (eligible). `draining` without `drain` is an ad's flag seen by an
// agent without a scheduler.
function drainState(n) {
  if (n.drain) return n.drain.complete ? 'drained' : 'draining';
  if (n.draining) return 'draining';
  return n.eligible === false ? 'ineligible' : '';
}

function fmtMs(ms) {
  if (ms % 3600000 === 0) return ms / 3600000 + 'h';
  if (ms % 60000 === 0) return ms / 60000 + 'm';
  if (ms % 1000 === 0) return ms / 1000 + 's';
  return ms + 'ms';
}

// `1h`, `5m`, `90s`, `1h30m`, `500ms` → milliseconds; null when it is not a duration.
function parseDuration(text) {
  const t = text.trim();
  if (!/^(\d+(ms|s|m|h|d))+$/.test(t)) return null;
  const unit = { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000 };
  let ms = 0;
  for (const [, n, u] of t.matchAll(/(\d+)(ms|s|m|h|d)/g)) ms += Number(n) * unit[u];
  return ms;
}

function deadlineText(d) {
  return d && d.deadline_ms != null ? 'deadline ' + fmtMs(d.deadline_ms) : 'no deadline';
}

// The drain line of a tile: what is left and, when the page saw more, a bar of what moved.
function drainLine(n) {
  const st = drainState(n);
  if (st !== 'draining' || !n.drain) return '';
  const left = n.drain.live_tasks, seen = Math.max(S.drainSeen.get(n.name) || 0, left);
  const tasks = (k) => k + (k === 1 ? ' task' : ' tasks');
  // The bar only once something moved while the page watched.
  const bar = seen > left ? '<div class="meter drainbar"><b data-w="' + pct(seen - left, seen) + '"></b></div>' : '';
  return '<small class="drainline">' + (!left ? 'no task left, completing' : seen > left ? left + ' of ' + tasks(seen) + ' left'
    : tasks(left) + ' left') + ' · ' + deadlineText(n.drain) + '</small>' + bar;
}

// Live tasks by node: placed, running or starting.
function tasksByNode() {
  const by = new Map();
  for (const j of S.jobs) {
    for (const t of j.tasks) {
      if (!t.node || !['running', 'proposed'].includes(t.state)) continue;
      if (!by.has(t.node)) by.set(t.node, []);
      by.get(t.node).push({ job: j.id, t });
    }
  }
  return by;
}

function groupKeys() {
  const keys = new Set();
  for (const n of S.nodes) for (const k of Object.keys(n.attributes || {})) keys.add(k);
  return [...keys].sort();
}

function drawGroupSelect() {
  const keys = groupKeys();
  // The default waits for the first nodes: `rack` when they carry it.
  if (S.group === null && S.nodes.length) S.group = keys.includes('rack') ? 'rack' : '';
  const sel = $('group');
  const want = ['', ...keys].join('|');
  if (sel.dataset.keys !== want) {
    sel.innerHTML = '<option value="">(none)</option>' + keys.map((k) => '<option>' + esc(k) + '</option>').join('');
    sel.dataset.keys = want;
  }
  sel.value = S.group || '';
}

function nodeTile(n, tasks) {
  const cap = n.resources.capacity, used = n.resources.allocated;
  const drain = drainState(n);
  const dots = (tasks || []).map(({ job, t }) =>
    '<span class="task h-' + esc(t.health) + '" data-job="' + esc(job) + '" data-hue="' + hue(job) +
    '" title="' + esc(job + '[' + t.slot + ']#' + t.attempt + ' ' + t.state + ', ' + t.health) + '"></span>').join('');
  const u = portsUsed(n, tasks);
  return '<div class="tile status-' + esc(n.status) + (drain ? ' drain-' + drain : '') + '" data-key="n:' + esc(n.name) +
    '" data-node="' + esc(n.name) + '" data-status="' + esc(n.status) + '" data-drain="' + drain +
    '" data-ports="' + u.inRange + '/' + u.size + (u.outside ? '+' + u.outside : '') + '">' +
    '<div class="name"><span><a href="#/nodes/' + encodeURIComponent(n.name) + '">' + esc(n.name) + '</a>' +
    (drain ? ' <span class="drain d-' + drain + '">' + drain + '</span>' : '') + '</span>' +
    '<span class="st">' + esc(n.status) + '</span></div>' + drainLine(n) +
    meter('cpu', used.cpu_millicores, cap.cpu_millicores, 'm') +
    meter('mem', used.memory_mib, cap.memory_mib, 'MiB') + portsMeter(u) +
    '<div class="tasks">' + dots + '</div></div>';
}

function aggregateTile(name, nodes, byNode) {
  const counts = { alive: 0, suspect: 0, down: 0, left: 0 };
  const drains = { draining: 0, drained: 0, ineligible: 0 };
  const ports = { inRange: 0, outside: 0, size: 0 };
  let cpu = 0, cpuCap = 0, mem = 0, memCap = 0, tasks = 0;
  for (const n of nodes) {
    counts[n.status] = (counts[n.status] || 0) + 1;
    const d = drainState(n);
    if (d) drains[d]++;
    const u = portsUsed(n, byNode.get(n.name));
    ports.inRange += u.inRange; ports.outside += u.outside; ports.size += u.size;
    cpu += n.resources.allocated.cpu_millicores; cpuCap += n.resources.capacity.cpu_millicores;
    mem += n.resources.allocated.memory_mib; memCap += n.resources.capacity.memory_mib;
    tasks += (byNode.get(n.name) || []).length;
  }
  // The group's edge takes its worst member's colour.
  const worst = counts.down ? 'down' : counts.suspect ? 'suspect' : 'alive';
  return '<div class="tile agg status-' + worst + '" data-key="g:' + esc(name) + '" data-group="' + esc(name) + '">' +
    '<div class="name"><span>' + esc(name) + '</span><span class="st">' + nodes.length + ' nodes</span></div>' +
    '<div class="counts">' + Object.entries(counts).filter(([, c]) => c).map(([s, c]) =>
      '<span class="status-' + s + '"><span class="st">' + s + '</span> ' + c + '</span>').join('') + '</div>' +
    (drains.draining + drains.drained + drains.ineligible ? '<div class="counts">' + Object.entries(drains).filter(([, c]) => c).map(([d, c]) =>
      '<span class="drain d-' + d + '">' + d + ' ' + c + '</span>').join(' ') + '</div>' : '') +
    meter('cpu', cpu, cpuCap, 'm') + meter('mem', mem, memCap, 'MiB') + portsMeter(ports) +
    // One dot per node, coloured by status (ringed when it takes no new work): a down or
    // draining node shows without opening the group.
    '<div class="dots">' + nodes.map((n) => { const d = drainState(n); return '<i class="s-' + esc(n.status) + (d ? ' d-' + d : '') +
      '" title="' + esc(n.name + ' ' + n.status + (d ? ', ' + d : '')) + '"></i>'; }).join('') +
    '</div><div><small>' + tasks + ' tasks · click to open</small></div></div>';
}

function drawMap() {
  drawGroupSelect();
  const byNode = tasksByNode();
  const groups = new Map();
  const many = S.nodes.length > AGGREGATE_ABOVE && !S.all;
  S.nodes.forEach((n, i) => {
    let g = S.group ? ((n.attributes || {})[S.group] ?? '(no ' + S.group + ')') : '';
    // Many nodes and no attribute to group by: blocks of 100 in name order.
    if (!S.group && S.nodes.length > AGGREGATE_ABOVE) g = 'nodes ' + (Math.floor(i / 100) * 100 + 1) + '–' + Math.min(S.nodes.length, Math.floor(i / 100) * 100 + 100);
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(n);
  });
  // The layout: per group, one summary tile or one tile per node, each with its markup.
  const layout = [];
  for (const [g, nodes] of [...groups.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
    const title = g ? '<h3>' + esc(S.group ? S.group + ' = ' + g : g) + '</h3>' : '';
    if (many && !S.opened.has(g)) layout.push({ tiles: [{ key: 'g:' + g, html: aggregateTile(g, nodes, byNode) }] });
    else layout.push({ title, tiles: nodes.map((n) => ({ key: 'n:' + n.name, html: nodeTile(n, byNode.get(n.name)) })) });
  }
  drawTiles($('map'), layout, many);
  // The jobs with the most live tasks name their colour; the rest are counted.
  const live = new Map();
  for (const v of byNode.values()) for (const { job } of v) live.set(job, (live.get(job) || 0) + 1);
  const named = [...live.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, LEGEND_JOBS);
  const legend = $('jobs-legend');
  legend.innerHTML = named.map(([j]) => '<span><i data-hue="' + hue(j) + '"></i>' + esc(j) + '</span>').join('') +
    (live.size > named.length ? '<span class="muted">+' + (live.size - named.length) + ' more jobs</span>' : '');
  applyStyles(legend);
  const alive = S.nodes.filter((n) => n.status === 'alive').length;
  let tasks = 0;
  for (const v of byNode.values()) tasks += v.length;
  const drains = {};
  for (const n of S.nodes) { const d = drainState(n); if (d) drains[d] = (drains[d] || 0) + 1; }
  $('map-summary').textContent = S.nodes.length + ' nodes, ' + alive + ' alive' +
    Object.entries(drains).map(([d, c]) => ', ' + c + ' ' + d).join('') + ' · ' + tasks + ' live tasks · ' + S.jobs.length + ' jobs';
}

// What the map drew last: its layout's shape, and each tile's markup and element. When the
// shape is unchanged (the common case: a status or a task changed), only tiles whose markup
// changed are replaced; a 1,000-tile map then costs a string comparison per tile.
const mapDrawn = { shape: null, html: new Map(), els: new Map() };

function drawTiles(map, layout, many) {
  const tiles = layout.flatMap((l) => l.tiles);
  const shape = JSON.stringify([many, layout.map((l) => [l.title || '', l.tiles.map((t) => t.key)])]);
  if (shape === mapDrawn.shape && map.childElementCount) {
    for (const t of tiles) {
      if (mapDrawn.html.get(t.key) === t.html) continue;
      const holder = document.createElement('div');
      holder.innerHTML = t.html;
      const el = holder.firstElementChild;
      applyStyles(holder);
      mapDrawn.els.get(t.key).replaceWith(el);
      mapDrawn.els.set(t.key, el);
      mapDrawn.html.set(t.key, t.html);
    }
    return;
  }
  const html = layout.map((l) => l.title === undefined ? l.tiles[0].html
    : '<div class="group">' + l.title + '<div class="tiles">' + l.tiles.map((t) => t.html).join('') + '</div></div>').join('');
  map.innerHTML = many ? '<div class="tiles">' + html + '</div>' : html;
  applyStyles(map);
  mapDrawn.shape = shape;
  mapDrawn.html = new Map(tiles.map((t) => [t.key, t.html]));
  mapDrawn.els = new Map([...map.querySelectorAll('[data-key]')].map((el) => [el.dataset.key, el]));
}

function drawJobs() {
  const rows = S.jobs.map((j) => {
    const by = {};
    for (const t of j.tasks) by[t.state] = (by[t.state] || 0) + 1;
    const healthy = j.tasks.filter((t) => t.health === 'healthy').length;
    const d = j.deployment;
    const rollout = d && d.status !== 'complete' ? ' · ' + d.status + (d.status === 'deploying' ? ' ' + d.done + '/' + d.count : '') : '';
    return '<tr><td><a href="#/jobs/' + encodeURIComponent(j.id) + '">' + esc(j.id) + '</a></td><td>' + esc(j.type) +
      '</td><td class="state-' + esc(j.status) + '">' + esc(j.status) + '</td><td>' + esc('v' + j.job_version + rollout) + '</td><td class="num">' + j.count +
      '</td><td class="num">' + (by.running || 0) + '</td><td class="num">' + healthy + '</td><td class="num">' + (by.pending || 0) + '</td></tr>';
  }).join('');
  $('jobs').innerHTML = '<table><thead><tr><th>job</th><th>type</th><th>status</th><th>version</th><th>count</th><th>running</th><th>healthy</th><th>pending</th></tr></thead><tbody>' +
    (rows || '<tr><td colspan="8" class="muted">no jobs</td></tr>') + '</tbody></table>';
}

function drawJob() {
  const j = S.jobs.find((x) => x.id === S.job);
  if (!j) { $('job').innerHTML = '<p>No job ' + esc(S.job) + ' on this agent. <a href="#/jobs">All jobs</a></p>'; return; }
  const rows = j.tasks.map((t) => '<tr><td class="num">' + t.slot + '</td><td class="num">' + (t.attempt ?? '') + '</td><td>' + esc(t.node || '') +
    '</td><td class="state-' + esc(t.state) + '">' + esc(t.state) + (t.exit_code != null ? ' (' + t.exit_code + ')' : '') +
    '</td><td>' + esc(t.health) + (t.health_note ? ': ' + esc(t.health_note) : '') + '</td><td>' +
    esc(t.pending_reason || t.detail || '') + '</td><td>' + esc(Object.entries(t.ports || {}).map(([k, v]) => k + '=' + v).join(' ')) +
    (t.ip ? ' @' + esc(t.ip) : '') + '</td></tr>').join('');
  const recent = S.events.filter((e) => e.payload && e.payload.job === j.id).slice(-20).reverse();
  const result = $('job-result') ? $('job-result').textContent : '';
  $('job').innerHTML = '<h2>' + esc(j.id) + ' <small class="muted">' + esc(j.type) + ', ' + esc(j.status) + ', count ' + j.count +
    ', version ' + j.job_version + ', written ' + esc(new Date(j.version.wall_ms).toISOString()) + '</small></h2>' +
    (j.stopped ? '' : '<p><button id="stop-job">Stop this job</button> <span id="stop-result" class="muted"></span></p>') +
    deploymentLine(j) + '<span id="job-result" class="muted">' + esc(result) + '</span>' +
    '<table><thead><tr><th>slot</th><th>attempt</th><th>node</th><th>state</th><th>health</th><th>pending / detail</th><th>ports</th></tr></thead><tbody>' +
    rows + '</tbody></table>' + versionsTable(j) + '<h3>Recent events of this job (this agent)</h3>' + eventTable(recent);
  const stop = $('stop-job');
  if (stop) stop.onclick = async () => {
    if (!confirm('Stop job ' + j.id + '?')) return;
    try { await api('/v1/jobs/' + encodeURIComponent(j.id), { method: 'DELETE' }); $('stop-result').textContent = 'stopping'; } catch (e) { $('stop-result').textContent = e.message; }
    refreshSoon();
  };
}

// The current deployment of a job with an [update] block: the `job status` line, a progress
// bar of the slots done, and the promote button while the canaries wait for it.
function deploymentLine(j) {
  const d = j.deployment;
  if (!d) return '';
  const waiting = d.status === 'awaiting promotion';
  return '<p id="deploy" class="deploy d-' + esc(d.status.replace(' ', '-')) + '" data-status="' + esc(d.status) +
    '" data-version="' + d.version + '" data-done="' + d.done + '">' + esc(d.summary) +
    ' <progress max="' + d.count + '" value="' + d.done + '"></progress>' +
    (waiting && !j.stopped ? ' <button id="promote">Promote</button>' : '') + '</p>';
}

// The kept versions, newest first: status, slots done, and a revert button on the others.
function versionsTable(j) {
  const list = S.versions && S.versions.job === j.id ? S.versions.list : null;
  if (!list) return '<h3>Versions</h3><p class="muted">reading…</p>';
  const rows = list.slice().reverse().map((v) => '<tr data-version="' + v.version + '" data-status="' + esc(v.status) + '"' +
    (v.current ? ' class="current"' : '') + '><td class="num">' + v.version + '</td><td>' + (v.current ? 'current' : '') +
    '</td><td class="state-' + esc(v.status.split(':')[0]) + '">' + esc(v.status) + (v.stable ? ' · stable' : '') +
    '</td><td class="num">' + v.done + '/' + v.spec.count + '</td><td>' + esc(new Date(v.submitted_ms).toISOString().slice(0, 19).replace('T', ' ')) +
    '</td><td>' + esc(v.node) + '</td><td>' + (v.current || j.stopped ? '' : '<button data-revert="' + v.version + '">Revert to ' + v.version + '</button>') +
    '</td></tr>').join('');
  return '<h3>Versions</h3><table id="versions"><thead><tr><th>version</th><th></th><th>status</th><th>slots done</th>' +
    '<th>submitted (UTC)</th><th>accepted by</th><th></th></tr></thead><tbody>' + rows + '</tbody></table>';
}

// Promote and revert: buttons drawn by drawJob, one handler for the job view.
async function onJobClick(ev) {
  const j = S.jobs.find((x) => x.id === S.job);
  if (!j) return;
  const path = '/v1/jobs/' + encodeURIComponent(j.id);
  let call = null;
  if (ev.target.id === 'promote') call = () => api(path + '/promote', { method: 'POST' });
  const back = ev.target.dataset && ev.target.dataset.revert;
  if (back) {
    if (!confirm('Revert job ' + j.id + ' to version ' + back + '?')) return;
    call = () => api(path + '/revert', { method: 'POST', body: JSON.stringify({ version: Number(back) }), headers: { 'Content-Type': 'application/json' } });
  }
  if (!call) return;
  try { const r = await call(); $('job-result').textContent = r.promoted ? 'promoted' : 'reverted: version ' + r.version; } catch (e) { $('job-result').textContent = e.message; }
  refreshSoon();
}

// One node: what the map shows of it, its drain, its live tasks and this agent's recent Node
// events of it. The buttons are static markup (#node-actions) so that a redraw never loses a
// deadline being typed; only which of them shows changes.
function drawNode() {
  const n = S.nodes.find((x) => x.name === S.node);
  $('node-actions').hidden = !n;
  if (!n) {
    $('node').innerHTML = '<p>No node ' + esc(S.node) + ' in this agent\'s view. <a href="#/map">The map</a></p>';
    $('node-more').innerHTML = '';
    return;
  }
  const tasks = tasksByNode().get(n.name) || [];
  const u = portsUsed(n, tasks);
  const st = drainState(n);
  const cap = n.resources.capacity, used = n.resources.allocated;
  const left = n.drain ? n.drain.live_tasks : 0;
  const drain = n.drain ? (n.drain.complete ? 'complete' : 'draining, ' + left + (left === 1 ? ' live task' : ' live tasks') + ' left') +
    ' · ' + deadlineText(n.drain) : n.draining ? 'its ad says draining (this agent runs no scheduler)' : 'none';
  const row = (k, v) => '<tr><th>' + esc(k) + '</th><td>' + esc(v) + '</td></tr>';
  $('node').innerHTML = '<p class="crumb"><a href="#/map">← map</a></p><h2 id="node-head" data-node="' + esc(n.name) +
    '" data-drain="' + st + '">' + esc(n.name) + ' <small class="status-' + esc(n.status) + '"><span class="st">' + esc(n.status) +
    '</span></small>' + (st ? ' <span class="drain d-' + st + '">' + st + '</span>' : '') + '</h2><table class="kv"><tbody>' +
    row('eligible for new work', n.eligible === false ? 'no' : 'yes') + row('drain', drain) +
    row('cpu', used.cpu_millicores + ' / ' + cap.cpu_millicores + ' m') +
    row('memory', used.memory_mib + ' / ' + cap.memory_mib + ' MiB') +
    row('ports', u.size ? u.inRange + ' in use of ' + u.size + ' (' + n.port_range.first + '–' + n.port_range.last + ')' +
      (u.outside ? ', ' + u.outside + ' static outside the range' : '') : (u.inRange + u.outside) + ' in use, range not advertised') +
    row('generation', n.generation) + row('gossip', n.addr) + row('api', n.http_addr || '') +
    row('attributes', Object.entries(n.attributes || {}).map(([k, v]) => k + '=' + v).join(' ')) +
    '</tbody></table>';
  $('drain-form').hidden = st === 'draining';
  $('undrain').hidden = !n.drain;
  $('eligible-on').hidden = n.eligible !== false;
  $('eligible-off').hidden = n.eligible === false;
  const rows = tasks.map(({ job, t }) => '<tr><td><a href="#/jobs/' + encodeURIComponent(job) + '">' + esc(job) + '</a></td><td class="num">' +
    t.slot + '</td><td class="num">' + (t.attempt ?? '') + '</td><td class="state-' + esc(t.state) + '">' + esc(t.state) + '</td><td>' +
    esc(t.health) + '</td><td>' + esc(Object.entries(t.ports || {}).map(([k, v]) => k + '=' + v).join(' ')) + '</td></tr>').join('');
  const recent = S.events.filter((e) => e.topic === 'Node' && e.payload && e.payload.node === n.name).slice(-20).reverse();
  $('node-more').innerHTML = '<h3>Live tasks on ' + esc(n.name) + '</h3><table><thead><tr><th>job</th><th>slot</th><th>attempt</th>' +
    '<th>state</th><th>health</th><th>ports</th></tr></thead><tbody>' + (rows || '<tr><td colspan="6" class="muted">none</td></tr>') +
    '</tbody></table><h3>Recent Node events of ' + esc(n.name) + ' (this agent)</h3>' + eventTable(recent);
}

// Drain, stop draining and eligibility: `POST /v1/nodes/NAME/drain|eligibility` with the token.
async function onNodeAction(ev) {
  const name = S.node;
  const id = ev.target.id;
  if (!name || !['drain', 'undrain', 'eligible-on', 'eligible-off'].includes(id)) return;
  const out = $('node-result');
  let route = '/eligibility', body;
  if (id === 'drain') {
    let deadline = null;
    if (!$('drain-no-deadline').checked) {
      const text = $('drain-deadline').value;
      deadline = parseDuration(text);
      if (deadline === null) { out.textContent = 'deadline `' + text + '`: write it as 90s, 5m, 1h or 1h30m'; return; }
    }
    if (!confirm('Drain ' + name + ' (' + (deadline === null ? 'no deadline' : 'deadline ' + fmtMs(deadline)) + ')?')) return;
    route = '/drain'; body = { deadline_ms: deadline };
  } else if (id === 'undrain') { route = '/drain'; body = { disable: true }; }
  else body = { eligible: id === 'eligible-on' };
  out.textContent = 'sending…';
  try {
    const r = await api('/v1/nodes/' + encodeURIComponent(name) + route,
      { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
    out.textContent = r.durable ? 'accepted (version ' + r.version + ')' : 'held by this agent only: ' + r.reason;
  } catch (e) { out.textContent = e.message; }
  refreshSoon();
}

function summary(e) {
  const p = e.payload || {};
  const skip = p.task ? ['job', 'incarnation', 'slot', 'attempt', 'placer'] : [];
  return Object.entries(p).filter(([k, v]) => v !== null && !skip.includes(k))
    .map(([k, v]) => k + '=' + (typeof v === 'object' ? JSON.stringify(v) : v)).join(' ');
}

function eventTable(events) {
  return '<table class="events"><tbody>' + events.map((e) => '<tr><td class="num">' + e.index + '</td><td>' +
    new Date(e.time_ms).toISOString().slice(11, 23) + '</td><td class="t-' + esc(e.topic) + '">' + esc(e.topic) + '</td><td>' +
    esc(e.type) + '</td><td>' + esc(summary(e)) + '</td></tr>').join('') + '</tbody></table>';
}

function drawTopics() {
  const box = $('topics');
  if (box.childElementCount) return;
  box.innerHTML = TOPICS.map((t) => '<label class="t-' + t + '"><input type="checkbox" data-topic="' + t + '" checked> ' + t + '</label>').join(' ');
  box.onchange = (ev) => {
    const t = ev.target.dataset.topic;
    if (ev.target.checked) S.topics.add(t); else S.topics.delete(t);
    draw();
  };
}

function drawEvents() {
  drawTopics();
  if (S.paused) return;
  const text = S.text.toLowerCase();
  const shown = [];
  for (let i = S.events.length - 1; i >= 0 && shown.length < FEED_SHOW; i--) {
    const e = S.events[i];
    if (!S.topics.has(e.topic)) continue;
    if (text && !(e.type + ' ' + summary(e)).toLowerCase().includes(text)) continue;
    shown.push(e);
  }
  $('feed').innerHTML = shown.map((e) => '<tr data-index="' + e.index + '"><td class="num">' + e.index + '</td><td>' +
    new Date(e.time_ms).toISOString().slice(11, 23) + '</td><td class="t-' + esc(e.topic) + '">' + esc(e.topic) + '</td><td>' +
    esc(e.type) + '</td><td>' + esc(summary(e)) + '</td></tr>').join('');
  $('event-count').textContent = shown.length + ' shown of ' + S.events.length + ' received from ' +
    (S.self ? S.self.node.name + "'s" : "this agent's") + ' stream (each agent has its own)';
}

// ---- simulation reports -------------------------------------------------------------

// A line chart as SVG markup: `series` of {label, color, points: [[x, y]]}, step-drawn.
function svgChart(title, xLabel, series) {
  const W = 760, H = 260, L = 48, R = 170, T = 24, B = 36;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  if (!xs.length) return '';
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y1 = Math.max(1, ...ys);
  const px = (x) => L + (W - L - R) * (x - x0) / ((x1 - x0) || 1);
  const py = (y) => H - B - (H - T - B) * y / y1;
  let out = '<svg class="chart" viewBox="0 0 ' + W + ' ' + H + '" width="' + W + '" height="' + H + '" xmlns="http://www.w3.org/2000/svg">' +
    '<text x="' + L + '" y="16" font-size="13" font-weight="600">' + esc(title) + '</text>' +
    '<line x1="' + L + '" y1="' + (H - B) + '" x2="' + (W - R) + '" y2="' + (H - B) + '" stroke="#888"/>' +
    '<line x1="' + L + '" y1="' + T + '" x2="' + L + '" y2="' + (H - B) + '" stroke="#888"/>';
  for (let i = 0; i <= 4; i++) {
    const y = y1 * i / 4;
    out += '<text x="' + (L - 6) + '" y="' + (py(y) + 4) + '" font-size="10" text-anchor="end">' + Math.round(y * 10) / 10 + '</text>';
    const x = x0 + (x1 - x0) * i / 4;
    out += '<text x="' + px(x) + '" y="' + (H - B + 14) + '" font-size="10" text-anchor="middle">' + Math.round(x) + '</text>';
  }
  out += '<text x="' + ((L + W - R) / 2) + '" y="' + (H - 4) + '" font-size="11" text-anchor="middle">' + esc(xLabel) + '</text>';
  series.forEach((s, i) => {
    let d = '';
    s.points.forEach((p, j) => {
      d += j === 0 ? 'M' + px(p[0]) + ' ' + py(p[1]) : 'H' + px(p[0]) + 'V' + py(p[1]);
    });
    out += '<path d="' + d + '" fill="none" stroke="' + esc(s.color) + '" stroke-width="1.5"/>' +
      '<rect x="' + (W - R + 12) + '" y="' + (T + i * 18) + '" width="10" height="10" fill="' + esc(s.color) + '"/>' +
      '<text x="' + (W - R + 28) + '" y="' + (T + i * 18 + 9) + '" font-size="11">' + esc(s.label) + '</text>';
  });
  return out + '</svg>';
}

function kv(obj) {
  return '<table class="kv"><tbody>' + Object.entries(obj || {}).map(([k, v]) => '<tr><th>' + esc(k) + '</th><td>' +
    esc(typeof v === 'object' && v !== null ? JSON.stringify(v) : v) + '</td></tr>').join('') + '</tbody></table>';
}

// The report of `shoal simulate` (simulations/src/report.rs): verdict, checkers, the
// members-alive timeline as a chart, counters, detection and scheduling figures.
function simReport(r) {
  if (!r || typeof r !== 'object' || !Array.isArray(r.checks)) {
    return '<p>This is not a report.json of <code>shoal simulate</code> (no <code>checks</code> list).</p>';
  }
  const t = (r.timeline || []).map((s) => [s.t_ms / 1000, s]);
  const pick = (f) => t.map(([x, s]) => [x, f(s)]);
  const chart = svgChart(r.scenario + ': members seen alive', 'simulated time (s)', [
    { label: 'nodes running', color: '#000000', points: pick((s) => s.running) },
    { label: 'min seen alive', color: '#de2d26', points: pick((s) => s.alive_min) },
    { label: 'mean seen alive', color: '#31a354', points: pick((s) => s.alive_mean) },
    { label: 'max seen alive', color: '#3182bd', points: pick((s) => s.alive_max) },
    { label: 'suspect (sum)', color: '#d89b12', points: pick((s) => s.suspect_total) },
  ]);
  const checks = r.checks.map((c) => '<tr><td>' + esc(c.name) + '</td><td class="state-' + (c.status === 'pass' ? 'running' : 'failed') +
    '">' + esc(c.status) + '</td><td>' + esc(c.at_ms ?? '') + '</td><td>' + esc(c.detail) + '</td></tr>').join('');
  return '<h2>' + esc(r.scenario) + ' <small class="muted">seed ' + esc(r.seed) + ', ' + esc(r.nodes) + ' nodes, ' +
    esc(r.duration_ms / 1000) + ' s</small> <span class="verdict state-' + (r.verdict === 'pass' ? 'running' : 'failed') + '">' +
    esc(r.verdict) + '</span></h2><p>' + esc(r.description) + '</p>' +
    (r.first_failure ? '<p class="state-failed">first failure: ' + esc(JSON.stringify(r.first_failure)) + '</p>' : '') +
    '<p>replay: <code>' + esc(r.replay) + '</code></p>' +
    '<h3>Checkers</h3><table><thead><tr><th>checker</th><th>status</th><th>at (ms)</th><th>detail</th></tr></thead><tbody>' + checks + '</tbody></table>' +
    '<h3>Timeline</h3>' + chart +
    ((r.violations || []).length ? '<h3>Violations</h3>' + kv(r.violations) : '') +
    '<h3>Counters</h3>' + kv(r.counters) + '<h3>Failure detection</h3>' + kv(r.detection) +
    (r.scheduling ? '<h3>Scheduling</h3>' + kv(r.scheduling) : '') + '<h3>Network</h3>' + kv(r.network);
}

// ---- wiring -------------------------------------------------------------------------

function wire() {
  $('token').value = token();
  $('auth').onsubmit = (ev) => {
    ev.preventDefault();
    sessionStorage.setItem('shoal-token', $('token').value.trim());
    notice('');
    S.self = null;
    refresh();
  };
  $('group').onchange = () => { S.group = $('group').value; S.opened.clear(); draw(); };
  $('map').onclick = (ev) => {
    const g = ev.target.closest('.agg');
    if (g) { S.opened.add(g.dataset.group); draw(); }
  };
  $('event-text').oninput = () => { S.text = $('event-text').value; draw(); };
  $('job').onclick = onJobClick;
  $('node-actions').onclick = onNodeAction;
  $('pause').onchange = () => { S.paused = $('pause').checked; draw(); };
  $('submit').onclick = async () => {
    const body = $('spec').value.trim();
    const type = body.startsWith('{') ? 'application/json' : 'application/toml';
    try {
      const r = await api('/v1/jobs', { method: 'POST', body, headers: { 'Content-Type': type } });
      $('submit-result').textContent = 'accepted: ' + JSON.stringify(r);
    } catch (e) { $('submit-result').textContent = e.message; }
    refreshSoon();
  };
  $('sim-file').onchange = () => {
    const f = $('sim-file').files[0];
    if (!f) return;
    f.text().then((text) => {
      try { S.sim = JSON.parse(text); } catch (e) { S.sim = { error: e.message }; }
      S.simDrawn = false;
      draw();
    });
  };
  window.onhashchange = route;
}

wire();
route();
refresh();
stream();
