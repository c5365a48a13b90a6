/**
 * Lucy's chocolate factory: a fast maker, a slower wrapper, a slower boxer.
 * With demand flowing upstream, the maker only makes what the wrapper asked
 * for, so unwrapped chocolates never pile up on the belt.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { consumer, producer, producerConsumer } from '@stagefabric/runtime';

interface Chocolate {
  readonly id: number;
  readonly wrapped?: boolean;
}

/** Counters shared by the three stages of this one-process demo. */
const belt = { made: 0, wrapped: 0, boxed: 0, mostOnBelt: 0 };

function report(what: string): void {
  const onBelt = belt.made - belt.boxed;
  belt.mostOnBelt = Math.max(belt.mostOnBelt, onBelt);
  console.log(
    `${what.padEnd(22)} made ${String(belt.made).padStart(3)}  wrapped ${String(belt.wrapped).padStart(3)}  boxed ${String(belt.boxed).padStart(3)}  on the belt ${onBelt}`,
  );
}

export const maker = producer<{ next: number; total: number }, Chocolate, { total: number }>({
  init: ({ total }) => ({ state: { next: 0, total } }),
  handleDemand(demand, state) {
    const count = Math.min(demand, state.total - state.next);
    const chocolates = Array.from({ length: count }, (_, i) => ({ id: state.next + i }));
    belt.made += count;
    report(`maker made ${count}`);
    const next = state.next + count;
    return next >= state.total
      ? { events: chocolates, state: { ...state, next }, stop: 'normal' }
      : { events: chocolates, state: { ...state, next } };
  },
});

export const wrapper = producerConsumer<{ msPerChocolate: number }, Chocolate, Chocolate, { msPerChocolate: number }>({
  init: (args) => ({ state: args }),
  async handleEvents(chocolates, _from, state) {
    await sleep(state.msPerChocolate * chocolates.length);
    belt.wrapped += chocolates.length;
    report(`wrapper wrapped ${chocolates.length}`);
    return { events: chocolates.map((c) => ({ ...c, wrapped: true })) };
  },
});

export const boxer = consumer<{ msPerBox: number }, Chocolate, { msPerBox: number }>({
  init: (args) => ({ state: args }),
  async handleEvents(chocolates, _from, state) {
    await sleep(state.msPerBox);
    belt.boxed += chocolates.length;
    report(`boxer boxed ${chocolates.length}`);
  },
  terminate() {
    console.log(`done: ${belt.boxed} chocolates boxed; at most ${belt.mostOnBelt} were ever between maker and box`);
  },
});
