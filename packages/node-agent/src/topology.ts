import { readFile } from 'node:fs/promises';
import { NAME_RULE, WIRE_LIMITS } from '@stagefabric/fabric';
import { FabricError } from '@stagefabric/runtime';
import { checkSchedule, type EnqueueOptions, type ScheduleDefinition, type StoredBackoff } from '@stagefabric/tasks';
import { isAlias, isCollection, isPair, LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';

const NAME = /^[A-Za-z][A-Za-z0-9_.-]*$/;

const subscriptionSchema = z.strictObject({
  to: z.string().regex(NAME, 'must be a stage name (a letter, then letters, digits, _ . -)'),
  // Demand is credit on the wire too: bounded as every node bounds what it accepts.
  maxDemand: z.number().int().positive().max(WIRE_LIMITS.maxDemand).optional(),
  minDemand: z.number().int().nonnegative().optional(),
  cancel: z.enum(['permanent', 'transient', 'temporary']).optional(),
  partition: z.union([z.string(), z.number().int()]).optional(),
});

const stageSchema = z.strictObject({
  /** Path of the ES module defining the stage, relative to the topology file. */
  module: z.string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a path') }).min(1),
  /** The module's export holding the stage spec. Default: the stage's name. */
  export: z.string().min(1).optional(),
  /** Passed to the stage's init. */
  args: z.unknown().optional(),
  replicas: z.number().int().positive().max(10_000).default(1),
  /** Each entry is a stage name or { to, ...options }; a bare name is read as { to: name }. */
  subscribe: z.array(z.preprocess((entry) => (typeof entry === 'string' ? { to: entry } : entry), subscriptionSchema)).default([]),
  restart: z.enum(['permanent', 'transient', 'temporary']).default('permanent'),
  /** The nodes that run this stage (each runs `replicas` of it). Absent: every node. Ignored when running in one process. */
  nodes: z
    .array(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, `a node name ${NAME_RULE}`))
    .min(1)
    .optional(),
});

/** How long finished tasks of one state are kept: false keeps them all. */
const retentionRuleSchema = z.union([
  z.literal(false),
  z
    .strictObject({ maxAgeMs: z.number().int().nonnegative().optional(), maxCount: z.number().int().nonnegative().optional() })
    .refine((r) => r.maxAgeMs !== undefined || r.maxCount !== undefined, 'give maxAgeMs, maxCount or both (or false to keep every task)'),
]);

/** A wait of a backoff, as the task store takes it. */
const delayMsSchema = z.number().min(0).max(2_147_483_647);

/** A recurring schedule under tasks.schedules, keyed by its name. */
const scheduleSchema = z.strictObject({
  /** Five fields (minute first) or six (second first). */
  cron: z.string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a cron expression') }).min(1),
  /** IANA time zone. Default UTC. */
  tz: z.string().min(1).optional(),
  /** The handler each fire runs. */
  task: z.string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a handler name') }).min(1),
  args: z.unknown().optional(),
  /** Enqueue options of each fire's task (runAt excepted: the fire sets it). */
  options: z
    .strictObject({
      queue: z.string().min(1).optional(),
      priority: z.number().int().optional(),
      maxAttempts: z.number().int().positive().optional(),
      timeoutMs: z.number().int().positive().optional(),
      delayMs: z.number().int().nonnegative().optional(),
      uniqueKey: z.string().min(1).optional(),
      /** The wait after a failed attempt of each fire's task, instead of its handler's (checked as enqueue checks it). */
      backoff: z
        .discriminatedUnion('type', [
          z.strictObject({ type: z.literal('fixed'), delayMs: delayMsSchema }),
          z.strictObject({ type: z.literal('exponential'), baseMs: delayMsSchema.optional(), maxMs: delayMsSchema.optional() }),
        ])
        .optional(),
    })
    .optional(),
  /** Fires missed while every agent was down that are still enqueued on return (the latest). Default 0. */
  backfill: z.number().int().nonnegative().optional(),
});

const rateSchema = z.strictObject({
  max: z.number().int().min(1).max(1_000_000),
  intervalMs: z
    .number()
    .int()
    .min(1)
    .max(7 * 24 * 3600 * 1000),
});

const limitsSchema = z.strictObject({
  concurrency: z.number().int().min(1).max(1_000_000).optional(),
  rate: rateSchema.optional(),
  group: z
    .strictObject({
      concurrency: z.number().int().min(1).max(1_000_000).optional(),
      rate: rateSchema.optional(),
      ordered: z.boolean().optional(),
    })
    .optional(),
});

