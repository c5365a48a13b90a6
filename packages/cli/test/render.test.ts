import { fabricRates } from '@stagefabric/node-agent';
import { describe, expect, it } from 'vitest';
import { statusSample as sample } from '../../../test/support/fabric-status-sample.js';
import { renderStatus } from '../src/status.js';
import { renderTaskEvent } from '../src/tasks-commands.js';
import { renderTop } from '../src/top.js';

describe('stagectl top and status print what nodes publish as text', () => {
  it('prints node and stage names with control characters escaped, in top and in status', () => {
    const evil = sample(0, 0, {}, []);
    const nodes = evil.status.nodes.map((n) => ({
      ...n,
      node: `${n.node}\u001b[2J`,
      stages: n.stages.map((st) => ({ ...st, name: `${st.name}\u0007` })),
    }));
    const status = { ...evil.status, nodes };
    const { stages } = fabricRates({ at: 0, status }, { at: 1000, status });
    for (const text of [renderTop(stages, undefined, 'ns\u001b]0;x'), renderStatus(status)]) {
      expect(text).toContain('a\\x1b[2J');
      expect(text).toContain('counter\\x07');
      // biome-ignore lint/suspicious/noControlCharactersInRegex: none may reach the terminal.
      expect(text).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f]/);
    }
  });
});

describe('stagectl tasks watch prints each event as one line', () => {
  const at = Date.parse('2026-12-03T10:00:00.000Z');
  it('says why a task went back or failed when its lease expired, and which claims were handed back', () => {
    expect(
      renderTaskEvent({
        type: 'retried',
        id: '7',
        queue: 'mail',
        name: 'send',
        attempt: 2,
        reason: 'lease-lost',
        error: 'lease of node-a expired: its node stopped or stalled',
        at,
      }),
    ).toBe(
      '2026-12-03T10:00:00.000Z  retried    mail  7  send  attempt 2  lease-lost  lease of node-a expired: its node stopped or stalled\n',
    );
    expect(renderTaskEvent({ type: 'released', id: 'mail/9', queue: 'mail', name: 'send', attempt: 1, at })).toBe(
      '2026-12-03T10:00:00.000Z  released   mail  mail/9  send  attempt 1\n',
    );
    // An error is whatever a handler threw: no control character of it reaches the terminal.
    expect(renderTaskEvent({ type: 'failed', id: '8', queue: 'q', error: 'boom\u001b[2J', at })).toContain('boom\\x1b[2J');
  });
});
