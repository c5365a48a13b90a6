import type { TaskAttempt, TaskFilter, TaskRecord } from '@stagefabric/tasks';
import { ago, clip, duration, type Html, h } from './console-html.js';
import type { QueueSummary } from './task-watch.js';
import { TASK_STATES } from './task-watch.js';

/** Tasks per page of the list. */
export const PAGE_SIZE = 50;
/** Args shown on a task's page, as pretty JSON, at most this many characters. */
const ARGS_SHOWN = 65_536;

/** What an operator may ask; each is confirmed on its own page before it is done. */
export type ConsoleAction = 'retry' | 'cancel' | 'retry-where' | 'cancel-where' | 'pause' | 'resume';
export const CONSOLE_ACTIONS: readonly ConsoleAction[] = ['retry', 'cancel', 'retry-where', 'cancel-where', 'pause', 'resume'];

export interface ListQuery extends TaskFilter {
  readonly offset: number;
}

/** The query string of a filter (and paging), for links that keep it. */
export function filterQuery(f: TaskFilter & { readonly offset?: number }, extra: Record<string, string> = {}): string {
  const params = new URLSearchParams();
  if (f.state !== undefined) params.set('state', f.state);
  if (f.queue !== undefined) params.set('queue', f.queue);
  if (f.name !== undefined) params.set('name', f.name);
  if (f.errorContains !== undefined) params.set('error', f.errorContains);
  if (f.offset !== undefined && f.offset > 0) params.set('offset', String(f.offset));
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}

export function describeFilter(f: TaskFilter): string {
  const parts = [
    f.state === undefined ? undefined : `state ${f.state}`,
    f.queue === undefined ? undefined : `queue ${f.queue}`,
    f.name === undefined ? undefined : `name ${f.name}`,
    f.errorContains === undefined ? undefined : `error containing "${f.errorContains}"`,
  ].filter((x): x is string => x !== undefined);
  return parts.length === 0 ? 'every task' : parts.join(', ');
}

