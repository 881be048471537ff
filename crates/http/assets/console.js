// paxsql web console: runs SQL through the node's HTTP API and shows the
// cluster as the node serving this page sees it. Plain browser JavaScript,
// no build step; everything the server sends is shown with textContent,
// never parsed as HTML.
'use strict';

/** How often the cluster panel refreshes, and how long one refresh may take. */
const REFRESH_MS = 1500;
const REFRESH_TIMEOUT_MS = 3000;
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

function showSummary(status) {
  const g = (status.groups || [])[0] || {};
  const leader = g.leader === null || g.leader === undefined ? 'none yet' : `node ${g.leader}`;
  $('node-summary').textContent =
    `node ${status.node_id} · ${g.role || 'unknown role'} · leader: ${leader} · engine ${status.engine}`;
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
  const body = $('groups').tBodies[0];
  body.replaceChildren();
  for (const g of status.groups || []) {
    const tr = body.insertRow();
    tr.appendChild(cell(g.group, 'num'));
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
