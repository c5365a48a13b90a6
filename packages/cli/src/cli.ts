import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { checkName, FabricSecret, RedisTransport, readFabricStatus, SECRET_ENV } from '@stagefabric/fabric';
import {
  AGENT_DEFAULTS,
  Agent,
  createLogger,
  fabricRates,
  HTTP_DEFAULTS,
  loadStageSpec,
  loadTopology,
  startConsole,
  startHttpServer,
  topologyJsonSchema,
  type WebConsole,
} from '@stagefabric/node-agent';
import { FabricError, redactCredentials, redisConnectionOptions, redisPassword } from '@stagefabric/runtime';
import { openTaskStore, type TaskCount } from '@stagefabric/tasks';
import { consoleCommand, consolePort } from './console-command.js';
import { SCHEDULES_HELP, schedulesCommand } from './schedules-command.js';
import { escapeControl, renderStatus } from './status.js';
import { enqueueCommand, migrateCommand, tasksCommand, UsageError } from './tasks-commands.js';
import { renderTop } from './top.js';

const VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

/** Exit codes: 0 ok, 1 operational failure, 2 usage or invalid input. */
const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

const HELP: Record<string, string> = {
  main: `stagectl: run and operate Stagefabric agents

Usage: stagectl <command> [options]

Commands:
  up FILE|DIR        run this host's agent for a topology (DIR means DIR/topology.yaml)
  validate FILE|DIR  check a topology file without starting anything
  status             nodes, stages, subscriptions and inboxes of the fabric at REDIS_URL
  top                the same, live: rates per stage, the bottleneck marked
  console            the web console on its own: the fabric and the task queues in a browser
  enqueue NAME       add a task (or many with --file FILE, - for stdin)
  tasks [ACTION]     task counts by queue and state; list, retry ID..., cancel ID..., pause Q, resume Q, watch
  schedules [ACTION] the task store's schedules with their next fire; remove NAME
  migrate            create or upgrade the task store's schema
  schema             print the topology JSON Schema (for editors)

Options:
  -h, --help         show help for a command
  --version          print the version

Exit codes: 0 ok, 1 operational failure, 2 usage or invalid topology.`,
  up: `Usage: stagectl up FILE|DIR [--node NAME] [--namespace NS]

Starts the stages of the topology placed on this node and stays in the
foreground. With REDIS_URL set, the node joins the fabric of every agent on
that Redis (and namespace) and runs the stages placed on it (a stage's
\`nodes\`; every node when absent); without it, every stage runs in this
process. Logs are JSON lines on stderr. The first SIGTERM or SIGINT stops
gracefully (consumers first, then producers); a second one exits at once.
The agent exits 0 by itself once every stage has finished.

Options:
  --node NAME        this node's name (default: STAGEFABRIC_NODE, else the host name); refused
                     (exit 2) while a live node of the fabric has it
  --namespace NS     separates fabrics sharing one Redis (default: STAGEFABRIC_NAMESPACE, else default)
                     Names: 1 to 63 letters, digits, _ . or -, a letter or digit first.
  --heartbeat-ms N   heartbeat period; a node missing 3 beats is dead (default: STAGEFABRIC_HEARTBEAT_MS, else 1000)
  --metrics-port N   serve /metrics, /healthz and /readyz on this port (default: STAGEFABRIC_METRICS_PORT, else none)
  --metrics-host H   the address they listen on (default: STAGEFABRIC_METRICS_HOST, else 127.0.0.1;
                     0.0.0.0 for every interface, as in a pod scraped by Prometheus)
  --stop-timeout-ms N  grace period of a stop: past it, connections are dropped and the agent exits 1
                     (default: STAGEFABRIC_STOP_TIMEOUT_MS, else 45000)
  --demand-audit F   append, every heartbeat, what each remote subscription asked for and received
                     to file F as JSON lines (default: STAGEFABRIC_DEMAND_AUDIT, else none)
  --console-port N   serve the web console on this port (default: STAGEFABRIC_CONSOLE_PORT, else none);
                     actions need STAGEFABRIC_CONSOLE_TOKEN, read-only without it
  --console-host H   the console's address (default 127.0.0.1: this host only)

Environment: REDIS_URL (redis:// or rediss://, with user, password and
database), DATABASE_URL, STAGEFABRIC_SECRET (a secret of 16 characters or
more shared by every node of the fabric: each message and heartbeat is
authenticated with it, and those that are not are refused).`,
  console: `Usage: stagectl console [--port N] [--host H] [--namespace NS] [store options]

Serves the web console: the fabric at REDIS_URL (nodes, the topology graph
with rates and the bottleneck, inboxes, dead letters) and the task store at
DATABASE_URL (queues, a filtered list, each task with its attempts), live.
Retry, cancel, pause and resume need the token in STAGEFABRIC_CONSOLE_TOKEN
(sign in with it in the browser); without it the console is read-only.
Every action is logged with who asked (address, token fingerprint).

Options:
  --port N        default 9470
  --host H        default 127.0.0.1 (this host only); 0.0.0.0 for every interface
  --namespace NS  the fabric's namespace (default: STAGEFABRIC_NAMESPACE, else default)
  --data-dir DIR, --schema S, --store bullmq  as for stagectl tasks`,
  validate: `Usage: stagectl validate FILE|DIR

Checks the topology and the stage modules it names; prints each mistake as
FILE:LINE:COLUMN: path: problem. Exit 0 when valid, 2 when not.`,
  status: `Usage: stagectl status [--json] [--namespace NS]

Reads the fabric at REDIS_URL: every node that published a status (up while
its heartbeat lives, down after), the stages each hosts with their counts,
the subscriptions across hosts with their outstanding demand, and each
inbox's entries and pending entries; with DATABASE_URL, task counts by
queue and state. --json prints the same for scripts; \`stagectl top\`
shows rates live.`,
  enqueue: `Usage: stagectl enqueue NAME [--args JSON] [options]
       stagectl enqueue --file FILE|- [options]

Adds a task to the store at DATABASE_URL. With --file, one JSON object
{"name": ..., "args": ..., "options": {...}} per line (- reads stdin), any
enqueue option in "options" (runAt as an ISO 8601 date or epoch ms; the
file's options win over the command line's), sent in batches of 1000.
Every line of a file is checked before anything is enqueued: a bad line is
named and nothing goes in. On stdin, or if the store fails part way, the
error says how many tasks went in and the line to resume from.

Options:
  --queue Q  --delay-ms N  --run-at ISO-DATE  --priority N (lower first)
  --max-attempts N  --timeout-ms N  --unique-key K (refused while a task
  with K is pending)  --unique-for-ms N (K held this long from enqueue)
  --backoff fixed:MS | exponential[:BASE_MS[:MAX_MS]] | JSON  the wait
                  after a failed attempt, used instead of the handler's
  --from-line N   start reading the file at line N (to resume)
  --data-dir DIR  an embedded store instead of DATABASE_URL (no agent may use it)
  --schema S      the task table's schema (default stagefabric)
  --store bullmq  the Redis (BullMQ) store at REDIS_URL instead`,
  tasks: `Usage: stagectl tasks [counts|list|retry ID...|cancel ID...|pause Q|resume Q|watch] [--json]

counts  tasks by queue and state (the default)
list    recent tasks, newest first; --queue Q --state S --name N
        --error TEXT (in the last error, any case) --limit N --offset N
retry   failed or cancelled tasks back to waiting, attempts reset
cancel  waiting and running tasks to cancelled (a running one's run is
        aborted at its next lease extension, on whichever node runs it)
        retry and cancel without ids take the filters of list instead
        (--queue --state --name --error; at least one) and say how many
pause   claims take nothing from queue Q (running tasks finish) until
resume  lets them take from it again
watch   task lifecycle events live, one line each (JSON with --json),
        until Ctrl-C: enqueued, started, progress, succeeded, retried,
        failed, cancelled, released (handed back unstarted); a lease
        that expired shows as retried or failed with lease-lost;
        --queue Q --name N to follow only those

Reads the store at DATABASE_URL (or --data-dir DIR; --schema S; or
--store bullmq for the Redis store at REDIS_URL).`,
  migrate: `Usage: stagectl migrate [--schema S]

Creates or upgrades the task table at DATABASE_URL, under an advisory lock,
so agents starting together never race. Agents also migrate on start.`,
  top: `Usage: stagectl top [--interval-ms N] [--once] [--namespace NS]

Refreshes every second (or --interval-ms): events in and out per second for
every stage on every node, the backlog waiting for it (inbox plus mailbox),
its buffer, and the bottleneck marked: the stage the most work waits on.
--once prints one frame (two samples apart) and exits. Ctrl-C quits.`,
  schedules: SCHEDULES_HELP,
  schema: `Usage: stagectl schema

Prints the JSON Schema of topology files.`,
};

