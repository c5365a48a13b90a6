import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { join } from 'node:path';
import { redisKeys } from '@stagefabric/fabric';
import type { TaskStore } from '@stagefabric/tasks';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import { Redis } from 'ioredis';
import pg from 'pg';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type AgentProcess, killAll, ROOT, testFabric, waitFor } from '../fabric/agent-process.js';
import { freePort } from '../support/servers.js';

const redisUrl = inject('redisUrl');
const databaseUrl = inject('databaseUrl');
const TOKEN = `console-token-${randomUUID()}`;
const EVIL = '<img src=x onerror="window.__pwned=1">';
const SHOTS = join(ROOT, 'docs/console');
const CHOCOLATES = join(ROOT, 'examples/chocolates/stages.js');
const HANDLERS = join(ROOT, 'test/console/handlers.mjs');

let browser: Browser;
let store: TaskStore;
let schema: string;
let kitchen: AgentProcess;
let packing: AgentProcess;
let base: string;
let namespace: string;
/** Signed in with the token. */
let operator: BrowserContext;
/** Never signed in. */
let visitor: BrowserContext;

/** A page that fails the test on any dialog: escaped markup opens none. */
async function open(context: BrowserContext, path: string): Promise<Page> {
  const page = await context.newPage();
  page.on('dialog', (dialog) => {
    throw new Error(`a dialog opened: ${dialog.message()}`);
  });
  await page.goto(`${base}${path}`);
  return page;
}

/**
 * Closes a page once its last navigation has loaded. Chromium can drop a close
 * that races a navigation's commit (crbug.com/536385539), and page.close()
 * then never returns: a click that submits a form resolves at the commit.
 */
async function close(...pages: Page[]): Promise<void> {
  for (const page of pages) {
    await page.waitForLoadState('load');
    await page.close();
  }
}

const failedTasks = () => store.list({ state: 'error', limit: 1000 });

beforeAll(async () => {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--headless',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  schema = `sf_console_${randomUUID().slice(0, 8)}`;
  store = new PostgresTaskStore({ url: databaseUrl, schema });
  await store.migrate();
  const f = await testFabric(redisUrl);
  namespace = f.namespace;
  // The chocolates pipeline over two hosts (the maker in the kitchen, wrapper and boxer in the packing room), made to run
  // for the whole test, beside a task drain of two queues in the packing room; the console is served by the packing agent.
  const topology = await f.topology(`
tasks: { handlers: ${HANDLERS}, schema: ${schema} }
stages:
  maker: { module: ${CHOCOLATES}, args: { total: 1000000000 }, restart: transient, nodes: [kitchen] }
  wrapper:
    module: ${CHOCOLATES}
    args: { msPerChocolate: 5 }
    nodes: [packing]
    subscribe: [{ to: maker, maxDemand: 6, minDemand: 3, cancel: temporary }]
  boxer: { module: ${CHOCOLATES}, args: { msPerBox: 40 }, nodes: [packing], subscribe: [{ to: wrapper, maxDemand: 6, minDemand: 3 }] }
  tasks: { module: stagefabric:task-producer, args: { queue: default, pollIntervalMs: 200 }, nodes: [packing] }
  runner: { module: stagefabric:task-runner, nodes: [packing], subscribe: [{ to: tasks, maxDemand: 10 }] }
  other-tasks: { module: stagefabric:task-producer, args: { queue: other, pollIntervalMs: 200 }, nodes: [packing] }
  other-runner: { module: stagefabric:task-runner, nodes: [packing], subscribe: [{ to: other-tasks, maxDemand: 10 }] }
`);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const env = { DATABASE_URL: databaseUrl, STAGEFABRIC_HEARTBEAT_MS: '300' };
  kitchen = f.agent(topology, 'kitchen', env);
  packing = f.agent(topology, 'packing', { ...env, STAGEFABRIC_CONSOLE_PORT: String(port), STAGEFABRIC_CONSOLE_TOKEN: TOKEN });
  await waitFor(() => packing.logs('console listening').length === 1, 'the console to listen', 60_000);

  // A drain: most tasks succeed; some fail on their only attempt, with an error worth reading.
  await store.enqueue(
    Array.from({ length: 30 }, (_, n) =>
      n % 10 === 3
        ? { name: 'work', args: { n, failOnce: true, error: `mail server refused recipient #${n}` }, options: { maxAttempts: 1 } }
        : { name: 'work', args: { n } },
    ),
  );
  await waitFor(async () => (await store.countWhere({ state: 'success' })) === 27, 'the drain to finish', 30_000);

  operator = await browser.newContext();
  visitor = await browser.newContext();
  // A step that cannot happen fails naming itself, well inside the test's own timeout.
  for (const context of [operator, visitor]) context.setDefaultTimeout(20_000);
  const signIn = await open(operator, '/sign-in');
  await signIn.fill('input[name=token]', TOKEN);
  await signIn.click('button[type=submit]');
  await signIn.waitForURL(`${base}/tasks`);
  await close(signIn);
  mkdirSync(SHOTS, { recursive: true });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await killAll();
  await store?.close();
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await admin.end();
});

