// paxsql web console: runs SQL through the node's HTTP API and shows the
// cluster as the node serving this page sees it. Plain browser JavaScript,
// no build step; everything the server sends is shown with textContent,
// never parsed as HTML.
'use strict';

/** How often the cluster panel refreshes, and how long one refresh may take. */
const REFRESH_MS = 1500;
const REFRESH_TIMEOUT_MS = 3000;
/** `/shards` counts every range's rows on its group: it may take longer. */
const SHARDS_TIMEOUT_MS = 10000;
/** Each `/shards` read takes a barrier on every data group: not more often. */
const SHARDS_EVERY_MS = 5000;
/** A statement may wait for the node's own timeout (30 s), and a bit more. */
const STATEMENT_TIMEOUT_MS = 35000;

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------- statements

/**
 * Cuts `text` into statements at each `;` outside strings, quoted names
 * and comments; a `CREATE TRIGGER` ends at `END;` (as SQLite's
 * sqlite3_complete decides, and as `paxsql shell` does). A last statement
 * without `;` counts too. Comment-only statements are dropped.
 */
function splitStatements(text) {
  const out = [];
  let start = 0;
  let state = 'code'; // 'code' | 'quote' | 'line' | 'block'
  let close = '';
  let word = '';
  let leading = [];
  let afterEnd = false;
  let content = false;
  const endWord = () => {
    if (!word) return;
    afterEnd = word === 'END';
    if (leading.length < 3) leading.push(word);
    word = '';
  };
  const inTrigger = () =>
    leading[0] === 'CREATE' &&
    (leading[1] === 'TRIGGER' ||
      ((leading[1] === 'TEMP' || leading[1] === 'TEMPORARY') && leading[2] === 'TRIGGER'));
  const push = (end) => {
    const stmt = text.slice(start, end).trim();
    if (content && stmt) out.push(stmt);
    start = end + 1;
    leading = [];
    afterEnd = false;
    content = false;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    const next = text[i + 1];
    if (state === 'quote') {
      if (c === close) state = 'code';
      continue;
    }
    if (state === 'line') {
      if (c === '\n') state = 'code';
      continue;
    }
    if (state === 'block') {
      if (c === '*' && next === '/') {
        state = 'code';
        i++;
      }
      continue;
    }
    if (/[\p{L}\p{N}_$]/u.test(c)) {
      word += c.toUpperCase();
      content = true;
      continue;
    }
    endWord();
    if (c === '-' && next === '-') {
      state = 'line';
      i++;
    } else if (c === '/' && next === '*') {
      state = 'block';
      i++;
    } else if (c === "'" || c === '"' || c === '`' || c === '[') {
      state = 'quote';
      close = c === '[' ? ']' : c;
      content = true;
      afterEnd = false;
    } else if (c === ';') {
      if (!inTrigger() || afterEnd) push(i);
      else afterEnd = false;
    } else if (!/\s/.test(c)) {
      content = true;
      afterEnd = false;
    }
  }
  endWord();
  if (state !== 'quote' && state !== 'block') {
    // Whatever follows the last `;` is a statement too, unless it is blank.
    push(text.length);
  } else {
    const stmt = text.slice(start).trim();
    if (stmt) out.push(stmt);
  }
  return out;
}

// ---------------------------------------------------------------- requests

/** POST `body` to `path`; the parsed JSON, or an Error with the node's message. */
async function postJson(path, body, timeoutMs) {
  return fetchJson(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  }, timeoutMs);
}

async function fetchJson(path, init, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let response;
  try {
    response = await fetch(path, { ...init, signal: controller.signal, cache: 'no-store' });
  } catch (e) {
    const why = e.name === 'AbortError' ? `no answer within ${timeoutMs / 1000} s` : e.message;
    throw new Error(`cannot reach the node: ${why}`);
  } finally {
    clearTimeout(timer);
  }
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (!response.ok) {
    const message = json && typeof json.error === 'string' ? json.error : text.trim();
    throw new Error(`${message} (HTTP ${response.status})`);
  }
  if (json === undefined) throw new Error(`the node answered with something not JSON: ${text}`);
  return json;
}