async function topologyPath(arg: string | undefined, command: string): Promise<string> {
  if (arg === undefined) throw new UsageError(`${command}: missing FILE|DIR\n\n${HELP[command]}`);
  const path = resolve(arg);
  const info = await stat(path).catch(() => undefined);
  return info?.isDirectory() ? join(path, 'topology.yaml') : path;
}

/** REDIS_URL, checked as every Redis client reads it; absent or empty: undefined. A URL that does not parse exits 2, without its password. */
function redisUrlFromEnv(): string | undefined {
  const url = process.env.REDIS_URL || undefined;
  if (url !== undefined) redisConnectionOptions(url, 'REDIS_URL');
  return url;
}

/** The fabric's shared secret from the environment, checked; undefined when unset. */
function secretFromEnv(namespace: string): string | undefined {
  const secret = process.env[SECRET_ENV] || undefined;
  if (secret !== undefined) new FabricSecret(secret, namespace);
  return secret;
}

/** Every credential the environment holds, for masking in what stagectl prints. */
function credentials(): string[] {
  const database = (() => {
    try {
      const password = new URL(process.env.DATABASE_URL ?? '').password;
      return password === '' ? [] : [decodeURIComponent(password)];
    } catch {
      return [];
    }
  })();
  return [...redisPassword(process.env.REDIS_URL || undefined), ...database, ...(process.env[SECRET_ENV] ? [process.env[SECRET_ENV]] : [])];
}

