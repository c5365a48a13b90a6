import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { Packr } from 'msgpackr';
import { type AgentProcess, handled, killAll, STAGES, testFabric } from '../fabric/agent-process.js';
import { freePort } from '../support/servers.js';
import { waitFor } from '../support/wait-for.js';
import { Random } from './random.js';

/**
 * The wire fuzz: a three-node pipeline (counter on a, double on b, recorder
 * on c) runs while seeded random and mutated entries are written into every
 * inbox: valid envelopes with wrong values, truncated msgpack, random bytes,
 * headers claiming huge lengths, subscribes, asks, cancels and events from
 * nodes that do not exist, asks beyond demand and messages through the wrong
 * inbox for the real subscriptions, batches over the limits, entries without
 * a payload, stray heartbeat values. Then: every node stayed up and within
 * its memory bound, the consumer handled exactly what it would have without
 * the noise (each event once, in order), and every bad entry is in the
 * dead-letter stream with a reason.
 */
export interface WireFuzzOptions {
  readonly seed: number;
  readonly durationMs: number;
  readonly redisUrl: string;
  /** Bad entries written per second, over all inboxes. Default 150. */
  readonly entriesPerSecond?: number;
  /** Resident memory no node may exceed. Default 300 MiB (an agent idles near 100 MiB). */
  readonly maxRssBytes?: number;
  readonly signal?: AbortSignal;
  readonly log?: (line: string) => void;
}

export const FUZZ_CASES = [
  'truncated',
  'random-bytes',
  'wrong-values',
  'huge-length',
  'unknown-subscribe',
  'unknown-ask',
  'unknown-cancel',
  'unknown-events',
  'too-many-events',
  'oversized',
  'wrong-inbox',
  'beyond-demand',
  'no-payload',
] as const;
export type FuzzCase = (typeof FUZZ_CASES)[number];

export interface WireFuzzReport {
  readonly seed: number;
  readonly durationMs: number;
  readonly written: Record<FuzzCase, number>;
  readonly strayHeartbeats: number;
  readonly deadLettersByKind: Record<string, number>;
  /** Bad entries not found in the dead-letter stream (with their case). */
  readonly missing: readonly string[];
  readonly handledEvents: number;
  /** The consumer's handled events are exactly 0, 2, 4, …: each once, in order. */
  readonly exact: boolean;
  readonly maxRssBytes: Record<string, number>;
  readonly rssBound: number;
  /** V8 heap in use per node after a scrape, at the start of the fuzz and at its end (a leak shows as growth). */
  readonly heapUsedBytes: Record<string, { readonly start: number; readonly end: number }>;
  /** Agents that exited, stages that crashed, nodes counted down, events beyond demand. */
  readonly incidents: readonly string[];
  readonly ok: boolean;
}

const INBOXES = ['counter@a', 'double@b', 'recorder@c'] as const;
const PRODUCER_INBOXES = ['counter@a', 'double@b'] as const;
const REAL_KEYS = { 'double@b>counter@a': 'counter@a', 'recorder@c>double@b': 'double@b' } as const;
const MAX_ENTRY_BYTES = 8 * 1024 * 1024;
const packr = new Packr({ useRecords: false });

/** Values that are wrong for each field of a message, whatever its type. */
const WRONG: Record<string, readonly unknown[]> = {
  t: ['nope', 7, null, ''],
  key: [42, '', 'x', 'a>b', 'a@b>c', `${'k'.repeat(600)}@a>c@b`, null, ['k'], 'c@b>p@a>q@c', 'stage@bad node>counter@a'],
  epoch: [-1, 'one', 1.5, 2 ** 60, null, Number.NaN],
  hwm: [-5, 'ten', 1.5, null, 2 ** 60, Number.POSITIVE_INFINITY],
  seq: [-1, 'zero', 0.5, 2 ** 60],
  events: ['no', [], {}, null, 7],
  from: ['nobody', 1, null],
  kind: ['explode', null, 3],
  reason: [null, { error: 42 }, ['a'], { shutdown: { deep: true } }, 'r'.repeat(5000), { error: 'x', extra: 1 }, 7],
  consumer: ['no-at', '', 5, 'a@', '@b', 'a@b c'],
  incarnation: ['', 9, null],
  options: [
    'opts',
    null,
    [1],
    { maxDemand: 0 },
    { maxDemand: -3 },
    { maxDemand: 1e12 },
    { maxDemand: 'ten' },
    { minDemand: 50, maxDemand: 10 },
    { cancel: 'sometimes' },
    { partition: {} },
    { selector: 'x' },
  ],
};

