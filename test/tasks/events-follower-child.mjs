// Follows a PostgreSQL store's task events until killed; prints "following"
// once the event of a task it enqueued itself has come back.
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';

const [url, schema, ttl] = process.argv.slice(2);
const store = new PostgresTaskStore({ url, schema, followerTtlMs: Number(ttl) });
let following = false;
const probing = setInterval(() => store.enqueue([{ name: 'probe', options: { queue: 'child-probe' } }]).catch(() => {}), 20);
for await (const e of store.events()) {
  if (!following && e.type === 'enqueued' && e.queue === 'child-probe') {
    following = true;
    clearInterval(probing);
    console.log('following');
  }
}