function fromEnvOrOption(option: string, value: string | undefined, env: string, fallback: () => string): string {
  return checkName(value === undefined && process.env[env] !== undefined ? env : `--${option}`, value ?? process.env[env] ?? fallback());
}

async function up(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      node: { type: 'string' },
      namespace: { type: 'string' },
      'heartbeat-ms': { type: 'string' },
      'metrics-port': { type: 'string' },
      'metrics-host': { type: 'string' },
      'stop-timeout-ms': { type: 'string' },
      'demand-audit': { type: 'string' },
      'console-port': { type: 'string' },
      'console-host': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return help('up');
  const redisUrl = redisUrlFromEnv();
  const node = fromEnvOrOption('node', values.node, 'STAGEFABRIC_NODE', () => (redisUrl === undefined ? 'local' : hostname()));
  const namespace = fromEnvOrOption('namespace', values.namespace, 'STAGEFABRIC_NAMESPACE', () => 'default');
  const secret = secretFromEnv(namespace);
  const consoleAt = consolePort('--console-port', values['console-port'] ?? process.env.STAGEFABRIC_CONSOLE_PORT);
  const file = await topologyPath(positionals[0], 'up');
  const topology = await loadTopology(file);
  const heartbeatMs = Number(values['heartbeat-ms'] ?? process.env.STAGEFABRIC_HEARTBEAT_MS ?? 1000);
  if (!Number.isInteger(heartbeatMs) || heartbeatMs < 10) {
    throw new UsageError(`--heartbeat-ms must be an integer of at least 10, got ${values['heartbeat-ms']}`);
  }
  const metricsPort = values['metrics-port'] ?? process.env.STAGEFABRIC_METRICS_PORT;
  const port = metricsPort === undefined ? undefined : Number(metricsPort);
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) {
    throw new UsageError(`--metrics-port must be a port number, got ${metricsPort}`);
  }
  const metricsHost = values['metrics-host'] ?? process.env.STAGEFABRIC_METRICS_HOST ?? HTTP_DEFAULTS.host;
  const stopTimeout = values['stop-timeout-ms'] ?? process.env.STAGEFABRIC_STOP_TIMEOUT_MS;
  const stopTimeoutMs = stopTimeout === undefined ? undefined : Number(stopTimeout);
  if (stopTimeoutMs !== undefined && (!Number.isInteger(stopTimeoutMs) || stopTimeoutMs < 100)) {
    throw new UsageError(`--stop-timeout-ms must be an integer of at least 100, got ${stopTimeout}`);
  }
  const logger = createLogger({ node, secrets: credentials() });
  // Signals are handled from the start: one arriving while the agent boots stops it as soon as it is up.
  let agent: Agent | undefined;
  let stopRequested = false;
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(EXIT.failure);
    }
    logger.info({ signal }, 'signal: stopping gracefully');
    stopRequested = true;
    if (agent !== undefined) void agent.stop();
    else {
      // Still booting (waiting for Redis or PostgreSQL, say): it stops once up, or the grace period ends it.
      setTimeout(() => {
        logger.error('the agent did not finish booting within the grace period of the stop: exiting');
        process.exit(EXIT.failure);
      }, stopTimeoutMs ?? AGENT_DEFAULTS.stopTimeoutMs).unref();
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // Health answers while the agent boots (it may wait for its servers): readiness and metrics say it is starting.
  const http = port === undefined ? undefined : await startHttpServer({ port, host: metricsHost, agent: () => agent });
  if (http !== undefined) logger.info({ address: http.address() }, 'serving /metrics, /healthz and /readyz');
  let web: WebConsole | undefined;
  try {
    // With REDIS_URL this node joins the fabric; without it, every stage runs here.
    const transport = redisUrl === undefined ? undefined : new RedisTransport({ url: redisUrl, node, namespace, secret });
    const databaseUrl = process.env.DATABASE_URL;
    agent = await Agent.start({
      topology,
      logger,
      node,
      heartbeatMs,
      databaseUrl,
      redisUrl,
      demandAudit: values['demand-audit'] ?? process.env.STAGEFABRIC_DEMAND_AUDIT,
      ...(transport === undefined ? {} : { transport }),
      ...(stopTimeoutMs === undefined ? {} : { stopTimeoutMs }),
    });
    if (stopRequested) void agent.stop();
    const running = agent;
    web =
      consoleAt === undefined
        ? undefined
        : await startConsole({
            port: consoleAt,
            ...(values['console-host'] === undefined ? {} : { host: values['console-host'] }),
            redisUrl,
            namespace,
            store: running.tasks?.store,
            logger,
            onAction: (action, outcome) => running.metrics.consoleAction(action, outcome),
          });
    const reason = await agent.done;
    await web?.close();
    await agent.stop();
    if (agent.stopTimedOut) return EXIT.failure;
    return reason === 'normal' || reason === 'shutdown' ? EXIT.ok : EXIT.failure;
  } finally {
    await web?.close();
    http?.close();
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}

async function validate(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { help: { type: 'boolean', short: 'h' } } });
  if (values.help) return help('validate');
  const file = await topologyPath(positionals[0], 'validate');
  const topology = await loadTopology(file);
  // Import each stage module too: a topology naming a missing export is not valid.
  for (const [name, stage] of Object.entries(topology.stages)) await loadStageSpec(topology, name, stage);
  process.stdout.write(`${file}: valid (${Object.keys(topology.stages).length} stages)\n`);
  return EXIT.ok;
}

