import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ERROR_CODES } from '@stagefabric/runtime';
import { expect, it } from 'vitest';

const README = readFileSync(resolve(import.meta.dirname, '../../../README.md'), 'utf8');

it("the README's error table lists every error code, each as input or operational as stagectl treats it", () => {
  const rows = [...README.matchAll(/^\| `(SF_[A-Z_]+)` +\| (yes|no) +\|/gm)].map((m) => [m[1], m[2] === 'yes']);
  expect(Object.fromEntries(rows)).toEqual(Object.fromEntries(Object.entries(ERROR_CODES).map(([code, { input }]) => [code, input])));
});