/** A rate sparkline as inline SVG. */
function sparkline(values: readonly number[]): Html {
  const w = 120;
  const ht = 22;
  if (values.length < 2) return h`<span class="muted">—</span>`;
  const max = Math.max(1, ...values);
  const step = w / (values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(ht - 1 - (v / max) * (ht - 2)).toFixed(1)}`).join(' ');
  const last = values.at(-1) ?? 0;
  return h`<svg class="spark" width="${w}" height="${ht}" viewBox="0 0 ${w} ${ht}" role="img" aria-label="finished per second"><polyline points="${points}"></polyline></svg> <span class="num">${last.toFixed(1)}/s</span>`;
}

/** The queues table: counts by state, finished-per-second sparkline, paused state and its action. Streamed again every refresh. */
export function queuesLive(summary: { queues: readonly QueueSummary[]; error: string | undefined }, canAct: boolean): Html {
  if (summary.queues.length === 0 && summary.error === undefined) return h`<p class="muted">No task in any queue yet.</p>`;
  return h`${summary.error === undefined ? '' : h`<div class="note bad">${summary.error}</div>`}
<table id="queues"><thead><tr><th>Queue</th>${TASK_STATES.map((s) => h`<th class="num">${s}</th>`)}<th>Finished per second</th><th></th></tr></thead><tbody>
${summary.queues.map(
  (q) => h`<tr data-queue="${q.queue}"><td><a href="/tasks${filterQuery({ queue: q.queue })}">${q.queue}</a>${
    q.paused ? h` <span class="state paused">paused</span>` : ''
  }</td>
${TASK_STATES.map((s) => h`<td class="num">${q.counts[s] > 0 ? h`<a href="/tasks${filterQuery({ queue: q.queue, state: s })}">${q.counts[s]}</a>` : '0'}</td>`)}
<td>${sparkline(q.finishedPerS)}</td>
<td>${canAct ? h`<a class="button" href="/confirm${filterQuery({}, { action: q.paused ? 'resume' : 'pause', queue: q.queue })}">${q.paused ? 'Resume' : 'Pause'}</a>` : ''}</td></tr>`,
)}
</tbody></table>`;
}

/** The filtered list with its paging and the actions on what it matches; htmx swaps it alone when the filter changes. */
export function taskList(query: ListQuery, tasks: readonly TaskRecord[], matching: number, canAct: boolean): Html {
  const retryable = query.state === undefined || query.state === 'error' || query.state === 'timeout' || query.state === 'cancelled';
  const cancellable = query.state === undefined || query.state === 'waiting';
  const actions = canAct
    ? h`<p>${retryable ? h`<a class="button" href="/confirm${filterQuery(query, { action: 'retry-where' })}">Retry failed or cancelled of these…</a> ` : ''}${
        cancellable
          ? h`<a class="button" href="/confirm${filterQuery(query, { action: 'cancel-where' })}">Cancel waiting of these…</a>`
          : ''
      }</p>`
    : '';
  const newer =
    query.offset > 0 ? h`<a href="/tasks${filterQuery({ ...query, offset: Math.max(0, query.offset - PAGE_SIZE) })}">← newer</a>` : '';
  const older =
    query.offset + tasks.length < matching
      ? h`<a href="/tasks${filterQuery({ ...query, offset: query.offset + PAGE_SIZE })}">older →</a>`
      : '';
  return h`<div id="task-list">
<p>${matching} ${matching === 1 ? 'task matches' : 'tasks match'} (${describeFilter(query)})${
    tasks.length === 0 ? '' : h`; ${query.offset + 1}–${query.offset + tasks.length} shown, newest first`
  }.</p>
${actions}
<table><thead><tr><th>Id</th><th>Queue</th><th>Name</th><th>State</th><th class="num">Attempt</th><th>Last error</th><th class="num">Updated</th></tr></thead><tbody>
${tasks.map(
  (t) => h`<tr data-task="${t.id}"><td><a href="/task${filterQuery({}, { id: t.id })}">${t.id}</a></td><td>${t.queue}</td><td>${t.name}</td>
<td><span class="state ${t.state}">${t.state}</span></td><td class="num">${t.attempt}/${t.maxAttempts}</td>
<td class="error-text">${t.lastError === null ? '' : clip(t.lastError, 120)}</td><td class="num">${ago(Date.now() - t.updatedAt.getTime())} ago</td></tr>`,
)}
</tbody></table>
<p>${newer} ${older}</p>
</div>`;
}

export function tasksPage(query: ListQuery, queues: Html, list: Html, notice: Html | undefined): Html {
  const option = (value: string, label: string) =>
    h`<option value="${value}"${query.state === value ? h` selected` : ''}>${label}</option>`;
  return h`<h1>Tasks</h1>
${notice ?? ''}
<h2>Queues</h2>
<div id="queues-live" data-live="/tasks/live">${queues}</div>
<h2>Find tasks</h2>
<form class="filters" method="get" action="/tasks" hx-get="/tasks" hx-target="#task-list" hx-select="#task-list" hx-swap="outerHTML" hx-push-url="true"
  hx-trigger="change, submit">
<label>State <select name="state">${option('', 'any')}${TASK_STATES.map((s) => option(s, s))}</select></label>
<label>Queue <input type="search" name="queue" value="${query.queue ?? ''}" size="12"></label>
<label>Name <input type="search" name="name" value="${query.name ?? ''}" size="14"></label>
<label>Error contains <input type="search" name="error" value="${query.errorContains ?? ''}" size="24"></label>
<button type="submit">Filter</button>
</form>
${list}`;
}

/** What the handler last reported: a bar for a percentage, else its JSON (clipped). */
function reported(progress: TaskRecord['progress']): Html | string {
  if (progress === null) return '';
  if (typeof progress === 'number')
    return h` · <span id="task-progress"><progress max="100" value="${String(progress)}"></progress> ${String(Math.round(progress * 10) / 10)}%</span>`;
  return h` · <span id="task-progress">progress <code>${clip(JSON.stringify(progress), 200)}</code></span>`;
}

/** The lifecycle of a task as steps: enqueued, each attempt, and where it is now. */
function progress(task: TaskRecord, attempts: readonly TaskAttempt[]): Html {
  const steps: Html[] = [h`<li class="done">enqueued ${task.createdAt.toISOString()}</li>`];
  for (const a of attempts)
    steps.push(
      h`<li class="${a.outcome === 'success' ? 'done' : 'failed'}">attempt ${a.attempt}: ${a.outcome}${a.durationMs === null ? '' : h` in ${duration(a.durationMs)}`}</li>`,
    );
  const now = Date.now();
  if (task.state === 'waiting')
    steps.push(
      h`<li class="now">waiting${task.runAt.getTime() > now ? h` until ${task.runAt.toISOString()} (in ${ago(task.runAt.getTime() - now)})` : ' to be claimed'}: attempt ${task.attempt + 1} of ${task.maxAttempts} next</li>`,
    );
  else if (task.state === 'running')
    steps.push(
      h`<li class="now">running attempt ${task.attempt} of ${task.maxAttempts} on ${task.leaseOwner ?? '?'}${
        task.leaseExpiresAt === null ? '' : h`, lease until ${task.leaseExpiresAt.toISOString()}`
      }${reported(task.progress)}</li>`,
    );
  else
    steps.push(
      h`<li class="${task.state === 'success' ? 'done' : 'failed'}">${task.state}${task.finishedAt === null ? '' : h` ${task.finishedAt.toISOString()}`}${reported(task.progress)}</li>`,
    );
  return h`<ol class="progress">${steps}</ol>`;
}

/** The part of a task's page that changes while it runs: state, progress, attempts, its actions. Streamed again every refresh. */
export function taskLive(task: TaskRecord, attempts: readonly TaskAttempt[], canAct: boolean): Html {
  const retryable = task.state === 'error' || task.state === 'timeout' || task.state === 'cancelled';
  const actions = canAct
    ? h`<p>${retryable ? h`<a class="button primary" id="retry" href="/confirm${filterQuery({}, { action: 'retry', id: task.id })}">Retry…</a> ` : ''}${
        task.state === 'waiting'
          ? h`<a class="button" id="cancel" href="/confirm${filterQuery({}, { action: 'cancel', id: task.id })}">Cancel…</a>`
          : ''
      }</p>`
    : '';
  return h`<p>State <span class="state ${task.state}" id="task-state">${task.state}</span> · attempt ${task.attempt} of ${task.maxAttempts}</p>
${progress(task, attempts)}
${task.lastError === null ? '' : h`<h2>Last error</h2><pre class="bad" id="last-error">${task.lastError}</pre>`}
${actions}
<h2>Attempts</h2>
${
  attempts.length === 0
    ? h`<p class="muted">No attempt has finished yet.</p>`
    : h`<table id="attempts"><thead><tr><th class="num">#</th><th>Outcome</th><th class="num">Duration</th><th>Ran on</th><th>Finished</th><th>Error</th></tr></thead><tbody>
${attempts.map(
  (
    a,
  ) => h`<tr><td class="num">${a.attempt}</td><td><span class="state ${a.outcome}">${a.outcome}</span></td><td class="num">${duration(a.durationMs)}</td>
<td>${a.owner ?? '—'}</td><td>${a.finishedAt.toISOString()}</td><td><pre>${a.error ?? ''}</pre></td></tr>`,
)}
</tbody></table>`
}`;
}

export function taskPage(task: TaskRecord, live: Html, notice: Html | undefined): Html {
  let args = JSON.stringify(task.args, null, 2) ?? 'null';
  if (args.length > ARGS_SHOWN) args = `${args.slice(0, ARGS_SHOWN)}\n… (${args.length} characters in all)`;
  return h`<h1>Task ${task.id} · ${task.name}</h1>
${notice ?? ''}
<dl class="facts"><dt>Queue</dt><dd><a href="/tasks${filterQuery({ queue: task.queue })}">${task.queue}</a></dd><dt>Priority</dt><dd>${task.priority}</dd>
<dt>Timeout</dt><dd>${duration(task.timeoutMs)}</dd>${task.uniqueKey === null ? '' : h`<dt>Unique key</dt><dd>${task.uniqueKey}</dd>`}
<dt>Enqueued</dt><dd>${task.createdAt.toISOString()}</dd></dl>
<div id="task-live" data-live="/task/live${filterQuery({}, { id: task.id })}">${live}</div>
<h2>Args</h2><pre id="task-args">${args}</pre>`;
}

/** The confirmation of an action: what it will touch, and the form that does it. */
export function confirmPage(o: {
  readonly title: string;
  readonly what: Html;
  readonly action: ConsoleAction;
  readonly fields: Record<string, string>;
  readonly formToken: string;
  readonly back: string;
  readonly nothing: boolean;
}): Html {
  return h`<h1>${o.title}</h1>
<div class="note">${o.what}</div>
${
  o.nothing
    ? h`<p><a href="${o.back}">Back</a></p>`
    : h`<form method="post" action="/actions/${o.action}">
${Object.entries(o.fields).map(([k, v]) => h`<input type="hidden" name="${k}" value="${v}">`)}
<input type="hidden" name="form_token" value="${o.formToken}">
<button type="submit" class="${o.action.startsWith('cancel') || o.action === 'pause' ? 'danger' : 'primary'}" id="confirm">${o.title}</button>
<a href="${o.back}">Back</a>
</form>`
}`;
}

export function notice(text: string, bad = false): Html {
  return h`<div class="note${bad ? ' bad' : ''}" id="notice">${text}</div>`;
}
