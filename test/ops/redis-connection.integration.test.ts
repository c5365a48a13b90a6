import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { handled, killAll, ROOT, STAGES, testFabric, waitFor } from '../fabric/agent-process.js';
import { freePort, startLocalRedis } from '../support/servers.js';

const STAGECTL = join(ROOT, 'packages/cli/dist/main.js');
/** A password with every character a URL must encode, as operators get them from secret stores. */
const PASSWORD = 'p@ss:w/rd%?#';
const ENCODED = encodeURIComponent(PASSWORD);
const WRONG = 'Wr0ng@Secret-123';

/** Runs stagectl to its end (or kills it after `timeoutMs`); returns what it printed. */
function stagectl(args: string[], env: Record<string, string>, timeoutMs = 20_000) {
  return new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(process.execPath, [STAGECTL, ...args], { cwd: ROOT, env: { ...process.env, ...env } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

function expectNoCredential(text: string): void {
  for (const secret of [PASSWORD, ENCODED, WRONG, encodeURIComponent(WRONG)]) expect(text).not.toContain(secret);
}

afterEach(async () => {
  await killAll();
});

describe('Redis connection strings: TLS, database number, ACL user, encoded credentials; nothing leaked', () => {
  let server: Awaited<ReturnType<typeof startLocalRedis>>;
  let admin: Redis;
  let tlsPort: number;
  let certFile: string;

  beforeAll(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sf-tls-'));
    certFile = join(dir, 'cert.pem');
    const keyFile = join(dir, 'key.pem');
    execFileSync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ]);
    tlsPort = await freePort();
    // The plain port stays for this test's own setup; agents and stagectl use the TLS port.
    server = await startLocalRedis([
      '--tls-port',
      String(tlsPort),
      '--tls-cert-file',
      certFile,
      '--tls-key-file',
      keyFile,
      '--tls-ca-cert-file',
      certFile,
      '--tls-auth-clients',
      'no',
    ]);
    admin = new Redis(server.url);
    await admin.acl('SETUSER', 'app', 'on', `>${PASSWORD}`, '~*', '&*', '+@all');
    await admin.acl('SETUSER', 'default', 'off');
  });

  afterAll(async () => {
    admin.disconnect();
    await server.stop();
  });

  const tlsUrl = (db: number, password = ENCODED) => `rediss://app:${password}@127.0.0.1:${tlsPort}/${db}`;
  const tlsEnv = () => ({ NODE_EXTRA_CA_CERTS: certFile });

  async function adminOn(db: number): Promise<Redis> {
    const client = new Redis({
      host: '127.0.0.1',
      port: tlsPort,
      tls: { ca: readFileSync(certFile) },
      username: 'app',
      password: PASSWORD,
      db,
    });
    await client.ping();
    return client;
  }

  it('a fabric over rediss:// with an ACL user, an encoded password and a database number; stagectl status reads it', async () => {
    const f = await testFabric(tlsUrl(3));
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 300 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out} }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`);
    const agents = [f.agent(topology, 'a', tlsEnv()), f.agent(topology, 'b', tlsEnv())];
    await waitFor(() => handled(out).length >= 300, 'every event over TLS', 30_000);
    const db3 = await adminOn(3);
    try {
      expect(await db3.exists(`sf:${f.namespace}:hb:a`)).toBe(1);
    } finally {
      db3.disconnect();
    }
    // Each node publishes its status with a beat; the producer's node may have finished (its stage did) by then.
    const nodes = async () => {
      const status = await stagectl(['status', '--json', '--namespace', f.namespace], { REDIS_URL: tlsUrl(3), ...tlsEnv() });
      expect(status.code, status.out).toBe(0);
      return (JSON.parse(status.out) as { nodes: { node: string }[] }).nodes.map((n) => n.node);
    };
    await waitFor(async () => (await nodes()).length === 2, 'both nodes in stagectl status, over TLS');
    expect(await nodes()).toEqual(['a', 'b']);
    for (const a of agents) expectNoCredential(a.stderr);
  });

  it('the BullMQ task store over the same URL: TLS, database 5, ACL user and encoded password', async () => {
    const env = { REDIS_URL: tlsUrl(5), ...tlsEnv() };
    const enqueued = await stagectl(['enqueue', 'greet', '--args', '{"who":"Lucy"}', '--store', 'bullmq'], env);
    expect(enqueued.code, enqueued.out).toBe(0);
    const counts = await stagectl(['tasks', '--json', '--store', 'bullmq'], env);
    expect(counts.code, counts.out).toBe(0);
    expect(JSON.parse(counts.out)).toEqual(expect.arrayContaining([{ queue: 'default', state: 'waiting', count: 1 }]));
    const db5 = await adminOn(5);
    try {
      expect((await db5.keys('bull:default:*')).length).toBeGreaterThan(0);
    } finally {
      db5.disconnect();
    }
  });

  it('a wrong password is in no log line, error message or CLI output', async () => {
    const f = await testFabric(tlsUrl(3, encodeURIComponent(WRONG)));
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 10 }, nodes: [a] }
`);
    // Redis refuses the password: the agent says so and exits 1 (it has nothing to retry with).
    const agent = f.agent(topology, 'a', tlsEnv());
    expect(await agent.exited).toBe(1);
    expect(agent.stderr).toMatch(/WRONGPASS/);
    expectNoCredential(agent.stderr);
    const env = { REDIS_URL: tlsUrl(3, encodeURIComponent(WRONG)), ...tlsEnv() };
    for (const args of [
      ['status', '--namespace', f.namespace],
      ['tasks', '--store', 'bullmq'],
    ]) {
      const r = await stagectl(args, env);
      expect(r.code, r.out).toBe(1);
      expect(r.out).toMatch(/WRONGPASS/);
      expectNoCredential(r.out);
    }
    // A URL that does not parse is named without its password.
    const bad = await stagectl(['status'], { REDIS_URL: `redis://app:${encodeURIComponent(WRONG)}@127.0.0.1:notaport` });
    expect(bad.code).toBe(2);
    expect(bad.out).toMatch(/REDIS_URL/);
    expectNoCredential(bad.out);
  });
});
