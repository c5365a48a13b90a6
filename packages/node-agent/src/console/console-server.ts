import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { getConnInfo } from '@hono/node-server/conninfo';
import { FabricError } from '@stagefabric/runtime';
import { RETRYABLE_STATES, type TaskFilter, type TaskState, type TaskStore } from '@stagefabric/tasks';
import { type Context, Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { streamSSE } from 'hono/streaming';
import type { Logger } from '../logger.js';
import { ConsoleAuth, SESSION_COOKIE } from './console-auth.js';
import { CONSOLE_CSS, CONSOLE_JS, type Html, h, layout } from './console-html.js';
import { deadLetterPage, fabricLive, fabricPage, noFabricPage } from './fabric-pages.js';
import { FabricWatch } from './fabric-watch.js';
import {
  CONSOLE_ACTIONS,
  type ConsoleAction,
  confirmPage,
  describeFilter,
  filterQuery,
  type ListQuery,
  notice,
  PAGE_SIZE,
  queuesLive,
  taskList,
  taskLive,
  taskPage,
  tasksPage,
} from './task-pages.js';
import { TASK_STATES, TaskWatch } from './task-watch.js';

export interface ConsoleOptions {
  /** 0 picks a free port. */
  readonly port: number;
  /** Default 127.0.0.1: reachable from this host only. */
  readonly host?: string;
  /** The fabric to show; without it the fabric page says there is none. */
  readonly redisUrl?: string | undefined;
  /** Default 'default'. */
  readonly namespace?: string;
  /** The task store to show and act on; without it the task pages say there is none. */
  readonly store?: TaskStore | undefined;
  /** Actions need it; without one (default: STAGEFABRIC_CONSOLE_TOKEN) the console is read-only. */
  readonly token?: string | undefined;
  readonly logger: Logger;
  /** How often live views read the fabric and the task counts again. Default 1000 ms. */
  readonly refreshMs?: number;
  /** Live views (server-sent event streams) open at once; more are refused. Default 32. */
  readonly maxLiveViews?: number;
  /** Each action asked, done or refused (the agent counts them in its metrics). */
  readonly onAction?: (action: ConsoleAction | 'sign-in', outcome: 'done' | 'refused') => void;
}

export const CONSOLE_DEFAULTS = { host: '127.0.0.1', namespace: 'default', refreshMs: 1000, maxLiveViews: 32 } as const;

/** Dead letters listed on the fabric page, newest first. */
const DEAD_LETTERS_SHOWN = 50;
/** Form posts are a few fields: anything larger is refused unread. */
const MAX_FORM_BYTES = 16 * 1024;

export interface WebConsole {
  /** `http://host:port`. */
  readonly url: string;
  readonly port: number;
  /** Ends live views and stops listening. Idempotent. */
  close(): Promise<void>;
}

const LOOPBACK_HOSTS = /^(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d+)?$/;

function checkOptions(o: ConsoleOptions): void {
  const bad = (option: string, value: unknown, rule: string) =>
    new FabricError('SF_BAD_OPTION', `console option ${option} = ${JSON.stringify(value)}: ${rule}`);
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) throw bad('port', o.port, 'must be an integer from 0 to 65535');
  if (o.refreshMs !== undefined && (!Number.isInteger(o.refreshMs) || o.refreshMs < 100))
    throw bad('refreshMs', o.refreshMs, 'must be an integer of at least 100');
  if (o.maxLiveViews !== undefined && (!Number.isInteger(o.maxLiveViews) || o.maxLiveViews < 1))
    throw bad('maxLiveViews', o.maxLiveViews, 'must be a positive integer');
}

function asset(path: string): string {
  return readFileSync(createRequire(import.meta.url).resolve(path), 'utf8');
}

/**
 * The web console: the fabric (topology graph, nodes, rates, bottleneck,
 * inboxes, dead letters) and the task queues (counts and rates, a filtered
 * list, each task with its attempts) live in a browser, and the operator's
 * actions on tasks and queues, each confirmed, logged with who asked, and
 * refused without the token. Server-rendered; every value shown is escaped.
 */