// --------------------------------------------------------------- rendering

/** An element with a class and text. */
function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A value from a result row as a table cell. BLOBs come as byte arrays. */
function valueCell(v) {
  if (v === null || v === undefined) return el('td', 'null', 'NULL');
  if (typeof v === 'number') return el('td', 'num', String(v));
  if (Array.isArray(v)) {
    const hex = v.map((b) => Number(b).toString(16).padStart(2, '0')).join('');
    return el('td', '', `X'${hex}'`);
  }
  if (typeof v === 'object') return el('td', '', JSON.stringify(v));
  return el('td', '', String(v));
}

function rowsTable(result) {
  const table = el('table', 'rows');
  const head = table.createTHead().insertRow();
  for (const name of result.columns) head.appendChild(el('th', '', String(name)));
  const body = table.createTBody();
  for (const row of result.values || []) {
    const tr = body.insertRow();
    for (const v of row) tr.appendChild(valueCell(v));
  }
  const wrap = el('div', 'table-wrap');
  wrap.appendChild(table);
  return wrap;
}

const plural = (n, noun) => `${n} ${noun}${n === 1 ? '' : 's'}`;

/** One statement's block in the results: its SQL, then a table, a count or the error. */
function resultBlock(sql, outcome, ms) {
  const block = el('div', 'result');
  const head = el('div', 'statement');
  head.appendChild(el('code', '', sql));
  head.appendChild(el('span', 'subtle', `${ms.toFixed(1)} ms`));
  block.appendChild(head);
  if (outcome instanceof Error) {
    block.classList.add('failed');
    block.appendChild(el('div', 'error', outcome.message));
  } else if (typeof outcome.error === 'string') {
    block.classList.add('failed');
    block.appendChild(el('div', 'error', outcome.error));
  } else if (Array.isArray(outcome.columns)) {
    block.appendChild(rowsTable(outcome));
    block.appendChild(el('div', 'subtle count', plural((outcome.values || []).length, 'row')));
  } else if (typeof outcome.rows_affected === 'number') {
    block.appendChild(el('div', 'exec', `${plural(outcome.rows_affected, 'row')} affected`));
  } else {
    block.classList.add('failed');
    block.appendChild(el('div', 'error', `unexpected answer: ${JSON.stringify(outcome)}`));
  }
  return block;
}

// -------------------------------------------------------------------- run

let running = false;

/** Runs every statement in the box, one request each, in order. */
async function runAll() {
  if (running) return;
  const statements = splitStatements($('sql').value);
  const results = $('results');
  if (statements.length === 0) {
    results.replaceChildren(el('p', 'subtle', 'Nothing to run.'));
    return;
  }
  running = true;
  $('run').disabled = true;
  results.replaceChildren();
  results.classList.add('running');
  const level = $('level').value;
  let failed = 0;
  for (const [i, sql] of statements.entries()) {
    $('run-state').textContent = `running ${i + 1} of ${statements.length}…`;
    const started = performance.now();
    let outcome;
    try {
      const body = await postJson(
        `/db/request?level=${encodeURIComponent(level)}&blob_array`,
        [sql],
        STATEMENT_TIMEOUT_MS,
      );
      outcome = (body.results && body.results[0]) || new Error('the node answered without a result');
    } catch (e) {
      outcome = e;
    }
    const block = resultBlock(sql, outcome, performance.now() - started);
    if (block.classList.contains('failed')) failed++;
    results.appendChild(block);
  }
  results.classList.remove('running');
  $('run-state').textContent =
    `${plural(statements.length, 'statement')} run` + (failed ? `, ${failed} failed` : '');
  $('run').disabled = false;
  running = false;
  refreshCluster();
}

// ----------------------------------------------------------------- cluster

let refreshTimer = null;

