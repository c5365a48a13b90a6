import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PGliteTaskStore } from '@stagefabric/tasks/pglite';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';

const ROOT = resolve(import.meta.dirname, '../../..');
const STAGECTL = join(ROOT, 'packages/cli/dist/main.js');
const running = new Set<ChildProcess>();

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function start(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [STAGECTL, ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  running.add(child);
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (d: Buffer) => (out.stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out.stderr += d.toString()));
  const done = new Promise<Run>((resolveRun) =>
    child.on('close', (code) => {
      running.delete(child);
      resolveRun({ code, ...out });
    }),
  );
  return { child, out, done };
}

const stagectl = (...args: string[]) => start(args).done;

async function topologyFile(text: string, modules: Record<string, string> = {}): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'stagectl-'));
  for (const [name, source] of Object.entries(modules)) await writeFile(join(dir, name), source);
  const file = join(dir, 'topology.yaml');
  await writeFile(file, text);
  return file;
}

afterEach(() => {
  // A test that left an agent running has failed to clean up; kill it so the next test starts clean.
  for (const child of running) child.kill('SIGKILL');
  expect(running.size).toBe(0);
});

describe('stagectl', () => {
  it('runs the counter example: every event printed exactly once, exit 0', async () => {
    const r = await stagectl('up', 'examples/counter');
    expect(r.code).toBe(0);
    const events = [...r.stdout.matchAll(/got (\d+) /g)].map((m) => Number(m[1]));
    expect(events.sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    const printers = new Set([...r.stdout.matchAll(/^(printer\/\d) got/gm)].map((m) => m[1]));
    expect(printers.size).toBeGreaterThan(1);
  });

  it('runs the broadcast variant: every printer gets every event', async () => {
    const r = await stagectl('up', 'examples/counter/broadcast.yaml');
    expect(r.code).toBe(0);
    for (const printer of ['printer/0', 'printer/1', 'printer/2']) {
      const got = [...r.stdout.matchAll(new RegExp(`^${printer} got (\\d+) `, 'gm'))].map((m) => Number(m[1]));
      expect(got).toEqual(Array.from({ length: 10 }, (_, i) => i));
    }
  });

  it('runs the chocolates example: all 60 boxed, never more than the demand in flight on the belt', async () => {
    const r = await stagectl('up', 'examples/chocolates');
    expect(r.code).toBe(0);
    const done = r.stdout.trim().split('\n').at(-1) ?? '';
    const m = /^done: (\d+) chocolates boxed; at most (\d+) were ever between maker and box$/.exec(done);
    expect(m?.[1]).toBe('60');
    // Wrapper maxDemand 6 plus boxer maxDemand 6 bound what can be on the belt.
    expect(Number(m?.[2])).toBeLessThanOrEqual(12);
  });

  it('validate names the file, line and path of a mistake and exits 2; up refuses the same file with 2', async () => {
    const file = await topologyFile(
      [
        'stages:',
        '  counter:',
        '    module: ./stages.js',
        '  printer:',
        '    module: ./stages.js',
        '    subscribe:',
        '      - to: counter',
        '        maxDemand: ten',
        '',
      ].join('\n'),
    );
    const v = await stagectl('validate', file);
    expect(v.code).toBe(2);
    expect(v.stderr).toContain(`${file}:8:20: stages.printer.subscribe[0].maxDemand: Invalid input: expected number, received string`);
    const u = await stagectl('up', file);
    expect(u.code).toBe(2);
    expect(u.stderr).toContain(`${file}:8:20:`);
  });

  it('a YAML alias bomb, deep nesting or several documents exit 2 with FILE:LINE:COLUMN, never an uncaught error', async () => {
    const bomb = await topologyFile(
      [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]',
        'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]',
        'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]',
        'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]',
        'stages:',
        '  x: { module: ./x.js, args: *e }',
        '',
      ].join('\n'),
    );
    const deep = await topologyFile(`stages:\n  x: { module: ./x.js, args: ${'['.repeat(20_000)}${']'.repeat(20_000)} }\n`);
    const several = await topologyFile('stages:\n  x: { module: ./x.js }\n---\nstages: {}\n');
    for (const [file, problem] of [
      [bomb, /alias/i],
      [deep, /YAML/],
      [several, /multiple documents/],
    ] as const) {
      for (const command of ['validate', 'up']) {
        const r = await stagectl(command, file);
        expect(r.code, r.stderr).toBe(2);
        expect(r.stderr).toMatch(new RegExp(`^stagectl: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: `));
        expect(r.stderr).toMatch(problem);
        expect(r.stderr).not.toMatch(/\n\s+at /);
      }
    }
  });

  it('--node and --namespace must be names: anything else exits 2 naming the option and the rule', async () => {
    for (const [option, value] of [
      ['--node', 'a b'],
      ['--node', 'x\u001b[2J'],
      ['--node', 'a@b'],
      ['--node', ''],
      ['--namespace', 'prod:*'],
      ['--namespace', 'a'.repeat(100)],
    ] as const) {
      const r = await stagectl('up', 'examples/counter', option, value);
      expect(r.code, `${option} ${JSON.stringify(value)}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toContain(`${option} `);
      expect(r.stderr).toMatch(/letters, digits/);
    }
  });

  it('validate checks the stage modules too: a missing export is named', async () => {
    const file = await topologyFile(['stages:', '  counter:', '    module: ./stages.mjs', ''].join('\n'), {
      'stages.mjs': 'export const count = { kind: "producer", init: () => ({ state: 0 }) };\n',
    });
    const v = await stagectl('validate', file);
    expect(v.code).toBe(2);
    expect(v.stderr).toContain('stage counter: module ./stages.mjs has no export "counter" (it exports count)');
  });

  it('validate accepts the examples', async () => {
    const v = await stagectl('validate', 'examples/chocolates');
    expect(v.code).toBe(0);
    expect(v.stdout).toContain('valid (3 stages)');
  });

  it('usage errors exit 2; --help exits 0', async () => {
    expect((await stagectl('frobnicate')).code).toBe(2);
    expect((await stagectl('up')).code).toBe(2);
    expect((await stagectl('up', '--bogus', 'x')).code).toBe(2);
    const h = await stagectl('up', '--help');
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('Usage: stagectl up');
  });

  it('SIGTERM stops gracefully and exits 0; a stage never finishing does not block it', async () => {
    const file = await topologyFile(
      [
        'stages:',
        '  ticks:',
        '    module: ./stages.mjs',
        '  sink:',
        '    module: ./stages.mjs',
        '    subscribe: [{ to: ticks, maxDemand: 2 }]',
        '',
      ].join('\n'),
      {
        'stages.mjs': [
          `import { producer, consumer } from ${JSON.stringify(join(ROOT, 'packages/runtime/dist/index.js'))};`,
          'export const ticks = producer({ init: () => ({ state: 0 }), handleDemand: (d, n) => ({ events: Array.from({ length: d }, (_, i) => n + i), state: n + d }) });',
          'export const sink = consumer({ init: () => ({ state: null }), async handleEvents(e) { console.log("handled", e.at(-1)); await new Promise((r) => setTimeout(r, 5)); } });',
          '',
        ].join('\n'),
      },
    );
    const agent = start(['up', file]);
    await waitFor(() => agent.out.stdout.includes('handled'), 'the sink to handle events');
    agent.child.kill('SIGTERM');
    const r = await agent.done;
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('"msg":"signal: stopping gracefully"');
  });

  it('runs the task runner example on the embedded store: 2000 tasks, all succeeded', async () => {
    const r = await stagectl('up', 'examples/tasks');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('enqueued 2000 tasks');
    expect(r.stdout).toMatch(/all 2000 tasks succeeded in [\d.]+ s; states: \[\{"queue":"default","state":"success","count":2000\}\]/);
  }, 60_000);

  it('enqueue, tasks and migrate work on an embedded store; bad input exits 2', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stagectl-tasks-'));
    const env = { DATABASE_URL: '' };
    const run = (...args: string[]) => start(args, env).done;
    expect((await run('migrate', '--data-dir', dir)).stdout).toContain('task store schema is up to date');
    expect((await run('enqueue', 'greet', '--args', '{"who":"Lucy"}', '--unique-key', 'k', '--data-dir', dir)).stdout).toBe(
      'enqueued task 1\n',
    );
    expect((await run('enqueue', 'greet', '--unique-key', 'k', '--data-dir', dir)).stdout).toBe(
      'duplicate of task 1, still pending: nothing added\n',
    );
    const counts = await run('tasks', '--json', '--data-dir', dir);
    expect(JSON.parse(counts.stdout)).toEqual([{ queue: 'default', state: 'waiting', count: 1 }]);
    const cancelled = await run('tasks', 'cancel', '1', '--data-dir', dir);
    expect(cancelled.stdout).toBe('cancelled 1 of 1 (only waiting and running tasks change)\n');
    expect((await run('tasks', 'pause', 'default', '--data-dir', dir)).stdout).toBe('queue default paused: claims take nothing from it\n');
    expect(JSON.parse((await run('tasks', 'resume', 'default', '--json', '--data-dir', dir)).stdout)).toEqual({
      queue: 'default',
      paused: false,
    });
    const listed = await run('tasks', 'list', '--json', '--name', 'greet', '--state', 'cancelled', '--data-dir', dir);
    expect((JSON.parse(listed.stdout) as { id: string }[]).map((t) => t.id)).toEqual(['1']);
    expect(JSON.parse((await run('tasks', 'list', '--json', '--name', 'other', '--data-dir', dir)).stdout)).toEqual([]);
    const badJson = await run('enqueue', 'greet', '--args', '{nope', '--data-dir', dir);
    expect(badJson.code).toBe(2);
    expect(badJson.stderr).toContain('--args is not JSON');
    const noStore = await run('tasks');
    expect(noStore.code).toBe(2);
    expect(noStore.stderr).toContain('set DATABASE_URL to reach the task store');
  }, 60_000);

  it("enqueue --backoff and a file line's options.backoff give the task its own backoff; a bad one exits 2 naming the field", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stagectl-backoff-'));
    const db = join(dir, 'db');
    const run = (...args: string[]) => start(args, { DATABASE_URL: '' }).done;
    expect((await run('enqueue', 'fixed', '--backoff', 'fixed:5000', '--priority', '1', '--data-dir', db)).code).toBe(0);
    expect((await run('enqueue', 'exp', '--backoff', 'exponential:200:9000', '--priority', '2', '--data-dir', db)).code).toBe(0);
    expect(
      (await run('enqueue', 'json', '--backoff', '{"type":"exponential","maxMs":700}', '--priority', '3', '--data-dir', db)).code,
    ).toBe(0);
    const file = join(dir, 'tasks.jsonl');
    await writeFile(
      file,
      ['{"name":"filed","options":{"backoff":{"type":"fixed","delayMs":42},"priority":4}}', '{"name":"flagged"}', ''].join('\n'),
    );
    // The command line's backoff fills in for lines without one; a line's own wins.
    expect((await run('enqueue', '--file', file, '--backoff', 'exponential', '--priority', '5', '--data-dir', db)).stdout).toBe(
      'enqueued 2 tasks\n',
    );
    const badFlag = await run('enqueue', 'x', '--backoff', 'linear:5', '--data-dir', db);
    expect(badFlag.code).toBe(2);
    expect(badFlag.stderr).toContain('--backoff must be fixed:MS, exponential[:BASE_MS[:MAX_MS]] or a JSON object, got linear:5');
    const badValue = await run('enqueue', 'x', '--backoff', 'fixed:-1', '--data-dir', db);
    expect(badValue.code).toBe(2);
    expect(badValue.stderr).toContain('option backoff.delayMs = -1: must be a number of milliseconds from 0 to 2147483647');
    const badFile = join(dir, 'bad.jsonl');
    await writeFile(badFile, ['{"name":"a"}', '{"name":"b","options":{"backoff":{"type":"fixed"}}}', ''].join('\n'));
    const badLine = await run('enqueue', '--file', badFile, '--data-dir', db);
    expect(badLine.code).toBe(2);
    expect(badLine.stderr).toBe(
      `stagectl: ${badFile} line 2: option backoff.delayMs = undefined: must be a number of milliseconds from 0 to 2147483647\nnothing enqueued\n`,
    );
    const store = new PGliteTaskStore({ dataDir: db });
    try {
      const claimed = await store.claim('default', 10, 'test', 30_000);
      expect(claimed.map((t) => [t.name, t.backoff])).toEqual([
        ['fixed', { type: 'fixed', delayMs: 5000 }],
        ['exp', { type: 'exponential', baseMs: 200, maxMs: 9000 }],
        ['json', { type: 'exponential', maxMs: 700 }],
        ['filed', { type: 'fixed', delayMs: 42 }],
        ['flagged', { type: 'exponential' }],
      ]);
    } finally {
      await store.close();
    }
  }, 120_000);

  it('enqueue --file checks every line first: a bad line is named and nothing goes in; stdin stops at it, says how many went in and where to resume', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stagectl-file-'));
    const env = { DATABASE_URL: '' };
    const run = (...args: string[]) => start(args, env).done;
    const good = [
      '{"name":"a","args":{"n":1}}',
      '',
      '{"name":"b","options":{"runAt":"2031-05-01T10:00:00.000Z","priority":3,"queue":"later","uniqueKey":"b1","maxAttempts":2,"timeoutMs":5000}}',
    ];
    const file = join(dir, 'tasks.jsonl');
    await writeFile(file, [...good, '{"name":"c","options":{"maxAttempts":0}}', '{"name":"d"}', ''].join('\n'));
    const refused = await run('enqueue', '--file', file, '--data-dir', join(dir, 'db'));
    expect(refused.code).toBe(2);
    expect(refused.stderr).toBe(`stagectl: ${file} line 4: option maxAttempts = 0: must be an integer from 1 to 1000\nnothing enqueued\n`);
    expect(JSON.parse((await run('tasks', '--json', '--data-dir', join(dir, 'db'))).stdout)).toEqual([]);

    // Every option from the file, runAt included; the command line's options fill in the rest.
    const fixed = join(dir, 'fixed.jsonl');
    await writeFile(fixed, [...good, '{"name":"d","args":[1,2]}', ''].join('\n'));
    const ok = await run('enqueue', '--file', fixed, '--priority', '7', '--data-dir', join(dir, 'db'));
    expect(ok.stdout).toBe('enqueued 3 tasks\n');
    const store = new PGliteTaskStore({ dataDir: join(dir, 'db') });
    try {
      const tasks = await store.list({ limit: 10 });
      const b = tasks.find((t) => t.name === 'b');
      expect(b).toMatchObject({ queue: 'later', priority: 3, maxAttempts: 2, timeoutMs: 5000, uniqueKey: 'b1' });
      expect(b?.runAt.toISOString()).toBe('2031-05-01T10:00:00.000Z');
      expect(tasks.find((t) => t.name === 'd')).toMatchObject({ priority: 7, args: [1, 2] });
    } finally {
      await store.close();
    }

    // Stdin cannot be read twice: what came before the bad line goes in, and the error says where to go on.
    const piped = spawn(process.execPath, [STAGECTL, 'enqueue', '--file', '-', '--data-dir', join(dir, 'db2')], {
      cwd: ROOT,
      env: { ...process.env, ...env },
    });
    let stderr = '';
    piped.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    piped.stdin.end([...good, 'not json', '{"name":"d"}', ''].join('\n'));
    const code = await new Promise((done) => piped.on('close', done));
    expect(code).toBe(2);
    expect(stderr).toMatch(
      /^stagectl: stdin line 4: not JSON: .*\nenqueued 2 tasks before line 4; fix it and resume with --from-line 4\n$/,
    );
    const resumed = join(dir, 'resumed.jsonl');
    await writeFile(resumed, [...good, '{"name":"c"}', '{"name":"d"}', ''].join('\n'));
    expect((await run('enqueue', '--file', resumed, '--from-line', '4', '--data-dir', join(dir, 'db2'))).stdout).toBe('enqueued 2 tasks\n');
    const names = JSON.parse((await run('tasks', 'list', '--json', '--data-dir', join(dir, 'db2'))).stdout) as { name: string }[];
    expect(names.map((t) => t.name).sort()).toEqual(['a', 'b', 'c', 'd']);

    // Retry and cancel by filter, never by accident: a bare cancel is refused.
    expect((await run('tasks', 'cancel', '--data-dir', join(dir, 'db2'))).code).toBe(2);
    expect((await run('tasks', 'cancel', '--name', 'c', '--data-dir', join(dir, 'db2'))).stdout).toBe(
      'cancelled 1 waiting tasks matching name "c"\n',
    );
    expect((await run('tasks', 'retry', '--state', 'cancelled', '--data-dir', join(dir, 'db2'))).stdout).toBe(
      'retrying 1 failed or cancelled tasks matching state "cancelled"\n',
    );
  }, 120_000);

  it('tasks cancel cancels running tasks too; schedules lists each schedule with its next fire', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stagectl-cancel-'));
    const env = { DATABASE_URL: '' };
    const run = (...args: string[]) => start(args, env).done;
    // What an agent would do, on the same embedded store, one process at a time.
    const store = new PGliteTaskStore({ dataDir: dir });
    await store.migrate();
    await store.enqueue([{ name: 'a' }, { name: 'b' }]);
    await store.claim('default', 1, 'node-a', 60_000);
    await store.defineSchedules([{ name: 'nightly', cron: '0 3 * * *', tz: 'Europe/Berlin', task: { name: 'report' } }]);
    await store.close();
    const cancelled = await run('tasks', 'cancel', '1', '2', '3', '--data-dir', dir);
    expect(cancelled.stdout).toBe(
      'cancelled 2 of 3 (only waiting and running tasks change; 1 running: aborted at their next lease extension)\n',
    );
    const listed = await run('schedules', '--data-dir', dir);
    expect(listed.code).toBe(0);
    const [header, row] = listed.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^NAME +CRON +TZ +TASK +BACKFILL +LAST FIRE +NEXT FIRE$/);
    // 03:00 in Berlin is 01:00 or 02:00 UTC.
    expect(row).toMatch(/^nightly +0 3 \* \* \* +Europe\/Berlin +report +0 +- +\d{4}-\d\d-\d\dT0[12]:00:00\.000Z$/);
    expect((await run('schedules', 'remove', 'nightly', '--data-dir', dir)).stdout).toBe('schedule nightly removed\n');
    const bad = await run('schedules', 'frobnicate', '--data-dir', dir);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('schedules: unknown action "frobnicate"');
    // Each command opens the embedded store from its folder: seconds apiece on a loaded machine.
  }, 180_000);
});