const FIELDS: Record<string, readonly string[]> = {
  subscribe: ['t', 'key', 'epoch', 'consumer', 'incarnation', 'options'],
  ask: ['t', 'key', 'epoch', 'hwm'],
  events: ['t', 'key', 'epoch', 'seq', 'events'],
  cancel: ['t', 'key', 'epoch', 'from', 'kind', 'reason'],
};

function rssOf(agent: AgentProcess): number {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${agent.child.pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

export async function runWireFuzz(options: WireFuzzOptions): Promise<WireFuzzReport> {
  const log = options.log ?? (() => {});
  const random = new Random(options.seed);
  const rate = options.entriesPerSecond ?? 150;
  const rssBound = options.maxRssBytes ?? 300 * 1024 * 1024;
  const redis = new Redis(options.redisUrl);
  const f = await testFabric(options.redisUrl);
  const ns = f.namespace;
  const out = f.file('out.jsonl');
  const audits = { b: f.file('audit-b.jsonl'), c: f.file('audit-c.jsonl') };
  const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 1000000000000 }, nodes: [a] }
  double: { module: ${STAGES}, nodes: [b], subscribe: [{ to: counter, maxDemand: 50 }] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 2 }, nodes: [c], subscribe: [{ to: double, maxDemand: 20 }] }
