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

/** Counters of the stages running in this process; the belt is visible only when all three run here. */
const belt = { made: 0, wrapped: 0, boxed: 0, mostOnBelt: 0, stagesHere: 0 };

function report(what: string, detail = ''): void {
  const whole = belt.stagesHere === 3;
  const onBelt = belt.made - belt.boxed;
  if (whole) belt.mostOnBelt = Math.max(belt.mostOnBelt, onBelt);
  const counts = `made ${String(belt.made).padStart(3)}  wrapped ${String(belt.wrapped).padStart(3)}  boxed ${String(belt.boxed).padStart(3)}`;
  console.log(`${what.padEnd(22)} ${counts}${whole ? `  on the belt ${onBelt}` : ''}${detail}`);
}

export const maker = producer<{ next: number; total: number }, Chocolate, { total: number }>({
  init: ({ total }) => {
    belt.stagesHere++;
    return { state: { next: 0, total } };
  },
  handleDemand(demand, state) {
    const count = Math.min(demand, state.total - state.next);
    const chocolates = Array.from({ length: count }, (_, i) => ({ id: state.next + i }));
    belt.made += count;
    report(`maker made ${count}`);
    const next = state.next + count;
    // The maker stops once the last chocolate is out; the others finish what they hold, then stop too.
    return next >= state.total
      ? { events: chocolates, state: { ...state, next }, stop: 'normal' }
      : { events: chocolates, state: { ...state, next } };
  },
});

export const wrapper = producerConsumer<{ msPerChocolate: number }, Chocolate, Chocolate, { msPerChocolate: number }>({
  init: (args) => {
    belt.stagesHere++;
    return { state: args };
  },
  async handleEvents(chocolates, _from, state) {
    await sleep(state.msPerChocolate * chocolates.length);
    belt.wrapped += chocolates.length;
    report(`wrapper wrapped ${chocolates.length}`);
    return { events: chocolates.map((c) => ({ ...c, wrapped: true })) };
  },
});

export const boxer = consumer<{ msPerBox: number }, Chocolate, { msPerBox: number }>({
  init: (args) => {
    belt.stagesHere++;
    return { state: args };
  },
  async handleEvents(chocolates, _from, state) {
    await sleep(state.msPerBox);
    belt.boxed += chocolates.length;
    // Which ones, so a run over several hosts can be checked: each chocolate boxed once.
    report(`boxer boxed ${chocolates.length}`, `  [${chocolates.map((c) => `#${c.id}`).join(' ')}]`);
  },
  terminate() {
    const most = belt.stagesHere === 3 ? `; at most ${belt.mostOnBelt} were ever between maker and box` : '';
    console.log(`done: ${belt.boxed} chocolates boxed${most}`);
  },
});
