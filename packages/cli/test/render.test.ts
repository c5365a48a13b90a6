import { fabricRates } from '@stagefabric/node-agent';
import { describe, expect, it } from 'vitest';
import { statusSample as sample } from '../../../test/support/fabric-status-sample.js';
import { renderStatus } from '../src/status.js';
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