async function status(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { json: { type: 'boolean' }, namespace: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) return help('status');
  const url = redisUrlFromEnv();
  if (url === undefined) throw new UsageError('status reads the fabric from Redis: set REDIS_URL');
  const namespace = fromEnvOrOption('namespace', values.namespace, 'STAGEFABRIC_NAMESPACE', () => 'default');
  const fabric = await readFabricStatus(url, namespace, { secret: secretFromEnv(namespace) });
  for (const { node, problem } of fabric.malformed)
    process.stderr.write(`stagectl: the status of node ${escapeControl(node)} is malformed (${escapeControl(problem)}): left out\n`);
  // With DATABASE_URL, the task store's counts by queue and state too.
  const databaseUrl = process.env.DATABASE_URL;
  let tasks: TaskCount[] | undefined;
  if (databaseUrl !== undefined && databaseUrl !== '') {
    const store = await openTaskStore({ databaseUrl });
    tasks = await store.counts().finally(() => store.close());
  }
  const report = { ...fabric, ...(tasks === undefined ? {} : { tasks }) };
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : renderStatus(report));
  return EXIT.ok;
}

async function top(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      'interval-ms': { type: 'string' },
      once: { type: 'boolean' },
      namespace: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return help('top');
  const url = redisUrlFromEnv();
  if (url === undefined) throw new UsageError('top reads the fabric from Redis: set REDIS_URL');
  const intervalMs = Number(values['interval-ms'] ?? 1000);
  if (!Number.isInteger(intervalMs) || intervalMs < 100)
    throw new UsageError(`--interval-ms must be an integer of at least 100, got ${values['interval-ms']}`);
  const namespace = fromEnvOrOption('namespace', values.namespace, 'STAGEFABRIC_NAMESPACE', () => 'default');
  const secret = secretFromEnv(namespace);
  const sample = async () => ({ at: Date.now(), status: await readFabricStatus(url, namespace, { secret }) });
  let before = await sample();
  for (;;) {
    await new Promise((r) => setTimeout(r, intervalMs));
    const after = await sample();
    const { stages, bottleneck } = fabricRates(before, after);
    const frame = renderTop(stages, bottleneck, namespace);
    // On a terminal, redraw in place; piped, print frames one after another.
    process.stdout.write(process.stdout.isTTY && !values.once ? `\x1b[2J\x1b[H${frame}` : frame);
    if (values.once) return EXIT.ok;
    before = after;
  }
}

