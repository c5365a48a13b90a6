// The chocolates pipeline of the chaos run, made durable end to end:
//   maker (a source reading events from PostgreSQL) -> wrapper -> packer (writes them back).
// Delivery through the fabric is at least once; the packer records each event
// in the same transaction as its effect (a running total), keyed by the
// event's id, so a redelivered event takes effect once. The maker re-sends an
// event the packer has not recorded within `redeliverMs`, so an event lost
// with a killed process still arrives. Plain JS: agents import it without a build.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { consumer, producer, producerConsumer } from '../../packages/runtime/dist/index.js';

const schema = process.env.CHAOS_SCHEMA;
const node = process.env.STAGEFABRIC_NODE ?? '?';
let pool;
function db() {
  if (pool === undefined) {
    pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4, connectionTimeoutMillis: 5000, query_timeout: 20_000 });
    pool.on('error', () => {});
    // A checked-out client whose server went away reports it on itself: without a listener, the process would crash.
    pool.on('connect', (client) => client.on('error', () => {}));
  }
  return pool;
}

const FETCH = () => `SELECT e.id::int AS id, e.value FROM ${schema}.events e
  WHERE e.id > $1 AND NOT EXISTS (SELECT 1 FROM ${schema}.handled h WHERE h.event_id = e.id) ORDER BY e.id LIMIT $2`;

/** Emits events of the events table in id order, never beyond demand; re-sends those not handled in time. */
export const maker = producer({
  init({ redeliverMs = 15_000, pollMs = 100 }, ctx) {
    ctx.sendAfter(redeliverMs / 3, 'sweep');
    return { state: { pending: 0, fetching: false, sweeping: false, cursor: 0, inflight: new Map(), redo: [], redeliverMs, pollMs } };
  },
  handleDemand(demand, state, ctx) {
    state.pending += demand;
    return { events: next(state, ctx), state };
  },
  handleInfo(message, state, ctx) {
    if (message === 'poll') return { events: next(state, ctx), state };
    if (message === 'sweep') {
      ctx.sendAfter(state.redeliverMs / 3, 'sweep');
      sweep(state, ctx);
      return { state };
    }
    if ('rows' in message) {
      state.fetching = false;
      const now = Date.now();
      for (const e of message.rows) {
        state.inflight.set(e.id, { value: e.value, at: now });
        state.cursor = Math.max(state.cursor, e.id);
      }
      state.pending -= message.rows.length;
      if (state.pending > 0) {
        if (message.rows.length === message.asked) fetchRows(state, ctx);
        else ctx.sendAfter(state.pollMs, 'poll');
      }
      return { events: message.rows, state };
    }
    if ('failed' in message) {
      state.fetching = false;
      ctx.sendAfter(500, 'poll');
      return { state };
    }
    if ('unhandled' in message) {
      state.sweeping = false;
      state.redo.push(...message.unhandled);
      return { events: next(state, ctx), state };
    }
    return { state };
  },
});

/** Re-sent events first, then a fetch for the rest of the demand. */
function next(state, ctx) {
  const n = Math.min(state.pending, state.redo.length);
  const events = state.redo.splice(0, n);
  state.pending -= n;
  const now = Date.now();
  for (const e of events) state.inflight.set(e.id, { value: e.value, at: now });
  fetchRows(state, ctx);
  return events;
}

function fetchRows(state, ctx) {
  if (state.fetching || state.pending === 0) return;
  state.fetching = true;
  const asked = Math.min(state.pending, 1000);
  db()
    .query(FETCH(), [state.cursor, asked])
    .then(
      (r) => ctx.send(ctx.self, { rows: r.rows, asked }),
      (error) => ctx.send(ctx.self, { failed: String(error) }),
    );
}

/** Events sent longer than redeliverMs ago: forgotten once handled, queued again if not. */
function sweep(state, ctx) {
  if (state.sweeping) return;
  const old = [];
  const cutoff = Date.now() - state.redeliverMs;
  for (const [id, e] of state.inflight) if (e.at < cutoff) old.push({ id, value: e.value });
  if (old.length === 0) return;
  state.sweeping = true;
  db()
    .query(`SELECT event_id::int AS id FROM ${schema}.handled WHERE event_id = ANY($1::bigint[])`, [old.map((e) => e.id)])
    .then(async (r) => {
      const handled = new Set(r.rows.map((x) => x.id));
      const unhandled = old.filter((e) => !handled.has(e.id));
      for (const e of old) state.inflight.delete(e.id);
      if (unhandled.length > 0) await db().query(`UPDATE ${schema}.totals SET resent = resent + $1`, [unhandled.length]);
      ctx.send(ctx.self, { unhandled });
    })
    .catch(() => ctx.send(ctx.self, { unhandled: [] }));
}

export const wrapper = producerConsumer({
  init: () => ({ state: {} }),
  handleEvents: (events) => ({ events: events.map((e) => ({ ...e, wrappedBy: node })) }),
});

/** Records each event and its effect in one transaction; an event seen before takes no effect again. */
export const packer = consumer({
  init: () => ({ state: {} }),
  async handleEvents(events) {
    for (let attempt = 0; ; attempt++) {
      try {
        await pack(events);
        return;
      } catch (error) {
        // The database is restarting: hold the batch (and so, by demand, the pipeline) until it is back.
        if (attempt >= 240) throw error;
        await sleep(500);
      }
    }
  },
});

async function pack(events) {
  const client = await db().connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query(
      `INSERT INTO ${schema}.handled (event_id, node) SELECT unnest($1::bigint[]), $2 ON CONFLICT DO NOTHING RETURNING event_id::int AS id`,
      [events.map((e) => e.id), node],
    );
    const fresh = new Set(rows.map((r) => r.id));
    let sum = 0;
    for (const e of events) if (fresh.has(e.id)) sum += e.value;
    await client.query(`UPDATE ${schema}.totals SET handled = handled + $1, value_sum = value_sum + $2, repeats = repeats + $3`, [
      fresh.size,
      sum,
      events.length - fresh.size,
    ]);
    await client.query('COMMIT');
    client.release();
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    client.release(error);
    throw error;
  }
}