/** Fills the cluster panel from this node's /status and /nodes. */
async function refreshCluster() {
  clearTimeout(refreshTimer);
  const panel = $('cluster-panel');
  try {
    const [status, nodes] = await Promise.all([
      fetchJson('/status', {}, REFRESH_TIMEOUT_MS),
      fetchJson('/nodes', {}, REFRESH_TIMEOUT_MS),
    ]);
    showSummary(status);
    showNodes(status, nodes);
    showGroups(status);
    refreshShards(status);
    $('cluster-error').hidden = true;
    panel.classList.remove('stale');
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    panel.dataset.refreshes = String(Number(panel.dataset.refreshes || 0) + 1);
  } catch (e) {
    $('cluster-error').textContent = e.message;
    $('cluster-error').hidden = false;
    panel.classList.add('stale');
  }
  refreshTimer = setTimeout(refreshCluster, REFRESH_MS);
}

/** Whether the node hosts several groups (a sharded cluster). */
const isSharded = (status) => status.sharded === true || (status.groups || []).length > 1;

function showSummary(status) {
  const groups = status.groups || [];
  let role;
  if (isSharded(status)) {
    // One leader per group: say which groups this node leads.
    const led = groups.filter((g) => g.role === 'leader').map((g) => g.group);
    const leads = led.length ? `leads ${led.length === 1 ? 'group' : 'groups'} ${led.join(', ')}` : 'leads none';
    role = `${groups.length} groups, ${leads}`;
  } else {
    const g = groups[0] || {};
    const leader = g.leader === null || g.leader === undefined ? 'none yet' : `node ${g.leader}`;
    role = `${g.role || 'unknown role'} · leader: ${leader}`;
  }
  $('node-summary').textContent = `node ${status.node_id} · ${role} · engine ${status.engine}`;
  document.title = `paxsql console · node ${status.node_id}`;
}

const cell = (text, className) => el('td', className || '', text === undefined ? '—' : String(text));

/**
 * One row per node. Indices come from the node's own entry in /nodes when
 * the node reports them (decided_index / applied_index), else from /status
 * for the node serving the page; lag is measured against the highest
 * decided index known.
 */
function showNodes(status, nodes) {
  const own = (status.groups || [])[0] || {};
  const rows = nodes.map((n) => {
    const self = n.id === status.node_id;
    const decided = n.decided_index ?? (self ? own.decided_index : undefined);
    const applied = n.applied_index ?? (self ? own.applied_index : undefined);
    const role = n.role ?? (self ? own.role : n.leader ? 'leader' : n.reachable ? 'follower' : undefined);
    return { n, self, decided, applied, role };
  });
  const known = rows.map((r) => r.decided).filter((d) => typeof d === 'number');
  const top = known.length ? Math.max(...known) : undefined;
  const body = $('nodes').tBodies[0];
  body.replaceChildren();
  for (const r of rows.sort((a, b) => a.n.id - b.n.id)) {
    const tr = body.insertRow();
    tr.dataset.node = String(r.n.id);
    if (r.self) tr.className = 'self';
    tr.appendChild(cell(r.self ? `${r.n.id} (this node)` : r.n.id));
    tr.appendChild(cell(r.n.addr));
    tr.appendChild(cell(r.n.reachable ? 'yes' : 'no', r.n.reachable ? '' : 'unreachable'));
    tr.appendChild(cell(r.role));
    tr.appendChild(cell(r.decided, 'num decided'));
    tr.appendChild(cell(r.applied, 'num applied'));
    const lag = typeof r.applied === 'number' && top !== undefined ? top - r.applied : undefined;
    tr.appendChild(cell(lag, 'num lag'));
  }
}

function showGroups(status) {
  // What each group holds matters only when there are several.
  $('groups').classList.toggle('single', !isSharded(status));
  const body = $('groups').tBodies[0];
  body.replaceChildren();
  for (const g of status.groups || []) {
    const tr = body.insertRow();
    tr.appendChild(cell(g.group, 'num'));
    tr.appendChild(cell(g.kind, 'kind'));
    tr.appendChild(cell(g.role));
    tr.appendChild(cell(g.leader ?? undefined, 'num'));
    tr.appendChild(cell(g.ballot, 'num'));
    tr.appendChild(cell(g.decided_index, 'num'));
    tr.appendChild(cell(g.applied_index, 'num'));
    tr.appendChild(cell(g.decided_index - g.applied_index, 'num'));
    tr.appendChild(cell(g.accepted_index, 'num'));
    tr.appendChild(cell(g.inflight, 'num'));
  }
}

