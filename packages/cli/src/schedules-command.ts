import { parseArgs } from 'node:util';
import { nextFire, type ScheduleRecord } from '@stagefabric/tasks';
import { openStoreFor, STORE_OPTIONS, UsageError } from './tasks-commands.js';

export const SCHEDULES_HELP = `Usage: stagectl schedules [list|remove NAME] [--json]

list    every schedule of the task store with its next fire (the default):
        NAME, CRON, TZ, TASK, BACKFILL, LAST FIRE, NEXT FIRE (UTC, ISO 8601)
remove  deletes schedule NAME; its tasks already enqueued stay

Schedules come from topologies (tasks.schedules) and the API
(store.defineSchedules); every agent's scheduler fires them, each fire once.
Reads the store at DATABASE_URL (or --data-dir DIR; --schema S; or
--store bullmq for the Redis store at REDIS_URL).`;

/** A schedule as `stagectl schedules --json` prints it. */
function describe(s: ScheduleRecord, now: Date) {
  return {
    name: s.name,
    cron: s.cron,
    tz: s.tz,
    task: s.task,
    backfill: s.backfill,
    lastFireAt: s.lastFireAt?.toISOString() ?? null,
    nextFireAt: nextFire(s, now)?.toISOString() ?? null,
  };
}

/** Lines of columns, each as wide as its widest cell. */
function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export async function schedulesCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...STORE_OPTIONS, json: { type: 'boolean' } } });
  const [verb = 'list', ...rest] = positionals;
  if (verb !== 'list' && verb !== 'remove') throw new UsageError(`schedules: unknown action "${verb}" (list, remove NAME)`);
  if (verb === 'remove' && rest.length !== 1) throw new UsageError('schedules remove: give one schedule name');
  const store = await openStoreFor(values);
  try {
    if (verb === 'remove') {
      const name = rest[0] as string;
      const removed = await store.removeSchedule(name);
      process.stdout.write(
        values.json ? `${JSON.stringify({ name, removed })}\n` : removed ? `schedule ${name} removed\n` : `no schedule ${name}\n`,
      );
      return;
    }
    const now = new Date();
    const schedules = (await store.schedules()).map((s) => describe(s, now));
    if (values.json) {
      process.stdout.write(`${JSON.stringify(schedules, null, 2)}\n`);
      return;
    }
    const rows = schedules.map((s) => [
      s.name,
      s.cron,
      s.tz,
      s.task.name,
      String(s.backfill),
      s.lastFireAt ?? '-',
      s.nextFireAt ?? 'never',
    ]);
    process.stdout.write(`${table([['NAME', 'CRON', 'TZ', 'TASK', 'BACKFILL', 'LAST FIRE', 'NEXT FIRE'], ...rows])}\n`);
  } finally {
    await store.close();
  }
}