function help(command: string): number {
  process.stdout.write(`${HELP[command] ?? HELP.main}\n`);
  return EXIT.ok;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'up':
        return await up(rest);
      case 'validate':
        return await validate(rest);
      case 'enqueue':
        if (rest.includes('--help') || rest.includes('-h')) return help('enqueue');
        await enqueueCommand(rest);
        return EXIT.ok;
      case 'tasks':
        if (rest.includes('--help') || rest.includes('-h')) return help('tasks');
        await tasksCommand(rest);
        return EXIT.ok;
      case 'schedules':
        if (rest.includes('--help') || rest.includes('-h')) return help('schedules');
        await schedulesCommand(rest);
        return EXIT.ok;
      case 'migrate':
        if (rest.includes('--help') || rest.includes('-h')) return help('migrate');
        await migrateCommand(rest);
        return EXIT.ok;
      case 'status':
        return await status(rest);
      case 'top':
        return await top(rest);
      case 'console':
        if (rest.includes('--help') || rest.includes('-h')) return help('console');
        return await consoleCommand(rest);
      case 'schema':
        process.stdout.write(`${JSON.stringify(topologyJsonSchema(), null, 2)}\n`);
        return EXIT.ok;
      case '--version':
        process.stdout.write(`stagectl ${VERSION}\n`);
        return EXIT.ok;
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        return help(rest[0] ?? 'main');
      default:
        throw new UsageError(`unknown command "${command}"\n\n${HELP.main}`);
    }
  } catch (error) {
    // Whatever failed, nothing stagectl prints carries a credential or a terminal control sequence.
    const print = (text: string) => process.stderr.write(`stagectl: ${escapeControl(redactCredentials(text, credentials()), true)}\n`);
    if (error instanceof FabricError && error.isInputError) {
      print(error.message);
      return EXIT.usage;
    }
    if (error instanceof TypeError && (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      print(error.message);
      return EXIT.usage;
    }
    print(error instanceof Error ? (error.stack ?? error.message) : String(error));
    return EXIT.failure;
  }
}