// ------------------------------------------------------------------ shards

let shardsInFlight = false;
let shardsAt = 0;

/**
 * Fills the Shards panel from /shards when the node hosts several groups;
 * hides it otherwise. Runs beside the cluster refresh, one request at a
 * time and at most every SHARDS_EVERY_MS: a slow answer (rows are counted
 * on every range) is not piled upon.
 */
async function refreshShards(status) {
  const panel = $('shards-panel');
  if (!isSharded(status)) {
    panel.hidden = true;
    return;
  }
  if (shardsInFlight || Date.now() - shardsAt < SHARDS_EVERY_MS) return;
  shardsInFlight = true;
  shardsAt = Date.now();
  try {
    const shards = await fetchJson('/shards', {}, SHARDS_TIMEOUT_MS);
    const groups = Array.isArray(shards.groups) ? shards.groups : [];
    const ranges = Array.isArray(shards.ranges) ? shards.ranges : [];
    showShardGroups(groups, ranges, status.node_id);
    showRanges(ranges);
    $('shards-error').hidden = true;
    panel.classList.remove('stale');
    $('shards-updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    panel.dataset.refreshes = String(Number(panel.dataset.refreshes || 0) + 1);
  } catch (e) {
    $('shards-error').textContent = e.message;
    $('shards-error').hidden = false;
    panel.classList.add('stale');
  } finally {
    panel.hidden = false;
    shardsInFlight = false;
  }
}

const leaderText = (leader) => (leader === null || leader === undefined ? 'none yet' : `node ${leader}`);

/** One row per group: what it holds, its leader, how many ranges it has. */
function showShardGroups(groups, ranges, self) {
  const body = $('shard-groups').tBodies[0];
  body.replaceChildren();
  for (const g of groups) {
    const tr = body.insertRow();
    tr.dataset.group = String(g.group);
    if (g.leader === self) tr.className = 'self';
    tr.appendChild(cell(g.group, 'num'));
    tr.appendChild(cell(g.role));
    tr.appendChild(cell(leaderText(g.leader), 'leader'));
    const count = g.role === 'metadata' ? undefined : ranges.filter((r) => r.group === g.group).length;
    tr.appendChild(cell(count, 'num'));
  }
}

/** A range bound; `null` is unbounded. */
const boundCell = (key, unbounded) =>
  key === null || key === undefined ? cell(unbounded, 'num null') : cell(key, 'num');

/** One row per range, by table and start key. */
function showRanges(ranges) {
  const sorted = [...ranges].sort((a, b) => {
    const byTable = String(a.table).localeCompare(String(b.table));
    if (byTable !== 0) return byTable;
    const start = (r) => (r.start_key === null || r.start_key === undefined ? -Infinity : r.start_key);
    const [x, y] = [start(a), start(b)];
    return x === y ? 0 : x < y ? -1 : 1;
  });
  const body = $('ranges').tBodies[0];
  body.replaceChildren();
  if (sorted.length === 0) {
    const td = cell('no tables yet', 'subtle');
    td.colSpan = 9;
    body.insertRow().appendChild(td);
    return;
  }
  for (const r of sorted) {
    const tr = body.insertRow();
    tr.dataset.range = String(r.range_id);
    tr.appendChild(cell(r.table, 'table'));
    tr.appendChild(cell(r.range_id, 'num'));
    tr.appendChild(boundCell(r.start_key, '−∞'));
    tr.appendChild(boundCell(r.end_key, '+∞'));
    tr.appendChild(cell(r.group, 'num group'));
    tr.appendChild(cell(leaderText(r.leader), 'leader'));
    tr.appendChild(cell(r.generation, 'num'));
    tr.appendChild(cell(r.rows, 'num rows'));
    tr.appendChild(cell(r.bytes, 'num'));
  }
}

// ------------------------------------------------------------------ wiring

document.addEventListener('DOMContentLoaded', () => {
  $('run').addEventListener('click', runAll);
  $('sql').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      runAll();
    }
  });
  refreshCluster();
});