const topologySchema = z.strictObject({
  version: z.literal(1).default(1),
  stages: z
    .record(z.string().regex(NAME, 'stage names start with a letter, then letters, digits, _ . -'), stageSchema)
    .refine((stages) => Object.keys(stages).length > 0, 'needs at least one stage'),
  supervisor: z
    .strictObject({
      maxRestarts: z.number().int().nonnegative().default(3),
      maxSeconds: z.number().int().positive().default(5),
    })
    .default({ maxRestarts: 3, maxSeconds: 5 }),
  /** The durable task runner: where handlers live; stages use it with module stagefabric:task-producer / stagefabric:task-runner. */
  tasks: z
    .strictObject({
      /** Module whose exports are task handlers by name (and optionally `onStart({ store, stop })`). */
      handlers: z.string().min(1),
      /** Where tasks live: postgres (DATABASE_URL), pglite (embedded) or bullmq (REDIS_URL). Default: postgres when DATABASE_URL is set, else pglite. */
      store: z.enum(['postgres', 'pglite', 'bullmq']).optional(),
      /** Database schema of the task table. Default stagefabric. */
      schema: z
        .string()
        .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case identifier')
        .optional(),
      /**
       * Limits per queue across every node (`setLimits` of the store): each agent sets them as it starts, replacing
       * what was set before. `{ QUEUE: { concurrency, rate: { max, intervalMs }, group: { concurrency, rate, ordered } } }`.
       */
      limits: z.record(z.string().min(1).max(200), limitsSchema).optional(),
      /** bullmq: the Redis key prefix of the queues. Default bull, BullMQ's own. */
      prefix: z
        .string()
        .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be letters, digits, _ . - (at most 64)')
        .optional(),
      /**
       * Finished tasks deleted after an age or beyond a count per state (on by default: successes kept a day,
       * the rest a week); false keeps every task. Each agent prunes in small batches.
       */
      retention: z
        .union([
          z.literal(false),
          z.strictObject({
            success: retentionRuleSchema.optional(),
            error: retentionRuleSchema.optional(),
            timeout: retentionRuleSchema.optional(),
            cancelled: retentionRuleSchema.optional(),
            /** Time between passes. Default 60 000. */
            intervalMs: z.number().int().min(10).optional(),
            /** Tasks deleted per statement. Default 1000. */
            batchSize: z.number().int().min(1).max(100_000).optional(),
          }),
        ])
        .optional(),
      /** Recurring schedules by name; every agent's scheduler fires them, each fire once. */
      schedules: z
        .record(z.string().regex(/^[A-Za-z0-9_.-]{1,100}$/, 'schedule names are 1 to 100 letters, digits, _ . -'), scheduleSchema)
        .optional(),
    })
    .optional(),
});

export type TopologySchedule = z.infer<typeof scheduleSchema>;

/** The object without its undefined fields (what zod leaves of absent optional ones). */
function definedOnly<T extends object>(o: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as { [K in keyof T]: Exclude<T[K], undefined> };
}

/** A schedule's enqueue options without their undefined fields, its backoff's included. */
function scheduleOptions(options: NonNullable<TopologySchedule['options']>): EnqueueOptions {
  const { backoff, ...rest } = options;
  return { ...definedOnly(rest), ...(backoff === undefined ? {} : { backoff: definedOnly(backoff) as StoredBackoff }) };
}

/** A topology schedule as the task store takes it. */
export function scheduleDefinition(name: string, s: TopologySchedule): ScheduleDefinition {
  return {
    name,
    cron: s.cron,
    ...(s.tz === undefined ? {} : { tz: s.tz }),
    ...(s.backfill === undefined ? {} : { backfill: s.backfill }),
    task: {
      name: s.task,
      ...(s.args === undefined ? {} : { args: s.args }),
      ...(s.options === undefined ? {} : { options: scheduleOptions(s.options) }),
    },
  };
}

/** Stage modules the agent itself provides. */
export const BUILTIN_STAGES = ['stagefabric:task-producer', 'stagefabric:task-runner'] as const;

export type TopologySubscription = z.infer<typeof subscriptionSchema>;
export type TopologyStage = z.infer<typeof stageSchema>;

export interface Topology extends z.infer<typeof topologySchema> {
  /** Absolute path of the file it came from; modules resolve against its folder. */
  readonly file: string;
}

export interface TopologyIssue {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  /** Where in the document, as `stages.printer.subscribe[0].maxDemand`. */
  readonly path: string;
  readonly message: string;
}

/** An invalid topology file: every issue found, each with its line. */
export class TopologyError extends FabricError {
  override readonly name = 'TopologyError';

  constructor(readonly issues: readonly TopologyIssue[]) {
    super(
      'SF_BAD_TOPOLOGY',
      issues.map((i) => `${i.file}:${i.line}:${i.column}: ${i.path === '' ? '' : `${i.path}: `}${i.message}`).join('\n'),
    );
  }
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) out += typeof key === 'number' ? `[${key}]` : out === '' ? String(key) : `.${String(key)}`;
  return out;
}

/** yaml's own default; stated here because the error message names it. */
const MAX_ALIAS_COUNT = 100;

