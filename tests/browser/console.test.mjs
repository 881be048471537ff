// The web console in a real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core; no browser is downloaded).
//
//   node console.test.mjs http://127.0.0.1:4001/console /tmp/console.png [DATA_GROUPS]
//
// Runs CREATE / INSERT / SELECT through the page, checks the result cells,
// checks that a failing statement shows the node's error text, waits for
// the cluster panel to refresh by itself, asserts that the page logged no
// errors, and saves a screenshot. With DATA_GROUPS above 1 (a cluster
// started with --groups DATA_GROUPS) it also checks the Shards panel: each
// group with its leader, the ranges of the tables written, a split, and a
// table name shown as text; otherwise that the panel stays hidden. Exits 0
// when everything held, 1 with the reason on stderr otherwise. CHROMIUM
// overrides the browser's path.
//
// crates/server/tests/console.rs starts a cluster and runs this script.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, screenshotPath, groupsArg] = process.argv.slice(2);
const dataGroups = groupsArg === undefined ? 1 : Number(groupsArg);
if (!url || !screenshotPath || !Number.isInteger(dataGroups) || dataGroups < 1) {
  console.error('usage: node console.test.mjs CONSOLE_URL SCREENSHOT_PATH [DATA_GROUPS]');
  process.exit(2);
}
const sharded = dataGroups > 1;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  console.error(`no Chromium at ${executablePath}: apt-get install -y chromium (or set CHROMIUM)`);
  process.exit(2);
}

/** Fails the test with `message` unless `cond` holds. */
function check(cond, message) {
  if (!cond) throw new Error(message);
}

function sameJson(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  check(a === e, `${what}: got ${a}, want ${e}`);
}

