import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { handled, killAll, ROOT, STAGES, testFabric, waitFor } from '../fabric/agent-process.js';
import { startLocalRedis } from '../support/servers.js';

/** The ACL rule the README gives for one namespace's agents, read from the README itself so the two cannot drift. */
function readmeAclRule(namespace: string, password: string): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const line = /^\s*(ACL SETUSER sf-NAMESPACE .*)$/m.exec(readme)?.[1];
  if (line === undefined) throw new Error('README.md gives no ACL SETUSER rule for a namespace');
  return line.replaceAll('NAMESPACE', namespace).replace('PASSWORD', password).split(/\s+/).slice(1);
}

describe('the README’s Redis ACL rule confines one namespace’s agents to their own keys', () => {
  let server: Awaited<ReturnType<typeof startLocalRedis>>;
  let admin: Redis;
  const password = 'acl-pw-0123456789';

  beforeAll(async () => {
    server = await startLocalRedis();
    admin = new Redis(server.url);
  });
  afterEach(async () => {
    await killAll();
  });
  afterAll(async () => {
    admin.disconnect();
    await server.stop();
  });

  it('agents and stagectl status work under it; nothing outside the namespace is reachable', async () => {
    const f = await testFabric('redis://unused');
    const [, ...rule] = readmeAclRule(f.namespace, password);
    await admin.call('ACL', 'SETUSER', ...rule);
    const url = `redis://sf-${f.namespace}:${password}@127.0.0.1:${server.port}/0`;
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 1000000000 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out} }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`);
    const agents = [f.agent(topology, 'a', { REDIS_URL: url }), f.agent(topology, 'b', { REDIS_URL: url })];
    await waitFor(() => handled(out).length >= 500, '500 events, under the namespace’s user', 30_000);
    expect(handled(out).slice(0, 500)).toEqual(Array.from({ length: 500 }, (_, i) => i));
    for (const a of agents) expect(a.stderr).not.toMatch(/NOPERM/);
    const status = () => {
      const r = spawnSync(process.execPath, [join(ROOT, 'packages/cli/dist/main.js'), 'status', '--json', '--namespace', f.namespace], {
        env: { ...process.env, REDIS_URL: url },
        encoding: 'utf8',
      });
      if (r.status !== 0) throw new Error(`stagectl status exited ${r.status}: ${r.stderr}`);
      return (JSON.parse(r.stdout) as { nodes: { node: string; up: boolean }[] }).nodes.map((n) => [n.node, n.up]);
    };
    await waitFor(() => status().length === 2, 'both nodes in stagectl status, read under the namespace’s user');
    expect(status()).toEqual([
      ['a', true],
      ['b', true],
    ]);
    // Under that user: another namespace's keys, every key, the server itself are out of reach.
    const confined = new Redis(url);
    try {
      const refused = async (command: string, ...args: (string | number)[]) => {
        const error = await confined.call(command, ...args).catch((e: Error) => e);
        expect(error instanceof Error ? error.message : String(error), `${command} ${args.join(' ')}`).toMatch(/^NOPERM/);
      };
      await refused('XADD', 'sf:other:inbox:counter@a', '*', 'm', 'x');
      await refused('SET', 'sf:other:hb:a', 'x');
      await refused('GET', 'sf:other:status:a');
      await refused('XREADGROUP', 'GROUP', 'sf', 'a', 'STREAMS', 'sf:other:inbox:counter@a', '>');
      await refused('SET', 'bull:default:x', 'x');
      await refused('KEYS', '*');
      await refused('SCAN', '0');
      await refused('FLUSHALL');
      await refused('CONFIG', 'GET', 'maxmemory');
      await refused('CLIENT', 'KILL', 'ID', '1');
      await refused('EVAL', 'return 1', '0');
      await refused('PUBLISH', 'x', 'y');
      await refused('ACL', 'LIST');
      expect(await confined.get(`sf:${f.namespace}:hb:a`)).toMatch(/"node":"a"/);
    } finally {
      confined.disconnect();
    }
  });
});