describe('web console in a browser (chromium), served by an agent', () => {
  it('draws the live stages on their nodes and the subscriptions with their rates and demand, the bottleneck marked', async () => {
    const page = await open(visitor, '/fabric');
    for (const [stage, node] of [
      ['maker', 'kitchen'],
      ['wrapper', 'packing'],
      ['boxer', 'packing'],
      ['tasks', 'packing'],
      ['runner', 'packing'],
    ])
      await expect(page.locator(`svg g.stage[data-stage="${stage}"][data-node="${node}"]`).count()).resolves.toBe(1);
    const belt = page.locator('svg g.subscription[data-producer="maker@kitchen"][data-consumer="wrapper@packing"]');
    const packingLine = page.locator('svg g.subscription[data-producer="wrapper@packing"][data-consumer="boxer@packing"]');
    await expect(belt.count()).resolves.toBe(1);
    await expect(packingLine.count()).resolves.toBe(1);
    // Live: the page is updated over server-sent events, and the belt shows the chocolates flowing.
    await waitFor(
      async () => /^[1-9]\d*\/s · demand \d+$/.test((await belt.locator('text').textContent()) ?? ''),
      'the belt to show events per second',
    );
    await waitFor(async () => (await page.locator('#fabric-live[data-updated]').count()) === 1, 'a live update');
    // The bottleneck is the stage holding a backlog when the status is sampled: on a loaded machine, fewer samples catch one.
    await waitFor(async () => (await page.locator('svg g.stage[data-bottleneck="true"]').count()) === 1, 'a bottleneck marked', 45_000);
    expect(await page.locator('svg g.node[data-node="kitchen"] rect.band.down').count()).toBe(0);
    await page.screenshot({ path: join(SHOTS, 'fabric.png'), fullPage: true });
    await close(page);
  }, 120_000);

  it("lists failed tasks by filter; a failed task's page shows its error and attempts; retry from the page runs it again to success", async () => {
    const [failed] = await failedTasks();
    if (failed === undefined) throw new Error('the drain left no failed task');
    const id = failed.id;
    const list = await open(operator, `/tasks?state=error&error=${encodeURIComponent('refused recipient')}`);
    await expect(list.locator('#task-list tbody tr').count()).resolves.toBe(3);
    await expect(list.locator('#queues tr[data-queue="default"]').textContent()).resolves.toContain('27');
    await waitFor(async () => (await list.locator('#queues svg.spark').count()) === 1, 'the rate sparkline, live');
    await list.screenshot({ path: join(SHOTS, 'tasks.png'), fullPage: true });
    await list.click(`#task-list a[href="/task?id=${id}"]`);
    await list.waitForURL(`${base}/task?id=${id}`);
    const error = (failed.args as { error: string }).error;
    await expect(list.locator('#last-error').textContent()).resolves.toBe(error);
    await expect(list.locator('#attempts tbody tr').count()).resolves.toBe(1);
    await expect(list.locator('#attempts tbody tr').first().textContent()).resolves.toMatch(/1\s*error\s*[\d.]+ m?s[\s\S]*packing\//);
    await list.screenshot({ path: join(SHOTS, 'task.png'), fullPage: true });

    await list.click('#retry');
    await expect(list.locator('.note').textContent()).resolves.toContain(`back to waiting with its attempts reset`);
    await list.click('#confirm');
    await list.waitForURL(`${base}/task?id=${id}&done=retry&n=1`);
    await expect(list.locator('#notice').textContent()).resolves.toContain('Retried');
    // The page follows the task live until it has run again.
    await waitFor(async () => (await list.locator('#task-state').textContent()) === 'success', 'the retried task to succeed on the page');
    await expect(list.locator('#attempts tbody tr').count()).resolves.toBe(2);
    expect((await store.get(id))?.state).toBe('success');
    const done = packing.logs('console action').find((l) => l.action === 'retry');
    expect(done).toMatchObject({ task: id, changed: 1, by: { remote: '127.0.0.1', token: expect.stringMatching(/^[0-9a-f]{12}$/) } });
    expect(packing.stderr).not.toContain(TOKEN);
    await close(list);
  });

  it('retry by filter says how many tasks it will touch, then retries exactly those', async () => {
    const page = await open(operator, `/tasks?state=error&name=work`);
    await page.click('text=Retry failed or cancelled of these…');
    await expect(page.locator('h1').textContent()).resolves.toBe('Retry 2 tasks');
    await expect(page.locator('.note').textContent()).resolves.toContain('state error, name work');
    await page.click('#confirm');
    await expect(page.locator('#notice').textContent()).resolves.toBe('Retried 2 tasks.');
    await waitFor(async () => (await store.countWhere({ state: 'success' })) === 30, 'every task to succeed');
    await close(page);
  });

  it('pausing a queue from the console stops its claims while other queues run; resuming lets them go on', async () => {
    const page = await open(operator, '/tasks');
    await page.click('#queues tr[data-queue="default"] a.button');
    await expect(page.locator('h1').textContent()).resolves.toBe('Pause queue default');
    await page.click('#confirm');
    await expect(page.locator('#notice').textContent()).resolves.toContain('Queue default paused');
    expect(await store.paused()).toEqual(['default']);
    const [held] = await store.enqueue([{ name: 'work', args: { paused: true } }]);
    const [passing] = await store.enqueue([{ name: 'work', options: { queue: 'other' } }]);
    // The same agent claims and runs the later task of another queue: the paused one is skipped, not stuck.
    await waitFor(async () => (await store.get(passing?.id as string))?.state === 'success', 'the other queue to run');
    expect((await store.get(held?.id as string))?.state).toBe('waiting');
    await waitFor(async () => (await page.locator('#queues tr[data-queue="default"] .state.paused').count()) === 1, 'paused shown');
    await page.click('#queues tr[data-queue="default"] a.button');
    await expect(page.locator('h1').textContent()).resolves.toBe('Resume queue default');
    await page.click('#confirm');
    await waitFor(async () => (await store.get(held?.id as string))?.state === 'success', 'the held task to run once resumed');
    await close(page);
  }, 120_000);

  it('task args, errors and names from the wire holding HTML are shown as text, never as markup', async () => {
    const [evil] = await store.enqueue([
      { name: 'work', args: { failOnce: true, error: `bad input ${EVIL}`, note: EVIL }, options: { maxAttempts: 1 } },
    ]);
    await waitFor(async () => (await store.get(evil?.id as string))?.state === 'error', 'the task to fail');
    // A status snapshot is read from Redis, not trusted: a node and a stage named with markup.
    const redis = new Redis(redisUrl);
    const keys = redisKeys(namespace);
    const node = `<b>${EVIL}</b>`;
    const stage = {
      name: '<img src=x>',
      kind: 'consumer',
      eventsIn: 0,
      eventsOut: 0,
      mailbox: 0,
      bufferLength: 0,
      bufferCapacity: -1,
      downstream: [],
      upstream: [],
    };
    await redis.set(keys.heartbeat(node), 'i1', 'PX', 60_000);
    await redis.set(keys.status(node), JSON.stringify({ node, incarnation: 'i1', at: Date.now(), stages: [stage] }), 'PX', 60_000);
    // Where a node registers as it beats, so status readers find it.
    await redis.zadd(keys.nodes, Date.now(), node);
    try {
      const task = await open(operator, `/task?id=${evil?.id}`);
      await expect(task.locator('#task-args').textContent()).resolves.toContain(`"note": "${EVIL.replaceAll('"', '\\"')}"`);
      await expect(task.locator('#last-error').textContent()).resolves.toBe(`bad input ${EVIL}`);
      expect(await task.locator('img').count()).toBe(0);
      const list = await open(operator, '/tasks?state=error');
      await expect(list.locator('#task-list').textContent()).resolves.toContain(`bad input ${EVIL}`);
      expect(await list.locator('img').count()).toBe(0);
      const fabric = await open(operator, '/fabric');
      await waitFor(async () => (await fabric.locator('table td', { hasText: node }).count()) > 0, 'the crafted node listed');
      await expect(fabric.locator('svg text.title', { hasText: '<img src=x>' }).count()).resolves.toBe(1);
      expect(await fabric.locator('img, b').count()).toBe(0);
      expect(await fabric.evaluate('window.__pwned')).toBeUndefined();
      await close(task, list, fabric);
    } finally {
      await redis.del(keys.heartbeat(node), keys.status(node));
      await redis.zrem(keys.nodes, node);
      redis.disconnect();
    }
  });

  it('a dead letter opens to its reason and its bytes', async () => {
    const redis = new Redis(redisUrl);
    try {
      // A malformed entry in an inbox: the node moves it to the dead-letter stream.
      await redis.xadd(redisKeys(namespace).inbox('boxer@packing'), '*', 'm', `not msgpack ${EVIL}`);
    } finally {
      redis.disconnect();
    }
    const page = await open(visitor, '/fabric');
    const letter = page.locator('#fabric-live a[href^="/fabric/dead-letters/"]').first();
    await waitFor(async () => (await letter.count()) === 1, 'the dead letter listed, live');
    await letter.click();
    await page.waitForURL(/\/fabric\/dead-letters\/\d+-\d+$/);
    await expect(page.locator('dl.facts').textContent()).resolves.toContain('boxer@packing');
    expect(((await page.locator('dl.facts dd.bad').textContent()) ?? '').length).toBeGreaterThan(0);
    const bytes = (await page.locator('pre').textContent()) ?? '';
    // The raw entry is its fields (m, then the value), sixteen bytes a line: hex, then the printable text.
    expect(bytes).toContain('6d 6e 6f 74 20 6d 73 67 70');
    expect(bytes).toContain('mnot msgpack <im');
    expect(await page.locator('img').count()).toBe(0);
    await close(page);
  });

  it('an action without the token is refused: no buttons, and the server answers 403 to every way of asking', async () => {
    const [failed] = await store.enqueue([{ name: 'work', args: { failOnce: true }, options: { maxAttempts: 1 } }]);
    const id = failed?.id as string;
    await waitFor(async () => (await store.get(id))?.state === 'error', 'the task to fail');
    const page = await open(visitor, `/task?id=${id}`);
    expect(await page.locator('#retry').count()).toBe(0);
    await expect(page.locator('header .who').textContent()).resolves.toContain('Sign in to act');
    const confirm = await visitor.request.get(`${base}/confirm?action=retry&id=${id}`);
    expect(confirm.status()).toBe(403);
    expect((await visitor.request.post(`${base}/actions/retry`, { form: { id } })).status()).toBe(403);
    expect(
      (await visitor.request.post(`${base}/actions/retry`, { form: { id }, headers: { authorization: 'Bearer wrong' } })).status(),
    ).toBe(403);
    // Signed in, but the form token missing, or the form posted from another site: refused too.
    expect((await operator.request.post(`${base}/actions/retry`, { form: { id } })).status()).toBe(403);
    const formToken = await (async () => {
      const p = await open(operator, `/confirm?action=retry&id=${id}`);
      const value = await p.locator('input[name=form_token]').getAttribute('value');
      await close(p);
      return value as string;
    })();
    const crossSite = await operator.request.post(`${base}/actions/retry`, {
      form: { id, form_token: formToken },
      headers: { origin: 'http://evil.example' },
    });
    expect(crossSite.status()).toBe(403);
    const signIn = await visitor.request.post(`${base}/sign-in`, { form: { token: 'not-the-token' } });
    expect(signIn.status()).toBe(403);
    expect((await store.get(id))?.state).toBe('error');
    const refused = packing.logs('console action refused').filter((l) => l.action === 'retry');
    expect(refused.map((l) => l.refused)).toEqual([
      'not signed in: no valid token or session',
      'not signed in: no valid token or session',
      'form token missing or wrong',
      'request from another origin',
    ]);
    for (const l of refused) expect(l.by).toMatchObject({ remote: '127.0.0.1' });
    // The token itself never reaches a log line.
    expect(packing.stderr).not.toContain(TOKEN);
    // With the header, the same request is done.
    const bearer = await visitor.request.post(`${base}/actions/retry`, {
      form: { id },
      headers: { authorization: `Bearer ${TOKEN}` },
      maxRedirects: 0,
    });
    expect(bearer.status()).toBe(303);
    await waitFor(async () => (await store.get(id))?.state === 'success', 'the retried task to succeed');
    await close(page);
  });

  it('shows a node killed with SIGKILL as down', async () => {
    const page = await open(visitor, '/fabric');
    await kitchen.kill('SIGKILL');
    await waitFor(
      async () => (await page.locator('svg g.node[data-node="kitchen"] rect.band.down').count()) === 1,
      'the kitchen drawn down, live',
    );
    await expect(page.locator('tr[data-node="kitchen"] .state').textContent()).resolves.toBe('down');
    await close(page);
  });
});

describe('stagectl console', () => {
  it('serves the fabric and the tasks on its own, on 127.0.0.1, read-only without a token', async () => {
    const port = await freePort();
    const schema = `sf_console_${randomUUID().slice(0, 8)}`;
    const own = new PostgresTaskStore({ url: databaseUrl, schema });
    await own.migrate();
    const [task] = await own.enqueue([{ name: 'report', args: { html: EVIL } }]);
    const child = spawn(
      process.execPath,
      [join(ROOT, 'packages/cli/dist/main.js'), 'console', '--port', String(port), '--schema', schema],
      {
        env: { ...process.env, REDIS_URL: redisUrl, DATABASE_URL: databaseUrl, STAGEFABRIC_CONSOLE_TOKEN: '' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    try {
      await waitFor(() => stdout.includes(`console at http://127.0.0.1:${port}`), 'the console to listen');
      const page = await fetch(`http://127.0.0.1:${port}/task?id=${task?.id}`);
      expect(page.status).toBe(200);
      expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
      const text = await page.text();
      expect(text).toContain('&lt;img src=x onerror=');
      expect(text).not.toContain('<img');
      expect(text).toContain('<span class="muted">read-only</span>');
      expect(text).not.toContain('Retry…');
      expect((await fetch(`http://127.0.0.1:${port}/fabric`)).status).toBe(200);
      const refused = await fetch(`http://127.0.0.1:${port}/actions/cancel`, {
        method: 'POST',
        body: new URLSearchParams({ id: task?.id as string }),
        headers: { authorization: 'Bearer ' },
      });
      expect(refused.status).toBe(403);
      expect((await own.get(task?.id as string))?.state).toBe('waiting');
      // Another name for this host (a page elsewhere rebinding its own name to 127.0.0.1) is not answered.
      const rebound = await new Promise<number | undefined>((resolve, reject) =>
        httpGet({ host: '127.0.0.1', port, path: '/tasks', headers: { host: 'attacker.example' } }, (res) => {
          res.resume();
          resolve(res.statusCode);
        }).on('error', reject),
      );
      expect(rebound).toBe(403);
    } finally {
      const exited = child.exitCode !== null || child.signalCode !== null;
      child.kill('SIGTERM');
      if (!exited) await new Promise((r) => child.once('exit', r));
      await own.close();
      const admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    }
  });
});
