import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { handled, killAll, ROOT, STAGES, testFabric, waitFor } from './agent-process.js';

const redisUrl = inject('redisUrl');
const FAST_BEATS = { STAGEFABRIC_HEARTBEAT_MS: '200' };

interface StatusJson {
  nodes: { node: string; up: boolean; stages: { name: string; kind: string; eventsIn: number }[] }[];
  subscriptions: { producer: string; consumer: string; outstandingDemand: number }[];
  inboxes: { inbox: string; entries: number; pending: number }[];
}

function status(namespace: string): StatusJson {
  const r = spawnSync(process.execPath, [join(ROOT, 'packages/cli/dist/main.js'), 'status', '--json', '--namespace', namespace], {
    env: { ...process.env, REDIS_URL: redisUrl },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`stagectl status exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as StatusJson;
}

afterEach(async () => {
  await killAll();
});

describe('stagectl status', () => {
  it('reports a live three-node fabric as it is, and a node just killed as down', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 100000000 }, nodes: [a] }
  double: { module: ${STAGES}, nodes: [b], subscribe: [{ to: counter, maxDemand: 100 }] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 10 }, nodes: [c], subscribe: [{ to: double, maxDemand: 10 }] }
`);
    f.agent(topology, 'a', FAST_BEATS);
    f.agent(topology, 'b', FAST_BEATS);
    const c = f.agent(topology, 'c', FAST_BEATS);
    await waitFor(() => handled(out).length > 50, 'events at the consumer');
    await waitFor(() => status(f.namespace).nodes.filter((n) => n.up).length === 3, 'three nodes up');
    const live = status(f.namespace);
    expect(live.nodes.map((n) => [n.node, n.up, n.stages.map((s) => `${s.name}:${s.kind}`)])).toEqual([
      ['a', true, ['counter:producer']],
      ['b', true, ['double:producer_consumer']],
      ['c', true, ['recorder:consumer']],
    ]);
    expect(live.subscriptions.map((s) => `${s.consumer} -> ${s.producer}`).sort()).toEqual([
      'double@b -> counter@a',
      'recorder@c -> double@b',
    ]);
    for (const s of live.subscriptions) expect(s.outstandingDemand).toBeGreaterThanOrEqual(0);
    expect(live.inboxes.map((i) => i.inbox).sort()).toEqual(['counter@a', 'double@b', 'recorder@c']);
    // The inbox never holds more than the demand in flight.
    expect(live.inboxes.find((i) => i.inbox === 'recorder@c')?.entries).toBeLessThanOrEqual(10);

    // top: one frame, rates per stage; the stage work waits on (the slow consumer) is the one marked.
    const frame = spawnSync(
      process.execPath,
      [join(ROOT, 'packages/cli/dist/main.js'), 'top', '--once', '--interval-ms', '500', '--namespace', f.namespace],
      {
        env: { ...process.env, REDIS_URL: redisUrl },
        encoding: 'utf8',
      },
    );
    expect(frame.status).toBe(0);
    const lines = frame.stdout.split('\n');
    expect(lines.some((l) => /^STAGE\s+NODE\s+KIND\s+IN\/S\s+OUT\/S\s+BACKLOG\s+BUFFER/.test(l))).toBe(true);
    const recorderLine = lines.find((l) => l.startsWith('recorder'));
    expect(Number(recorderLine?.split(/\s+/)[3])).toBeGreaterThan(0);
    for (const l of lines.filter((x) => x.includes('<- bottleneck'))) expect(l.startsWith('recorder')).toBe(true);

    await c.kill('SIGKILL');
    await waitFor(() => status(f.namespace).nodes.find((n) => n.node === 'c')?.up === false, 'node c reported down');
    const after = status(f.namespace);
    expect(after.nodes.map((n) => [n.node, n.up])).toEqual([
      ['a', true],
      ['b', true],
      ['c', false],
    ]);
  });

  it('survives malformed status entries and prints names with control characters escaped', async () => {
    const f = await testFabric(redisUrl);
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 100000000 }, nodes: [a] }
`);
    f.agent(topology, 'a', FAST_BEATS);
    await waitFor(() => status(f.namespace).nodes.some((n) => n.node === 'a' && n.up), 'node a up');
    const raw = new Redis(redisUrl);
    try {
      const now = Date.now();
      const evil = 'x\u001b[2J\u0007';
      const bad: [string, string][] = [
        ['broken', '{"node": "broken", '],
        ['wrong', JSON.stringify({ node: 'wrong', stages: 'none' })],
        ['huge', JSON.stringify({ node: 'huge', incarnation: 'i', at: now, stages: [{ name: 7 }] })],
        [
          evil,
          JSON.stringify({
            node: evil,
            incarnation: 'i',
            at: now,
            stages: [
              {
                name: 'st\u001b]0;owned\u0007',
                kind: 'producer',
                eventsIn: 0,
                eventsOut: 0,
                mailbox: 0,
                bufferLength: 0,
                bufferCapacity: 1,
                downstream: [],
                upstream: [],
              },
            ],
          }),
        ],
      ];
      for (const [node, value] of bad) {
        await raw.set(`sf:${f.namespace}:status:${node}`, value);
        await raw.zadd(`sf:${f.namespace}:nodes`, now, node);
      }
      const r = spawnSync(process.execPath, [join(ROOT, 'packages/cli/dist/main.js'), 'status', '--namespace', f.namespace], {
        env: { ...process.env, REDIS_URL: redisUrl },
        encoding: 'utf8',
      });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^a\s+up/m);
      // Escaped, never written raw to the terminal.
      expect(r.stdout).toContain('x\\x1b[2J\\x07');
      expect(r.stdout).toContain('st\\x1b]0;owned\\x07');
      // biome-ignore lint/suspicious/noControlCharactersInRegex: none may reach the terminal.
      expect(r.stdout + r.stderr).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f]/);
      // Each malformed entry is named, the rest is shown.
      for (const node of ['broken', 'wrong', 'huge']) expect(r.stderr).toMatch(new RegExp(`status of node ${node} is malformed`));
      const json = status(f.namespace);
      expect(json.nodes.map((n) => n.node).sort()).toEqual(['a', evil].sort());
    } finally {
      raw.disconnect();
    }
  });

  it('exits 2 with a clear message when REDIS_URL is not set', () => {
    const env = { ...process.env };
    delete env.REDIS_URL;
    const r = spawnSync(process.execPath, [join(ROOT, 'packages/cli/dist/main.js'), 'status'], { env, encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('status reads the fabric from Redis: set REDIS_URL');
  });
});