/** The first alias node of a document, for where an alias bomb is reported. */
function firstAlias(node: unknown): { range?: [number, number, number] } | undefined {
  const stack: unknown[] = [node];
  while (stack.length > 0) {
    const n = stack.pop();
    if (n === null || typeof n !== 'object') continue;
    if (isAlias(n)) return n as { range?: [number, number, number] };
    if (isCollection(n)) stack.push(...[...n.items].reverse());
    else if (isPair(n)) stack.push(n.value, n.key);
  }
  return undefined;
}

/** Parses and checks a topology document; throws TopologyError naming file, line and path of each mistake. */
export function parseTopology(text: string, file: string): Topology {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  const at = (offset: number) => lineCounter.linePos(offset);
  if (doc.errors.length > 0) {
    throw new TopologyError(
      doc.errors.map((e) => {
        const pos = at(e.pos[0]);
        return { file, line: pos.line, column: pos.col, path: '', message: `YAML: ${e.message.split('\n')[0]}` };
      }),
    );
  }
  // Aliases are expanded by toJS: a few lines can expand to billions of nodes (a "billion laughs"), so their count is capped.
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (error) {
    const alias = firstAlias(doc.contents);
    const pos = at(alias?.range?.[0] ?? 0);
    const message = /alias/i.test((error as Error).message)
      ? `YAML: aliases expand to too much (more than ${MAX_ALIAS_COUNT} per alias); write the values out`
      : `YAML: ${(error as Error).message.split('\n')[0]}`;
    throw new TopologyError([{ file, line: pos.line, column: pos.col, path: '', message }]);
  }
  /** The line of the deepest node that exists along `path`. */
  const locate = (path: readonly PropertyKey[]) => {
    for (let n = path.length; n >= 0; n--) {
      const node = doc.getIn(path.slice(0, n) as unknown[], true) as { range?: [number, number, number] } | undefined;
      if (node?.range !== undefined) return at(node.range[0]);
    }
    return { line: 1, col: 1 };
  };
  const parsed = topologySchema.safeParse(value);
  if (!parsed.success) {
    throw new TopologyError(
      parsed.error.issues.map((issue) => {
        const pos = locate(issue.path);
        return { file, line: pos.line, column: pos.col, path: formatPath(issue.path), message: issue.message };
      }),
    );
  }
  const topology = parsed.data;
  // Checks across stages: every subscription names a stage that exists.
  const issues: TopologyIssue[] = [];
  for (const [name, stage] of Object.entries(topology.stages)) {
    stage.subscribe.forEach(({ to }, i) => {
      if (!(to in topology.stages)) {
        const path = ['stages', name, 'subscribe', i];
        const pos = locate(path);
        issues.push({
          file,
          line: pos.line,
          column: pos.col,
          path: formatPath(path),
          message: `subscribes to "${to}", which is not a stage in this topology`,
        });
      }
      if (to === name) {
        const path = ['stages', name, 'subscribe', i];
        const pos = locate(path);
        issues.push({ file, line: pos.line, column: pos.col, path: formatPath(path), message: 'a stage cannot subscribe to itself' });
      }
    });
  }
  for (const [name, stage] of Object.entries(topology.stages)) {
    if (!stage.module.startsWith('stagefabric:')) continue;
    const path = ['stages', name, 'module'];
    const pos = locate(path);
    if (!(BUILTIN_STAGES as readonly string[]).includes(stage.module)) {
      issues.push({
        file,
        line: pos.line,
        column: pos.col,
        path: formatPath(path),
        message: `unknown built-in stage "${stage.module}" (built-ins: ${BUILTIN_STAGES.join(', ')})`,
      });
    } else if (topology.tasks === undefined) {
      issues.push({
        file,
        line: pos.line,
        column: pos.col,
        path: formatPath(path),
        message: `${stage.module} needs a top-level \`tasks: { handlers: MODULE }\``,
      });
    }
  }
  // Schedules: the cron expression, time zone and task as the store will check them.
  for (const [name, schedule] of Object.entries(topology.tasks?.schedules ?? {})) {
    try {
      checkSchedule(scheduleDefinition(name, schedule));
    } catch (error) {
      const message = (error as Error).message.replace(`schedule ${name}: `, '');
      const field = /^(cron|tz|backfill|task)\b/.exec(message)?.[1];
      const path = ['tasks', 'schedules', name, ...(field === undefined ? [] : [field])];
      const pos = locate(path);
      issues.push({ file, line: pos.line, column: pos.col, path: formatPath(path), message });
    }
  }
  if (issues.length > 0) throw new TopologyError(issues);
  return { ...topology, file };
}

export async function loadTopology(file: string): Promise<Topology> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new TopologyError([{ file, line: 0, column: 0, path: '', message: `cannot read: ${(error as Error).message}` }]);
  }
  return parseTopology(text, file);
}

/** The topology's JSON Schema, for editors. */
export function topologyJsonSchema(): unknown {
  return z.toJSONSchema(topologySchema, { io: 'input' });
}
