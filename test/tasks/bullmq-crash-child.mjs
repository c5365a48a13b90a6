// A process that drives the BullMQ store as hard as it can until it is
// killed: concurrent loops enqueue tasks under a few unique keys, claim them
// and finish each one way or another (success, a retry, a final error, a
// release, a cancel, or nothing: its lease lapses). The crash test kills it
// with SIGKILL at random moments and checks what Redis holds afterwards.
// Arguments: Redis URL, key prefix, and optionally the store's module (default the package's build;
// another build of the store can be put through the same kills).
const [url, prefix, module = '@stagefabric/tasks/bullmq'] = process.argv.slice(2);
const { BullMQTaskStore } = await import(module);

const store = new BullMQTaskStore({ url, prefix });
const LOOPS = 16;
const KEYS = 24;
const LEASE_MS = 400;

async function loop(n) {
  for (;;) {
    const key = `k${Math.floor(Math.random() * KEYS)}`;
    const [added] = await store.enqueue([{ name: 'crash', args: { loop: n }, options: { uniqueKey: key, maxAttempts: 3 } }]);
    if (Math.random() < 0.05) await store.cancel([added.id]);
    for (const task of await store.claim('default', 2, `crasher-${n}`, LEASE_MS)) {
      const claim = { id: task.id, attempt: task.attempt, claimant: task.claimant };
      const r = Math.random();
      if (r < 0.6) await store.complete([{ ...claim, status: 'success', durationMs: 1 }]);
      else if (r < 0.75 && task.attempt < task.maxAttempts)
        await store.complete([{ ...claim, status: 'error', error: 'again', retryAt: new Date(Date.now() + 5) }]);
      else if (r < 0.85) await store.complete([{ ...claim, status: 'timeout', error: 'too slow' }]);
      else if (r < 0.95) await store.release([claim]);
      // Otherwise it is left running: its lease lapses and recovery takes it back.
    }
    if (Math.random() < 0.05) await store.recoverExpired();
    // One line per round: the test kills the process after a number of them it picks at random.
    process.stdout.write('.\n');
  }
}

await store.migrate();
await Promise.all(Array.from({ length: LOOPS }, (_, n) => loop(n)));
