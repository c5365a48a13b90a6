import type { TaskRecord } from '@stagefabric/tasks';
import { expect, it } from 'vitest';
import { taskLive } from '../src/console/task-pages.js';

const running: TaskRecord = {
  id: '7',
  queue: 'default',
  name: 'export',
  args: null,
  state: 'running',
  priority: 0,
  attempt: 1,
  maxAttempts: 5,
  timeoutMs: 30_000,
  runAt: new Date(),
  uniqueKey: null,
  leaseOwner: 'w1/abc',
  leaseExpiresAt: new Date(),
  lastError: null,
  createdAt: new Date(),
  updatedAt: new Date(),
  finishedAt: null,
  progress: null,
};

it("the console's task page shows the progress its handler reported: a bar for a percentage, else its JSON, escaped", () => {
  expect(String(taskLive(running, [], false))).not.toContain('task-progress');
  const bar = String(taskLive({ ...running, progress: 42.5 }, [], false));
  expect(bar).toContain('<progress max="100" value="42.5"></progress> 42.5%');
  const json = String(taskLive({ ...running, state: 'success', progress: { step: '<b>upload</b>' } }, [], false));
  expect(json).toContain('progress <code>{&quot;step&quot;:&quot;&lt;b&gt;upload&lt;/b&gt;&quot;}</code>');
});
