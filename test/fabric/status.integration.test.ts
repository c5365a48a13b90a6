import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
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

  it('exits 2 with a clear message when REDIS_URL is not set', () => {
    const env = { ...process.env };
    delete env.REDIS_URL;
    const r = spawnSync(process.execPath, [join(ROOT, 'packages/cli/dist/main.js'), 'status'], { env, encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('status reads the fabric from Redis: set REDIS_URL');
  });
});