`);
  const ports = { a: await freePort(), b: await freePort(), c: await freePort() };
  const agents = {
    a: f.agent(topology, 'a', { STAGEFABRIC_METRICS_PORT: String(ports.a) }),
    b: f.agent(topology, 'b', { STAGEFABRIC_DEMAND_AUDIT: audits.b, STAGEFABRIC_METRICS_PORT: String(ports.b) }),
    c: f.agent(topology, 'c', { STAGEFABRIC_DEMAND_AUDIT: audits.c, STAGEFABRIC_METRICS_PORT: String(ports.c) }),
  };
  const heapUsed = async (): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    for (const [name, port] of Object.entries(ports)) {
      const text = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) })
        .then((r) => r.text())
        .catch(() => '');
      out[name] = Number(/^stagefabric_nodejs_heap_size_used_bytes\{[^}]*\} (\S+)$/m.exec(text)?.[1] ?? 0);
    }
    return out;
  };
  const mib = (bytes: Record<string, number>) =>
    Object.entries(bytes)
      .map(([n, b]) => `${n} ${Math.round(b / 2 ** 20)} MiB`)
      .join(', ');
  let heapAtStart: Record<string, number> = {};
  let heapAtEnd: Record<string, number> = {};
  const maxRss: Record<string, number> = { a: 0, b: 0, c: 0 };
  const sampler = setInterval(() => {
    for (const [name, agent] of Object.entries(agents)) maxRss[name] = Math.max(maxRss[name] ?? 0, rssOf(agent));
  }, 250);
  const written = Object.fromEntries(FUZZ_CASES.map((c) => [c, 0])) as Record<FuzzCase, number>;
  /** Every bad entry written: `inbox entryId` -> its case. */
  const bad = new Map<string, FuzzCase>();
  /** Every dead letter seen: `inbox entryId`, read as they come (the stream is capped). */
  const dead = new Set<string>();
  const deadKinds: Record<string, number> = {};
  let lastDead = '0';
  let strayHeartbeats = 0;
  const readDeadLetters = async () => {
    for (;;) {
      const entries = await redis.xrange(`sf:${ns}:dead`, `(${lastDead}`, '+', 'COUNT', 1000);
      for (const [id, fields] of entries) {
        lastDead = id;
        const record: Record<string, string> = {};
        for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i] as string] = fields[i + 1] as string;
        if ((record.reason ?? '') === '') continue;
        dead.add(`${record.inbox} ${record.entry}`);
        deadKinds[record.kind ?? '?'] = (deadKinds[record.kind ?? '?'] ?? 0) + 1;
      }
      if (entries.length < 1000) return;
    }
  };
  const epochOf = (file: string, key: string): number | undefined => {
    if (!existsSync(file)) return undefined;
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    for (let i = lines.length - 1; i >= 0; i--) {
      const r = JSON.parse(lines[i] as string) as { side: string; key: string; epoch: number };
      if (r.side === 'consumer' && r.key === key) return r.epoch;
    }
    return undefined;
  };
  const realEpoch = (key: keyof typeof REAL_KEYS) => epochOf(key.startsWith('double') ? audits.b : audits.c, key);

  const ghost = () => `z${random.int(0, 999)}`;
  const someKey = () => random.pick([...Object.keys(REAL_KEYS), `ghost@${ghost()}>counter@a`, 'recorder@c>ghost@zz']);
  const base = (type: keyof typeof FIELDS): Record<string, unknown> => {
    const key = someKey();
    const epoch = random.int(0, 2 ** 40);
    switch (type) {
      case 'subscribe':
        return { t: 'subscribe', key, epoch, consumer: key.split('>')[0], incarnation: randomUUID(), options: { maxDemand: 10 } };
      case 'ask':
        return { t: 'ask', key, epoch, hwm: random.int(0, 100) };
      case 'events':
        return { t: 'events', key, epoch, seq: 0, events: [1, 2, 3] };
      default:
        return { t: 'cancel', key, epoch, from: 'consumer', kind: 'cancel', reason: 'normal' };
    }
  };
  const kv = (k: string, v: unknown) => Buffer.concat([packr.pack(k), packr.pack(v)]);
  const hugeHeaders = [
    Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), // array32
    Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff]), // map32
    Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xf0]), // str32
    Buffer.from([0xc6, 0x7f, 0xff, 0xff, 0xff]), // bin32
    Buffer.from([0xc9, 0xff, 0xff, 0xff, 0xff, 0x01]), // ext32
  ];
  let lastOversizedAt = 0;

  /** One bad entry: where it goes and its fields; undefined when the case cannot be made now. */
  const make = (c: FuzzCase): { inbox: string; fields: (string | Buffer)[] } | undefined => {
    const inbox = random.pick(INBOXES);
    switch (c) {
      case 'truncated': {
        const bytes = packr.pack(base(random.pick(Object.keys(FIELDS)) as keyof typeof FIELDS));
        return { inbox, fields: ['m', bytes.subarray(0, random.int(1, bytes.length - 1))] };
      }
      case 'random-bytes': {
        const bytes = Buffer.alloc(random.int(0, 2000));
        for (let i = 0; i < bytes.length; i++) bytes[i] = random.int(0, 255);
        return { inbox, fields: ['m', bytes] };
      }
      case 'wrong-values': {
        const type = random.pick(Object.keys(FIELDS)) as keyof typeof FIELDS;
        const message = base(type);
        const field = random.pick(FIELDS[type] as readonly string[]);
        if (random.chance(0.15)) delete message[field];
        else message[field] = random.pick(WRONG[field] as readonly unknown[]);
        return { inbox, fields: ['m', packr.pack(message)] };
      }
      case 'huge-length': {
        const header = random.pick(hugeHeaders);
        const tail = Buffer.from(Array.from({ length: random.int(0, 16) }, () => random.int(0, 255)));
        const envelope = random.chance(0.5)
          ? Buffer.concat([
              Buffer.from([0x85]),
              kv('t', 'events'),
              kv('key', someKey()),
              kv('epoch', 1),
              kv('seq', 0),
              packr.pack('events'),
              header,
              tail,
            ])
          : Buffer.concat([header, tail]);
        return { inbox, fields: ['m', envelope] };
      }
      case 'unknown-subscribe': {
        const target = random.pick(PRODUCER_INBOXES);
        const consumer = `ghost${random.int(0, 99)}@${ghost()}`;
        const message = {
          t: 'subscribe',
          key: `${consumer}>${target}`,
          epoch: random.int(1, 2 ** 40),
          consumer,
          incarnation: randomUUID(),
          options: { maxDemand: random.int(1, 1000) },
        };
        return { inbox: target, fields: ['m', packr.pack(message)] };
      }
      case 'unknown-ask': {
        const target = random.pick(PRODUCER_INBOXES);
        return {
          inbox: target,
          fields: [
            'm',
            packr.pack({ t: 'ask', key: `ghost@${ghost()}>${target}`, epoch: random.int(1, 2 ** 40), hwm: random.int(1, 10_000) }),
          ],
        };
      }
      case 'unknown-cancel': {
        const target = random.pick(PRODUCER_INBOXES);
        const reason = random.pick(['normal', 'shutdown', { error: 'boom', code: 'SF_X' }, { shutdown: 'bye' }]);
        return {
          inbox: target,
          fields: [
            'm',
            packr.pack({
              t: 'cancel',
              key: `ghost@${ghost()}>${target}`,
              epoch: random.int(1, 2 ** 40),
              from: 'consumer',
              kind: random.pick(['cancel', 'down']),
              reason,
            }),
          ],
        };
      }
      case 'unknown-events': {
        const target = random.pick(['double@b', 'recorder@c'] as const);
        const events = Array.from({ length: random.int(1, 50) }, (_, i) => i);
        return {
          inbox: target,
          fields: ['m', packr.pack({ t: 'events', key: `${target}>ghost@${ghost()}`, epoch: random.int(1, 2 ** 40), seq: 0, events })],
        };
      }
      case 'too-many-events':
        return { inbox, fields: ['m', packr.pack({ t: 'events', key: someKey(), epoch: 1, seq: 0, events: new Array(100_001).fill(0) })] };
      case 'oversized': {
        // At most one every 2 s: each is 8 MiB and more in Redis, and in the node while it is read.
        if (Date.now() - lastOversizedAt < 2000) return undefined;
        lastOversizedAt = Date.now();
        const size = MAX_ENTRY_BYTES + random.int(1, 512 * 1024);
        return { inbox, fields: ['m', Buffer.alloc(size, 0x61)] };
      }
      case 'wrong-inbox': {
        const key = random.pick(Object.keys(REAL_KEYS) as (keyof typeof REAL_KEYS)[]);
        const epoch = realEpoch(key);
        if (epoch === undefined) return undefined;
        // A real subscription's ask, written to an inbox its key does not concern.
        const target = random.pick(INBOXES.filter((i) => i !== REAL_KEYS[key]));
        return { inbox: target, fields: ['m', packr.pack({ t: 'ask', key, epoch, hwm: random.int(1, 10) })] };
      }
      case 'beyond-demand': {
        const key = random.pick(Object.keys(REAL_KEYS) as (keyof typeof REAL_KEYS)[]);
        const epoch = realEpoch(key);
        if (epoch === undefined) return undefined;
        return { inbox: REAL_KEYS[key], fields: ['m', packr.pack({ t: 'ask', key, epoch, hwm: 2 ** 52 + random.int(0, 1000) })] };
      }
      case 'no-payload':
        return { inbox, fields: random.chance(0.5) ? ['junk', 'x'] : ['other', packr.pack({ t: 'ask' }), 'more', 'y'] };
    }
  };
  const weights: Record<FuzzCase, number> = {
    truncated: 10,
    'random-bytes': 8,
    'wrong-values': 25,
    'huge-length': 6,
    'unknown-subscribe': 8,
    'unknown-ask': 8,
    'unknown-cancel': 6,
    'unknown-events': 8,
    'too-many-events': 1,
    oversized: 1,
    'wrong-inbox': 5,
    'beyond-demand': 5,
    'no-payload': 4,
  };

  const incidents: string[] = [];
  let handledAtStart = 0;
  try {
    await waitFor(() => handled(out).length >= 200, 'the pipeline to run', 60_000);
    handledAtStart = handled(out).length;
    heapAtStart = await heapUsed();
    log(
      `fuzz seed ${options.seed}: pipeline running (${handledAtStart} events handled); writing ${rate} bad entries/s for ${Math.round(options.durationMs / 1000)} s`,
    );
    const started = Date.now();
    let sent = 0;
    let nextReport = started + 10_000;
    while (Date.now() - started < options.durationMs && !options.signal?.aborted) {
      // Pace to the rate: write what is due, then wait for the next tick of 50 ms.
      const due = Math.floor(((Date.now() - started) / 1000) * rate) - sent;
      const pipeline = redis.pipeline();
      const batch: { inbox: string; c: FuzzCase }[] = [];
      for (let i = 0; i < due; i++) {
        const c = random.weighted(weights);
        const entry = make(c);
        sent++;
        if (entry === undefined) continue;
        pipeline.xadd(`sf:${ns}:inbox:${entry.inbox}`, '*', ...entry.fields);
        batch.push({ inbox: entry.inbox, c });
      }
      if (random.chance(0.02)) {
        // A stray value in a node's heartbeat key, living as long as a beat: never taken for a restart or a death.
        pipeline.set(`sf:${ns}:hb:${random.pick(['a', 'b', 'c'])}`, random.pick(['garbage', randomUUID(), '{"node":"b"}']), 'PX', 3000);
        strayHeartbeats++;
      }
      const replies = (await pipeline.exec()) ?? [];
      batch.forEach(({ inbox, c }, i) => {
        const [error, id] = replies[i] ?? [new Error('no reply'), null];
        if (error !== null || typeof id !== 'string') throw new Error(`XADD of a ${c} entry failed: ${String(error)}`);
        bad.set(`${inbox} ${id}`, c);
        written[c]++;
      });
      await readDeadLetters();
      for (const [name, agent] of Object.entries(agents))
        if (agent.child.exitCode !== null) throw new Error(`agent ${name} exited (${agent.child.exitCode}):\n${agent.stderr.slice(-2000)}`);
      if (Date.now() >= nextReport) {
        nextReport += 10_000;
        const heap = await heapUsed();
        log(
          `fuzz: ${bad.size} bad entries written, ${dead.size} dead letters, ${handled(out).length} events handled; peak rss ${mib(maxRss)}; heap used ${mib(heap)}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const handledAtEnd = handled(out).length;
    heapAtEnd = await heapUsed();
    // What was written is read and refused before long: wait for every bad entry's dead letter.
    await waitFor(
      async () => {
        await readDeadLetters();
        return [...bad.keys()].every((k) => dead.has(k));
      },
      'every bad entry in the dead-letter stream',
      120_000,
      200,
    ).catch(() => {});
    if (handledAtEnd <= handledAtStart)
      incidents.push(`the pipeline made no progress during the fuzz (${handledAtStart} -> ${handledAtEnd})`);
  } finally {
    clearInterval(sampler);
  }
  for (const [name, agent] of Object.entries(agents)) {
    if (agent.child.exitCode !== null) incidents.push(`agent ${name} exited (${agent.child.exitCode})`);
    for (const [msg, what] of [
      ['stage crashed', 'a stage crashed'],
      ['node down: its subscriptions are cancelled with noconnection', 'a node was counted down'],
      ['received events beyond demand', 'events beyond demand'],
      ['received events beyond demand; held, not handed on', 'events beyond demand'],
      ['send given up: its subscription is ended and made anew', 'a send was given up'],
    ] as const) {
      const n = agent.logs(msg).length;
      if (n > 0) incidents.push(`${name}: ${what} (${n} × "${msg}")`);
    }
    if ((maxRss[name] ?? 0) > rssBound) incidents.push(`${name}: resident memory reached ${Math.round((maxRss[name] ?? 0) / 2 ** 20)} MiB`);
  }
  const events = handled(out);
  const exact = events.every((v, i) => v === 2 * i);
  if (!exact) incidents.push('the consumer did not handle exactly 0, 2, 4, … (each once, in order)');
  const missing = [...bad.entries()].filter(([k]) => !dead.has(k)).map(([k, c]) => `${c}: ${k}`);
  redis.disconnect();
  await killAll();
  const report: WireFuzzReport = {
    seed: options.seed,
    durationMs: options.durationMs,
    written,
    strayHeartbeats,
    deadLettersByKind: deadKinds,
    missing,
    handledEvents: events.length,
    exact,
    maxRssBytes: maxRss,
    rssBound,
    heapUsedBytes: Object.fromEntries(Object.keys(ports).map((n) => [n, { start: heapAtStart[n] ?? 0, end: heapAtEnd[n] ?? 0 }])),
    incidents,
    ok: incidents.length === 0 && missing.length === 0,
  };
  return report;
}

