import { describe, expect, it } from 'vitest';
import { parseTopology, TopologyError, topologyJsonSchema } from '../src/index.js';
import { scheduleDefinition } from '../src/topology.js';

function issuesOf(text: string) {
  try {
    parseTopology(text, 'topo.yaml');
  } catch (error) {
    if (error instanceof TopologyError) return error.issues;
    throw error;
  }
  throw new Error('expected the topology to be rejected');
}

describe('topology files', () => {
  it('parses stages, replicas, subscriptions and applies defaults', () => {
    const t = parseTopology(
      [
        'stages:',
        '  counter:',
        '    module: ./stages.js',
        '    args: 5',
        '  printer:',
        '    module: ./stages.js',
        '    replicas: 3',
        '    subscribe: [counter]',
        '',
      ].join('\n'),
      '/x/topo.yaml',
    );
    expect(t.file).toBe('/x/topo.yaml');
    expect(t.stages.counter).toEqual({ module: './stages.js', args: 5, replicas: 1, subscribe: [], restart: 'permanent' });
    expect(t.stages.printer?.replicas).toBe(3);
    expect(t.stages.printer?.subscribe).toEqual([{ to: 'counter' }]);
    expect(t.supervisor).toEqual({ maxRestarts: 3, maxSeconds: 5 });
  });

  it('names the line, column and path of a wrong value', () => {
    const issues = issuesOf(
      [
        'stages:',
        '  counter:',
        '    module: ./stages.js',
        '  printer:',
        '    module: ./stages.js',
        '    subscribe:',
        '      - to: counter',
        '        maxDemand: ten',
        '',
      ].join('\n'),
    );
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ file: 'topo.yaml', line: 8, column: 20, path: 'stages.printer.subscribe[0].maxDemand' });
    expect(issues[0]?.message).toMatch(/expected number/);
  });

  it('tasks.prefix names the BullMQ key prefix; a prefix Redis keys should not hold is refused with its line', () => {
    const ok = parseTopology(
      [
        'tasks: { handlers: ./h.js, store: bullmq, prefix: jobs-eu.1 }',
        'stages:',
        '  runner: { module: stagefabric:task-runner }',
        '',
      ].join('\n'),
      '/x/topo.yaml',
    );
    expect(ok.tasks).toMatchObject({ store: 'bullmq', prefix: 'jobs-eu.1' });
    const issues = issuesOf(
      ['tasks:', '  handlers: ./h.js', '  prefix: "bull:jobs"', 'stages:', '  runner: { module: stagefabric:task-runner }', ''].join('\n'),
    );
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ line: 3, path: 'tasks.prefix', message: 'must be letters, digits, _ . - (at most 64)' });
  });

  it('tasks.schedules declares schedules; a bad cron, time zone, backfill or option is refused naming its line and field', () => {
    const head = ['stages:', '  a:', '    module: ./a.js', 'tasks:', '  handlers: ./h.js', '  schedules:'];
    const t = parseTopology(
      [
        ...head,
        '    nightly:',
        "      cron: '0 3 * * *'",
        '      tz: Europe/Berlin',
        '      task: report',
        '      args: { full: true }',
        '      options: { queue: reports, maxAttempts: 3 }',
        '      backfill: 2',
        '',
      ].join('\n'),
      'topo.yaml',
    );
    const nightly = t.tasks?.schedules?.nightly;
    expect(nightly).toBeDefined();
    expect(scheduleDefinition('nightly', nightly as NonNullable<typeof nightly>)).toEqual({
      name: 'nightly',
      cron: '0 3 * * *',
      tz: 'Europe/Berlin',
      backfill: 2,
      task: { name: 'report', args: { full: true }, options: { queue: 'reports', maxAttempts: 3 } },
    });
    const bad = (lines: string[]) => issuesOf([...head, '    nightly:', ...lines, ''].join('\n'));
    expect(bad(["      cron: '61 * * * *'", '      task: report'])).toMatchObject([
      { line: 8, path: 'tasks.schedules.nightly.cron', message: expect.stringMatching(/cron = "61 \* \* \* \*".*minute/) },
    ]);
    expect(bad(["      cron: '* * * * *'", '      tz: Mars/Olympus', '      task: report'])).toMatchObject([
      { line: 9, path: 'tasks.schedules.nightly.tz', message: expect.stringMatching(/tz = "Mars\/Olympus".*time zone/i) },
    ]);
    expect(bad(["      cron: '* * * * *'", '      task: report', '      backfill: -1'])).toMatchObject([
      { line: 10, path: 'tasks.schedules.nightly.backfill' },
    ]);
    expect(bad(["      cron: '* * * * *'", '      task: report', '      options: { runAt: 5 }'])).toMatchObject([
      { line: 10, path: 'tasks.schedules.nightly.options', message: expect.stringMatching(/runAt/) },
    ]);
    expect(bad(["      cron: '* * * * *'"])).toMatchObject([{ path: 'tasks.schedules.nightly.task', message: 'is required' }]);
    // A fire's task may bring its own backoff; a bad one is named by its field.
    const own = parseTopology(
      [
        ...head,
        '    retried:',
        "      cron: '* * * * *'",
        '      task: report',
        '      options: { backoff: { type: fixed, delayMs: 5000 } }',
        '',
      ].join('\n'),
      'topo.yaml',
    ).tasks?.schedules?.retried;
    expect(scheduleDefinition('retried', own as NonNullable<typeof own>).task.options).toEqual({
      backoff: { type: 'fixed', delayMs: 5000 },
    });
    expect(bad(["      cron: '* * * * *'", '      task: report', '      options: { backoff: { type: fixed, delay: 5 } }'])).toMatchObject([
      { line: 10, path: 'tasks.schedules.nightly.options.backoff.delayMs', message: expect.stringMatching(/expected number/) },
      { line: 10, path: 'tasks.schedules.nightly.options.backoff', message: 'Unrecognized key: "delay"' },
    ]);
  });

  it('tasks.retention takes a rule per finished state or false; an empty rule or unknown state is refused with its path', () => {
    const head = ['stages:', '  a:', '    module: ./a.js', 'tasks:', '  handlers: ./h.js'];
    const t = parseTopology([...head, '  retention:', '    success: { maxCount: 10 }', '    cancelled: false', ''].join('\n'), 'topo.yaml');
    expect(t.tasks?.retention).toEqual({ success: { maxCount: 10 }, cancelled: false });
    expect(parseTopology([...head, '  retention: false', ''].join('\n'), 'topo.yaml').tasks?.retention).toBe(false);
    expect(issuesOf([...head, '  retention:', '    success: {}', ''].join('\n'))).toMatchObject([
      { line: 7, path: 'tasks.retention.success', message: expect.stringMatching(/give maxAgeMs, maxCount or both/) },
    ]);
    expect(issuesOf([...head, '  retention:', '    waiting: { maxCount: 1 }', ''].join('\n'))).toMatchObject([
      { path: 'tasks.retention', message: expect.stringMatching(/waiting/) },
    ]);
  });

  it('tasks.limits declares limits per queue; a wrong limit is refused with its line and path', () => {
    const ok = parseTopology(
      [
        'tasks:',
        '  handlers: ./h.js',
        '  limits:',
        '    emails: { concurrency: 10, rate: { max: 100, intervalMs: 60000 } }',
        '    exports: { concurrency: 4, group: { concurrency: 1 } }',
        'stages:',
        '  runner: { module: stagefabric:task-runner }',
        '',
      ].join('\n'),
      '/x/topo.yaml',
    );
    expect(ok.tasks?.limits).toEqual({
      emails: { concurrency: 10, rate: { max: 100, intervalMs: 60_000 } },
      exports: { concurrency: 4, group: { concurrency: 1 } },
    });
    const issues = issuesOf(
      [
        'tasks:',
        '  handlers: ./h.js',
        '  limits:',
        '    emails: { concurrency: 0, rate: { max: 5 } }',
        'stages:',
        '  runner: { module: stagefabric:task-runner }',
        '',
      ].join('\n'),
    );
    expect(issues.map((i) => [i.line, i.path])).toEqual([
      [4, 'tasks.limits.emails.concurrency'],
      [4, 'tasks.limits.emails.rate.intervalMs'],
    ]);
  });

  it('rejects unknown keys, missing modules and subscriptions to stages that do not exist', () => {
    const issues = issuesOf(
      ['stages:', '  counter:', '    modul: ./stages.js', '  printer:', '    module: ./p.js', '    subscribe: [countr]', ''].join('\n'),
    );
    const text = issues.map((i) => `${i.line}:${i.path}: ${i.message}`);
    expect(text).toContain('3:stages.counter: Unrecognized key: "modul"');
    expect(text).toContain('3:stages.counter.module: is required');
  });

  it('cross-stage mistakes name the subscription', () => {
    const issues = issuesOf(
      ['stages:', '  counter:', '    module: ./stages.js', '  printer:', '    module: ./p.js', '    subscribe: [countr]', ''].join('\n'),
    );
    expect(issues).toEqual([
      {
        file: 'topo.yaml',
        line: 6,
        column: 17,
        path: 'stages.printer.subscribe[0]',
        message: 'subscribes to "countr", which is not a stage in this topology',
      },
    ]);
  });

  it('reports YAML syntax errors with their line', () => {
    const issues = issuesOf('stages:\n  counter:\n    module: [unclosed\n');
    expect(issues[0]?.line).toBeGreaterThanOrEqual(3);
    expect(issues[0]?.message).toMatch(/^YAML: /);
  });

  it('TopologyError reads as FILE:LINE:COLUMN: path: problem', () => {
    expect(() => parseTopology('stages: {}\n', 'empty.yaml')).toThrow('empty.yaml:1:9: stages: needs at least one stage');
  });

  it('exports a JSON Schema for editors', () => {
    const schema = topologyJsonSchema() as { properties: Record<string, unknown> };
    expect(Object.keys(schema.properties)).toEqual(expect.arrayContaining(['stages', 'supervisor', 'version']));
  });

  it('bounds maxDemand as the wire does, and node names to plain names', () => {
    const issues = issuesOf(
      [
        'stages:',
        '  counter:',
        '    module: ./stages.js',
        '    nodes: [kitchen, "bad node"]',
        '  printer:',
        '    module: ./stages.js',
        '    subscribe: [{ to: counter, maxDemand: 10000001 }]',
        '',
      ].join('\n'),
    );
    expect(issues.map((i) => [i.line, i.path, i.message])).toEqual([
      [4, 'stages.counter.nodes[1]', expect.stringMatching(/a node name must be 1 to 63 letters, digits/)],
      [7, 'stages.printer.subscribe[0].maxDemand', expect.stringMatching(/10000000/)],
    ]);
  });
});
