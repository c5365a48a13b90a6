import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { TaskRegistry } from '../src/index.js';
import { PGliteTaskStore } from '../src/pglite-task-store.js';
import { typedTaskSuite } from './typed-tasks.suite.js';

typedTaskSuite('embedded PGlite', async () => {
  const store = new PGliteTaskStore();
  await store.migrate();
  return store;
});

describe('a handlers module', () => {
  it('may export typed tasks ({ schema, handler }) beside plain handlers; a schema that is not a Standard Schema is refused by name', () => {
    const schema = z.object({ to: z.string() });
    const registry = TaskRegistry.from({ plain: () => {}, typed: { schema, handler: () => {} } });
    expect(registry.names()).toEqual(['plain', 'typed']);
    expect(registry.lookup('typed')?.schema).toBe(schema);
    expect(registry.lookup('plain')?.schema).toBeUndefined();
    expect(() => TaskRegistry.from({ typed: { schema: { parse() {} }, handler: () => {} } })).toThrow(
      expect.objectContaining({
        code: 'SF_BAD_STAGE_MODULE',
        message: expect.stringContaining('task "typed": schema must be a Standard Schema v1'),
      }),
    );
    expect(() => new TaskRegistry().register('typed', { schema, handler: 'nope' as never })).toThrow(
      /task "typed": handler must be a function/,
    );
  });
});