const userDataDir = mkdtempSync(join(tmpdir(), 'paxsql-chromium-'));
const problems = [];
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1400, height: 720 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(20000);
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });

  const response = await page.goto(url);
  check(response && response.ok(), `GET ${url}: ${response && response.status()}`);

  // The cluster panel fills itself: three nodes, this one with its indices.
  await page.waitForFunction(() => document.querySelectorAll('#nodes tbody tr').length === 3);
  const self = page.locator('#nodes tr.self');
  await self.waitFor();
  check(/^\d+$/.test(await self.locator('td.decided').innerText()), 'decided index of this node');
  check(/^\d+$/.test(await self.locator('td.applied').innerText()), 'applied index of this node');
  const reachable = await page.locator('#nodes tbody tr td:nth-child(3)').allInnerTexts();
  sameJson(reachable, ['yes', 'yes', 'yes'], 'reachable column');
  const roles = await page.locator('#nodes tbody tr td:nth-child(4)').allInnerTexts();
  check(roles.filter((r) => r === 'leader').length === 1, `one leader among ${roles}`);
  const decidedBefore = Number(await self.locator('td.decided').innerText());

  /** The Shards panel's ranges table: [table, start, end, group, leader, rows] per row. */
  const rangeRows = () =>
    page.locator('#ranges tbody tr').evaluateAll((rows) =>
      rows.map((r) => [0, 2, 3, 4, 5, 7].map((i) => r.cells[i]?.textContent)),
    );

  if (sharded) {
    // The metadata group and each data group, each with a leader.
    await page.locator('#shards-panel').waitFor({ state: 'visible' });
    await page.waitForFunction(
      (n) => {
        const rows = [...document.querySelectorAll('#shard-groups tbody tr')];
        return rows.length === n && rows.every((r) => /^node \d+$/.test(r.cells[2].textContent));
      },
      dataGroups + 1,
    );
    const holds = await page.locator('#shard-groups tbody tr td:nth-child(2)').allInnerTexts();
    sameJson(holds, ['metadata', ...Array(dataGroups).fill('data')], 'what each group holds');
    const groupIds = await page.locator('#shard-groups tbody tr td:nth-child(1)').allInnerTexts();
    sameJson(groupIds, [...Array(dataGroups + 1).keys()].map(String), 'group ids');
    sameJson(await rangeRows(), [['no tables yet', undefined, undefined, undefined, undefined, undefined]], 'no ranges yet');
  } else {
    // A single-group cluster: the panel stays hidden, /shards is not asked.
    await page.waitForFunction(() => Number(document.querySelector('#cluster-panel').dataset.refreshes) >= 2);
    check(await page.locator('#shards-panel').isHidden(), 'the Shards panel is hidden on a single-group cluster');
  }

  /** Types `sql`, picks `level`, clicks Run, and waits for every result. */
  async function run(sql, level) {
    await page.selectOption('#level', level);
    await page.fill('#sql', sql);
    await page.click('#run');
    await page.waitForFunction(() => !document.querySelector('#results').classList.contains('running')
      && !document.querySelector('#run').disabled
      && document.querySelectorAll('#results .result').length > 0);
    return page.locator('#results .result');
  }

  // CREATE and INSERT (two statements in one go, written at this node).
  let results = await run(
    "CREATE TABLE fruit (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL);\n" +
      "INSERT INTO fruit (name, price) VALUES ('apple', 0.5), ('banana; ripe', NULL);",
    'linearizable',
  );
  sameJson(await results.locator('.exec').allInnerTexts(), ['0 rows affected', '2 rows affected'], 'writes');
  check((await results.locator('.error').count()) === 0, 'no error for the writes');

  // SELECT: the header and the cells.
  results = await run('SELECT id, name, price FROM fruit ORDER BY id;', 'leader');
  check((await results.count()) === 1, 'one result for one SELECT');
  sameJson(await results.locator('table.rows th').allInnerTexts(), ['id', 'name', 'price'], 'header');
  const cells = await results.locator('table.rows tbody tr').evaluateAll((rows) =>
    rows.map((r) => [...r.cells].map((c) => c.textContent)),
  );
  sameJson(cells, [['1', 'apple', '0.5'], ['2', 'banana; ripe', 'NULL']], 'cells');
  sameJson(await results.locator('.count').innerText(), '2 rows', 'row count');

  // An error: the node's message, shown in place of a result; the other
  // statements still run.
  results = await run("SELECT * FROM nope;\nSELECT count(*) AS n FROM fruit", 'local');
  check((await results.count()) === 2, 'two results');
  const error = await results.nth(0).locator('.error').innerText();
  check(error.includes('no such table: nope'), `error text: ${error}`);
  sameJson(
    await results.nth(1).locator('table.rows tbody td').allInnerTexts(),
    ['2'],
    'the statement after the failing one',
  );
  check((await page.locator('#run-state').innerText()).includes('1 failed'), 'run state counts the failure');

  if (sharded) {
    // The table's one range, with its rows counted, on a data group.
    await page.waitForFunction(() =>
      [...document.querySelectorAll('#ranges tbody tr')].some(
        (r) => r.cells[0].textContent === 'fruit' && r.cells[7].textContent === '2',
      ),
    );
    let fruit = (await rangeRows()).filter((r) => r[0] === 'fruit');
    check(fruit.length === 1, `one range of fruit: ${JSON.stringify(fruit)}`);
    check(fruit[0][1] === '−∞' && fruit[0][2] === '+∞', `fruit's range is unbounded: ${JSON.stringify(fruit)}`);
    check(Number(fruit[0][3]) >= 1 && Number(fruit[0][3]) <= dataGroups, `fruit's group: ${fruit[0][3]}`);
    check(/^node \d+$/.test(fruit[0][4]), `fruit's leader: ${fruit[0][4]}`);

    // A split shows as two ranges; a table name is shown as text, not HTML.
    results = await run(
      'ALTER TABLE fruit SPLIT AT VALUES (2);\nCREATE TABLE "<b>bold</b>" (id INTEGER PRIMARY KEY);',
      'linearizable',
    );
    check((await results.locator('.error').count()) === 0, 'no error for the split and the odd table');
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('#ranges tbody tr')];
      return rows.length === 3 && rows.filter((r) => r.cells[0].textContent === 'fruit').length === 2;
    });
    fruit = (await rangeRows()).filter((r) => r[0] === 'fruit');
    sameJson(fruit.map((r) => [r[1], r[2], r[5]]), [['−∞', '2', '1'], ['2', '+∞', '1']], "fruit's ranges after the split");
    const names = (await rangeRows()).map((r) => r[0]).sort();
    sameJson(names, ['<b>bold</b>', 'fruit', 'fruit'], 'table names as text');
    check((await page.locator('#shards-panel b').count()) === 0, 'a table name became HTML');
  } else {
    // The panel keeps refreshing by itself: it sees the writes' log entries.
    await page.waitForFunction(
      (before) => Number(document.querySelector('#nodes tr.self td.decided').textContent) >= before + 2,
      decidedBefore,
    );
  }
  const refreshes = Number(await page.locator('#cluster-panel').getAttribute('data-refreshes'));
  await page.waitForFunction(
    (n) => Number(document.querySelector('#cluster-panel').dataset.refreshes) > n + 1,
    refreshes,
  );

  // Something to look at in the screenshot.
  await run("SELECT id, name, price FROM fruit ORDER BY id;\nSELECT * FROM nope;", 'linearizable');
  await page.screenshot({ path: screenshotPath, fullPage: true });

  check(problems.length === 0, `the page had problems:\n  ${problems.join('\n  ')}`);
  console.log(`console test passed; screenshot at ${screenshotPath}`);
} catch (e) {
  console.error(`console test FAILED: ${e.message}`);
  if (problems.length) console.error(`also seen:\n  ${problems.join('\n  ')}`);
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
