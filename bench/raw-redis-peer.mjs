// The bare ioredis baseline: `produce` XADDs batches of `batch` events per entry (default 1000);
// `consume` reads them with XREADGROUP COUNT and XACKs; `echo` answers pings.
import { Redis } from 'ioredis';
import { Packr } from 'msgpackr';

const [, , role, url, stream, total, batch] = process.argv;
const packr = new Packr({ useRecords: false });
const redis = new Redis(url);
const BATCH = Number(batch ?? 1000);

if (role === 'produce') {
  for (let next = 0; next < Number(total); next += BATCH) {
    const events = Array.from({ length: Math.min(BATCH, Number(total) - next) }, (_, i) => next + i);
    await redis.xadd(stream, '*', 'm', packr.pack({ events }));
  }
} else if (role === 'consume') {
  await redis.xgroup('CREATE', stream, 'g', '0', 'MKSTREAM').catch(() => {});
  let count = 0;
  let first = 0;
  while (count < Number(total)) {
    const reply = await redis.xreadgroupBuffer('GROUP', 'g', 'c', 'COUNT', 100, 'BLOCK', 1000, 'STREAMS', stream, '>');
    for (const [, entries] of reply ?? []) {
      const ids = [];
      for (const [id, fields] of entries) {
        if (first === 0) first = performance.now();
        count += packr.unpack(fields[1]).events.length;
        ids.push(id);
      }
      await redis.xack(stream, 'g', ...ids);
    }
  }
  process.stdout.write(`${JSON.stringify({ count, ms: performance.now() - first })}\n`);
} else if (role === 'echo') {
  // Reads pings from `stream`:in and answers each on `stream`:out, until told to stop.
  let last = '$';
  for (;;) {
    const reply = await redis.xread('BLOCK', 1000, 'STREAMS', `${stream}:in`, last);
    for (const [, entries] of reply ?? []) {
      for (const [id, fields] of entries) {
        last = id;
        if (fields[1] === 'stop') process.exit(0);
        await redis.xadd(`${stream}:out`, '*', 'm', fields[1]);
      }
    }
  }
}
await redis.quit();