export async function startConsole(options: ConsoleOptions): Promise<WebConsole> {
  checkOptions(options);
  const host = options.host ?? CONSOLE_DEFAULTS.host;
  const refreshMs = options.refreshMs ?? CONSOLE_DEFAULTS.refreshMs;
  const maxLiveViews = options.maxLiveViews ?? CONSOLE_DEFAULTS.maxLiveViews;
  const namespace = options.namespace ?? CONSOLE_DEFAULTS.namespace;
  const log = options.logger.child({ component: 'console' });
  const auth = new ConsoleAuth(options.token ?? process.env.STAGEFABRIC_CONSOLE_TOKEN);
  const fabric =
    options.redisUrl === undefined || options.redisUrl === ''
      ? undefined
      : new FabricWatch(options.redisUrl, namespace, refreshMs, (error) => log.debug({ err: error }, 'console redis error'));
  const store = options.store;
  const tasks = store === undefined ? undefined : new TaskWatch(store, refreshMs);
  const assets = {
    css: CONSOLE_CSS,
    js: CONSOLE_JS,
    htmx: asset('htmx.org/dist/htmx.min.js'),
  };
  const onlyLoopbackNames = host === '127.0.0.1' || host === 'localhost' || host === '::1';
  let liveViews = 0;
  let closing = false;

  const app = new Hono();
  app.use(async (c, next) => {
    // Bound to loopback, the console answers only to loopback names: a page elsewhere cannot rebind a name of its own to it.
    if (onlyLoopbackNames && !LOOPBACK_HOSTS.test(c.req.header('host') ?? ''))
      return c.text('this console answers to localhost only\n', 403);
    await next();
    c.header(
      'Content-Security-Policy',
      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    c.header('X-Content-Type-Options', 'nosniff');
    // Not no-referrer: under it a browser sends `Origin: null` even on our own form posts, and the origin check needs it.
    c.header('Referrer-Policy', 'same-origin');
    c.header('X-Frame-Options', 'DENY');
    c.header('Cache-Control', c.req.path.startsWith('/assets/') ? 'public, max-age=3600' : 'no-store');
  });

  const canAct = (c: Context) => auth.signedIn(c.req.header('cookie'));
  const page = (c: Context, title: string, section: 'fabric' | 'tasks' | 'sign-in', body: Html, status: 200 | 403 | 404 = 200) =>
    c.html(layout({ title, section, canAct: canAct(c), actionsEnabled: auth.enabled, body }).toString(), status);
  const remote = (c: Context) => {
    try {
      return getConnInfo(c).remote.address ?? '?';
    } catch {
      return '?';
    }
  };

  /** Streams `render` as server-sent `update` events every refresh, until the page goes or the console closes. */
  const live = (c: Context, render: () => Promise<Html>) => {
    if (liveViews >= maxLiveViews) return c.text(`too many live views open (at most ${maxLiveViews})\n`, 503);
    liveViews++;
    return streamSSE(
      c,
      async (stream) => {
        try {
          while (!stream.aborted && !closing) {
            await stream.writeSSE({ event: 'update', data: (await render()).toString() });
            await stream.sleep(refreshMs);
          }
        } finally {
          liveViews--;
        }
      },
      async (error) => {
        log.warn({ err: error }, 'console live view failed');
      },
    );
  };

  app.get('/assets/console.css', (c) => c.body(assets.css, 200, { 'content-type': 'text/css; charset=utf-8' }));
  app.get('/assets/console.js', (c) => c.body(assets.js, 200, { 'content-type': 'text/javascript; charset=utf-8' }));
  app.get('/assets/htmx.min.js', (c) => c.body(assets.htmx, 200, { 'content-type': 'text/javascript; charset=utf-8' }));
  app.get('/favicon.ico', (c) => c.body(null, 204));
  app.get('/', (c) => c.redirect(fabric === undefined && tasks !== undefined ? '/tasks' : '/fabric', 303));

  // --- fabric ---
  const renderFabric = async () => {
    if (fabric === undefined) return noFabricPage();
    const [view, dead] = await Promise.all([fabric.view(), fabric.deadLetters(DEAD_LETTERS_SHOWN).catch(() => undefined)]);
    return fabricLive(view, dead);
  };
  app.get('/fabric', async (c) => page(c, 'Fabric', 'fabric', fabric === undefined ? noFabricPage() : fabricPage(await renderFabric())));
  app.get('/fabric/live', (c) => live(c, renderFabric));
  app.get('/fabric/dead-letters/:id', async (c) => {
    const letter = await fabric?.deadLetter(c.req.param('id'));
    if (letter === undefined) return page(c, 'Not found', 'fabric', h`<h1>No such dead letter</h1><p><a href="/fabric">Back</a></p>`, 404);
    return page(c, `Dead letter ${letter.id}`, 'fabric', deadLetterPage(letter));
  });

  // --- tasks ---
  const noStore = h`<h1>Tasks</h1><div class="note">This console has no task store: start it with DATABASE_URL (or --store).</div>`;
  const listQuery = (c: Context): ListQuery => {
    const text = (name: string) => {
      const v = c.req.query(name)?.trim();
      return v === undefined || v === '' ? undefined : v.slice(0, 500);
    };
    const state = text('state');
    const offset = Number(c.req.query('offset') ?? 0);
    return {
      ...(state !== undefined && (TASK_STATES as readonly string[]).includes(state) ? { state: state as TaskState } : {}),
      ...(text('queue') === undefined ? {} : { queue: text('queue') as string }),
      ...(text('name') === undefined ? {} : { name: text('name') as string }),
      ...(text('error') === undefined ? {} : { errorContains: text('error') as string }),
      offset: Number.isInteger(offset) && offset > 0 ? Math.min(offset, 1_000_000) : 0,
    };
  };
  const filterOf = (q: ListQuery): TaskFilter => {
    const { offset: _, ...filter } = q;
    return filter;
  };

  app.get('/tasks', async (c) => {
    if (tasks === undefined || store === undefined) return page(c, 'Tasks', 'tasks', noStore);
    const query = listQuery(c);
    const [summary, list, matching] = await Promise.all([
      tasks.summary(),
      store.list({ ...filterOf(query), limit: PAGE_SIZE, offset: query.offset }),
      store.countWhere(filterOf(query)),
    ]);
    const listHtml = taskList(query, list, matching, canAct(c));
    // htmx asks for the list alone when the filter changes; it selects #task-list from the page either way.
    return page(c, 'Tasks', 'tasks', tasksPage(query, queuesLive(summary, canAct(c)), listHtml, doneNotice(c)));
  });
  app.get('/tasks/live', (c) => {
    const acting = canAct(c);
    return live(c, async () => (tasks === undefined ? noStore : queuesLive(await tasks.summary(), acting)));
  });
  app.get('/task', async (c) => {
    const id = c.req.query('id') ?? '';
    const task = store === undefined ? null : await store.get(id);
    if (store === undefined || task === null)
      return page(c, 'Not found', 'tasks', h`<h1>No task ${id}</h1><p><a href="/tasks">Back to the tasks</a></p>`, 404);
    return page(c, `Task ${task.id}`, 'tasks', taskPage(task, taskLive(task, await store.attempts(task.id), canAct(c)), doneNotice(c)));
  });
  app.get('/task/live', (c) => {
    const id = c.req.query('id') ?? '';
    const acting = canAct(c);
    return live(c, async () => {
      const task = await store?.get(id);
      return task === undefined || task === null || store === undefined
        ? h`<p class="muted">No task ${id}.</p>`
        : taskLive(task, await store.attempts(task.id), acting);
    });
  });

  /** What an action will touch, said before it is done. */
  app.get('/confirm', async (c) => {
    const action = c.req.query('action') as ConsoleAction;
    if (!CONSOLE_ACTIONS.includes(action) || store === undefined) return page(c, 'Not found', 'tasks', h`<h1>No such action</h1>`, 404);
    const refusal = auth.enabled ? (canAct(c) ? undefined : 'sign in with the console token to act') : 'actions are off: no token';
    if (refusal !== undefined) return page(c, 'Refused', 'tasks', notice(`Refused: ${refusal}.`, true), 403);
    const formToken = auth.formToken() as string;
    if (action === 'retry' || action === 'cancel') {
      const id = c.req.query('id') ?? '';
      const task = await store.get(id);
      if (task === null) return page(c, 'Not found', 'tasks', h`<h1>No task ${id}</h1>`, 404);
      const fits = action === 'retry' ? RETRYABLE_STATES.includes(task.state) : task.state === 'waiting';
      const title = action === 'retry' ? `Retry task ${task.id}` : `Cancel task ${task.id}`;
      const what = fits
        ? action === 'retry'
          ? h`This puts task ${task.id} (${task.name}, queue ${task.queue}, now <strong>${task.state}</strong>) back to waiting with its attempts reset, to run again.`
          : h`This cancels task ${task.id} (${task.name}, queue ${task.queue}, now waiting): it will not run.`
        : h`Nothing to do: task ${task.id} is ${task.state}, and only ${action === 'retry' ? 'failed or cancelled' : 'waiting'} tasks can be ${action === 'retry' ? 'retried' : 'cancelled'}.`;
      const back = `/task${filterQuery({}, { id: task.id })}`;
      return page(c, title, 'tasks', confirmPage({ title, what, action, fields: { id: task.id }, formToken, back, nothing: !fits }));
    }
    if (action === 'pause' || action === 'resume') {
      const queue = c.req.query('queue') ?? '';
      const [waiting, running] = await Promise.all([
        store.countWhere({ queue, state: 'waiting' }),
        store.countWhere({ queue, state: 'running' }),
      ]);
      const title = action === 'pause' ? `Pause queue ${queue}` : `Resume queue ${queue}`;
      const what =
        action === 'pause'
          ? h`No node claims tasks of queue <strong>${queue}</strong> until it is resumed: its ${waiting} waiting tasks stay waiting; the ${running} running now finish.`
          : h`Nodes claim tasks of queue <strong>${queue}</strong> again: its ${waiting} waiting tasks become claimable at once.`;
      return page(
        c,
        title,
        'tasks',
        confirmPage({ title, what, action, fields: { queue }, formToken, back: '/tasks', nothing: queue === '' }),
      );
    }
    const query = listQuery(c);
    const filter = filterOf(query);
    const states = action === 'retry-where' ? RETRYABLE_STATES : (['waiting'] as const);
    const touched = (
      await Promise.all(
        states.filter((s) => filter.state === undefined || filter.state === s).map((state) => store.countWhere({ ...filter, state })),
      )
    ).reduce((n, x) => n + x, 0);
    const verb = action === 'retry-where' ? 'Retry' : 'Cancel';
    const title = `${verb} ${touched} ${touched === 1 ? 'task' : 'tasks'}`;
    const what = h`Of the tasks matching ${describeFilter(filter)}, this ${action === 'retry-where' ? 'puts the failed or cancelled ones back to waiting, attempts reset' : 'cancels the waiting ones'}: <strong>${touched}</strong> now.`;
    const fields: Record<string, string> = {};
    if (filter.state !== undefined) fields.state = filter.state;
    if (filter.queue !== undefined) fields.queue = filter.queue;
    if (filter.name !== undefined) fields.name = filter.name;
    if (filter.errorContains !== undefined) fields.error = filter.errorContains;
    return page(
      c,
      title,
      'tasks',
      confirmPage({ title, what, action, fields, formToken, back: `/tasks${filterQuery(filter)}`, nothing: touched === 0 }),
    );
  });

  const doneNotice = (c: Context): Html | undefined => {
    const done = c.req.query('done');
    const n = Number(c.req.query('n') ?? 0);
    const queue = c.req.query('queue') ?? '';
    switch (done) {
      case 'retry':
        return n > 0
          ? notice('Retried: the task is waiting to run again.')
          : notice('Nothing retried: the task was no longer failed or cancelled.', true);
      case 'cancel':
        return n > 0 ? notice('Cancelled: the task will not run.') : notice('Nothing cancelled: the task was no longer waiting.', true);
      case 'retry-where':
        return notice(`Retried ${n} ${n === 1 ? 'task' : 'tasks'}.`);
      case 'cancel-where':
        return notice(`Cancelled ${n} ${n === 1 ? 'task' : 'tasks'}.`);
      case 'pause':
        return notice(`Queue ${queue} paused: no node claims its tasks until it is resumed.`);
      case 'resume':
        return notice(`Queue ${queue} resumed.`);
      default:
        return undefined;
    }
  };

  /** Every action: checked (token, form token, origin), done, logged with who asked and what it touched. */
  app.post('/actions/:action', bodyLimit({ maxSize: MAX_FORM_BYTES }), async (c) => {
    const action = c.req.param('action') as ConsoleAction;
    if (!CONSOLE_ACTIONS.includes(action)) return c.text('no such action\n', 404);
    const form = await c.req.parseBody();
    const field = (name: string) => {
      const v = form[name];
      return typeof v === 'string' && v !== '' ? v.slice(0, 500) : undefined;
    };
    const by = { remote: remote(c), token: undefined as string | undefined };
    const refusal = auth.check({
      authorization: c.req.header('authorization'),
      cookie: c.req.header('cookie'),
      formToken: field('form_token'),
      origin: c.req.header('origin'),
      secFetchSite: c.req.header('sec-fetch-site'),
      selfOrigin: `http://${c.req.header('host') ?? ''}`,
    });
    if (refusal !== undefined || store === undefined) {
      const why = refusal ?? 'no task store';
      log.warn({ by, action, refused: why }, 'console action refused');
      options.onAction?.(action, 'refused');
      return page(c, 'Refused', 'tasks', notice(`Refused: ${why}.`, true), 403);
    }
    by.token = auth.fingerprint;
    let location: string;
    let what: Record<string, unknown>;
    if (action === 'retry' || action === 'cancel') {
      const id = field('id') ?? '';
      const changed = action === 'retry' ? await store.retry([id]) : await store.cancel([id]);
      what = { task: id, changed: changed.length };
      location = `/task${filterQuery({}, { id, done: action, n: String(changed.length) })}`;
    } else if (action === 'pause' || action === 'resume') {
      const queue = field('queue') ?? '';
      if (queue === '') return c.text('no queue given\n', 400);
      if (action === 'pause') await store.pause(queue);
      else await store.resume(queue);
      what = { queue };
      location = `/tasks${filterQuery({}, { done: action, queue })}`;
    } else {
      const state = field('state');
      const filter: TaskFilter = {
        ...(state !== undefined && (TASK_STATES as readonly string[]).includes(state) ? { state: state as TaskState } : {}),
        ...(field('queue') === undefined ? {} : { queue: field('queue') as string }),
        ...(field('name') === undefined ? {} : { name: field('name') as string }),
        ...(field('error') === undefined ? {} : { errorContains: field('error') as string }),
      };
      const changed = action === 'retry-where' ? await store.retryWhere(filter) : await store.cancelWhere(filter);
      what = { filter, changed };
      location = `/tasks${filterQuery(filter, { done: action, n: String(changed) })}`;
    }
    log.info({ by, action, ...what }, 'console action');
    options.onAction?.(action, 'done');
    return c.redirect(location, 303);
  });

  // --- signing in ---
  app.get('/sign-in', (c) =>
    page(
      c,
      'Sign in',
      'sign-in',
      auth.enabled
        ? h`<h1>Sign in</h1><p>Actions (retry, cancel, pause, resume) need the console token, the value of STAGEFABRIC_CONSOLE_TOKEN where the console runs.</p>
<form method="post" action="/sign-in"><label>Token <input type="password" name="token" autocomplete="current-password" required></label> <button type="submit" class="primary">Sign in</button></form>`
        : h`<h1>Read-only</h1><div class="note">Actions are off: this console was started without STAGEFABRIC_CONSOLE_TOKEN.</div>`,
    ),
  );
  app.post('/sign-in', bodyLimit({ maxSize: MAX_FORM_BYTES }), async (c) => {
    const form = await c.req.parseBody();
    const given = typeof form.token === 'string' ? form.token : undefined;
    const origin = c.req.header('origin');
    const by = { remote: remote(c) };
    if (!auth.tokenMatches(given) || (origin !== undefined && origin !== `http://${c.req.header('host') ?? ''}`)) {
      log.warn({ by, action: 'sign-in', refused: 'wrong token' }, 'console sign-in refused');
      options.onAction?.('sign-in', 'refused');
      return page(
        c,
        'Sign in',
        'sign-in',
        h`${notice('Refused: that is not the console token.', true)}<p><a href="/sign-in">Try again</a></p>`,
        403,
      );
    }
    log.info({ by: { ...by, token: auth.fingerprint }, action: 'sign-in' }, 'console sign-in');
    options.onAction?.('sign-in', 'done');
    c.header('Set-Cookie', `${SESSION_COOKIE}=${auth.sessionValue()}; HttpOnly; SameSite=Strict; Path=/`);
    return c.redirect('/tasks', 303);
  });
  app.post('/sign-out', (c) => {
    c.header('Set-Cookie', `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`);
    return c.redirect('/fabric', 303);
  });

  app.notFound((c) =>
    page(c, 'Not found', 'fabric', h`<h1>Not found</h1><p><a href="/fabric">The fabric</a> · <a href="/tasks">the tasks</a></p>`, 404),
  );
  app.onError((error, c) => {
    log.error({ err: error, path: c.req.path }, 'console page failed');
    return c.text(`the console failed to answer: ${error.message}\n`, 500);
  });

  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: options.port, hostname: host }, () => resolve(s));
    s.once('error', reject);
  });
  const address = server.address() as AddressInfo;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`;
  log.info(
    {
      address: url,
      actions: auth.enabled ? 'on (token set)' : 'off (read-only)',
      fabric: fabric !== undefined,
      tasks: store !== undefined,
    },
    'console listening',
  );
  let closed: Promise<void> | undefined;
  return {
    url,
    port: address.port,
    close() {
      closed ??= (async () => {
        closing = true;
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          // Live views are long requests: end them rather than wait a refresh for each.
          if ('closeAllConnections' in server) server.closeAllConnections();
        });
        fabric?.close();
      })();
      return closed;
    },
  };
}