export function fuzzSummary(r: WireFuzzReport): string {
  const total = Object.values(r.written).reduce((a, b) => a + b, 0);
  return [
    `wire fuzz, seed ${r.seed}, ${Math.round(r.durationMs / 1000)} s: ${r.ok ? 'every check holds' : 'FAILED'}`,
    `  bad entries written: ${total} (${Object.entries(r.written)
      .filter(([, n]) => n > 0)
      .map(([c, n]) => `${c} ${n}`)
      .join(', ')}); stray heartbeat values: ${r.strayHeartbeats}`,
    `  dead letters: ${Object.entries(r.deadLettersByKind)
      .map(([k, n]) => `${k} ${n}`)
      .join(
        ', ',
      )}; bad entries missing from them: ${r.missing.length}${r.missing.length > 0 ? ` (first: ${r.missing.slice(0, 5).join('; ')})` : ''}`,
    `  consumer: ${r.handledEvents} events handled, ${r.exact ? 'exactly 0, 2, 4, … (each once, in order)' : 'NOT the noise-free sequence'}`,
    `  peak resident memory: ${Object.entries(r.maxRssBytes)
      .map(([n, b]) => `${n} ${Math.round(b / 2 ** 20)} MiB`)
      .join(', ')} (bound ${Math.round(r.rssBound / 2 ** 20)} MiB)`,
    `  heap used, start -> end: ${Object.entries(r.heapUsedBytes)
      .map(([n, h]) => `${n} ${Math.round(h.start / 2 ** 20)} -> ${Math.round(h.end / 2 ** 20)} MiB`)
      .join(', ')}`,
    ...r.incidents.map((i) => `  incident: ${i}`),
  ].join('\n');
}
