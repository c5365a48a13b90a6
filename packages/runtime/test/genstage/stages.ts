/**
 * The stage modules of GenStage's test/gen_stage_test.exs (Counter,
 * DemandProducer, NothingProducer, Doubler, Postponer, Discarder, Sleeper,
 * Forwarder), written as our specs, and an Inbox standing in for the test
 * process's mailbox: stages send it tuples as arrays, `['consumed', events]`
 * for `{:consumed, events}`.
 */
import { isDeepStrictEqual } from 'node:util';
import { afterEach } from 'vitest';
import {
  type CallFrom,
  consumer,
  type ProducerOptions,
  producer,
  producerConsumer,
  type StageAddress,
  StageSystem,
  type StageSystemOptions,
  type SubscribeOptions,
  type Subscription,
} from '../../src/index.js';

type Matcher = unknown;

function matches(message: unknown, expected: Matcher): boolean {
  return typeof expected === 'function' ? Boolean((expected as (m: unknown) => unknown)(message)) : isDeepStrictEqual(message, expected);
}

/** The test process's mailbox: assert_receive, assert_received and refute_received. */
export class Inbox {
  readonly messages: unknown[] = [];
  /** Set once the inbox had to refuse messages: an endless producer outran a test that is failing anyway. */
  private overflowed = false;

  readonly send = (message: unknown): void => {
    // A bound, so a failing assertion over an endless Counter fails instead of exhausting memory.
    if (this.messages.length >= 10_000) {
      this.overflowed = true;
      return;
    }
    this.messages.push(message);
  };

  /** assert_receive: waits (polling, with a deadline) for the first message that matches, and removes it. */
  async assertReceive(expected: Matcher, timeoutMs = 3000): Promise<unknown> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.messages.findIndex((m) => matches(m, expected));
      if (i >= 0) return this.messages.splice(i, 1)[0];
      if (Date.now() > deadline || this.overflowed) {
        throw new Error(
          `no message matching ${describe(expected)} within ${timeoutMs} ms; the inbox holds ${describe(this.messages.slice(0, 20))}`,
        );
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** assert_received: the message is there now; it is removed. */
  assertReceived(expected: Matcher): unknown {
    const i = this.messages.findIndex((m) => matches(m, expected));
    if (i < 0) throw new Error(`no message matching ${describe(expected)}; the inbox holds ${describe(this.messages.slice(0, 20))}`);
    return this.messages.splice(i, 1)[0];
  }

  /** refute_received: no such message now. */
  refuteReceived(expected: Matcher): void {
    const found = this.messages.find((m) => matches(m, expected));
    if (found !== undefined) throw new Error(`unexpected message ${describe(found)}`);
  }
}

function describe(value: unknown): string {
  if (typeof value === 'function') return `[predicate ${value.toString().slice(0, 120)}]`;
  try {
    return JSON.stringify(value, (_k, v: unknown) =>
      typeof v === 'object' && v !== null && 'label' in v && 'id' in v ? `<${String((v as { label: unknown }).label)}>` : v,
    );
  } catch {
    return String(value);
  }
}

/** Matches `[tag, subscription, ...]` by the subscription's id, as `{tag, {_, ^ref}}`. */
export const withSub =
  (tag: string, subscription: Subscription | undefined, ...rest: unknown[]) =>
  (m: unknown): boolean =>
    Array.isArray(m) &&
    m[0] === tag &&
    subscription !== undefined &&
    (m[1] as Subscription | undefined)?.id === subscription.id &&
    isDeepStrictEqual(m.slice(2), rest);

/** Matches `[tag, ...]` whatever follows. */
export const tagged =
  (tag: string) =>
  (m: unknown): boolean =>
    Array.isArray(m) && m[0] === tag;

export const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);
export const doubled = (from: number, to: number): number[] => range(from, to).flatMap((x) => [x, x]);

const systems: StageSystem[] = [];

/** A system whose stages are all killed after the test: GenStage's linked processes die with the test. */
export function newSystem(options: StageSystemOptions = {}): StageSystem {
  const sys = new StageSystem(options);
  systems.push(sys);
  return sys;
}

afterEach(() => {
  for (const sys of systems.splice(0)) for (const stage of sys.list()) sys.kill(stage);
});

const demandOption = (options: SubscribeOptions, key: string): 'automatic' | 'manual' | undefined =>
  (options[key] as 'automatic' | 'manual' | undefined) ?? undefined;

/**
 * GenStageTest.Counter: a producer counting in batches, whose events can
 * also be queued by call, cast or info. With an Inbox as state it does not
 * count (GenStage's pid state) and reports subscribe, cancel and infos.
 */
export function Counter(options: ProducerOptions = {}) {
  return producer<number | Inbox, unknown, number | Inbox>({
    init: (state) => ({ state, ...options }),
    handleCall(message, from: CallFrom, state, ctx) {
      const [kind, events] = message as [string, unknown[]];
      if (kind === 'stop') return { stop: 'shutdown', reply: 'ok' };
      if (kind === 'early_reply_queue') {
        ctx.reply(from, state);
        return { events };
      }
      return { reply: state, events };
    },
    handleCast(message) {
      const [, events] = message as [string, unknown[]];
      return { events };
    },
    handleInfo(message, state) {
      if (Array.isArray(message) && message[0] === 'queue') return { events: message[1] as unknown[] };
      if (state instanceof Inbox) state.send(message);
      return undefined;
    },
    handleSubscribe(_side, options, subscription, state) {
      if (state instanceof Inbox) state.send(['producer_subscribed', subscription]);
      const demand = demandOption(options, 'producerDemand');
      return demand === undefined ? undefined : { demand };
    },
    handleCancel(info, subscription, state) {
      if (state instanceof Inbox) state.send(['producer_cancelled', subscription, info]);
    },
    handleDemand(demand, counter) {
      if (counter instanceof Inbox) return undefined;
      return { events: range(counter, counter + demand - 1), state: counter + demand };
    },
  });
}

/** GenStageTest.DemandProducer: emits each demand it gets as one event. */
export function DemandProducer(options: ProducerOptions = {}) {
  return producer<number[], number, void>({
    init: () => ({ state: [], ...options }),
    handleDemand: (demand, past) => ({ events: [demand], state: [demand, ...past] }),
  });
}

/** GenStageTest.NothingProducer: emits nothing, reports each demand. */
export function NothingProducer(inbox: Inbox, options: ProducerOptions = {}) {
  return producer<Inbox, never, void>({
    init: () => ({ state: inbox, ...options }),
    handleDemand(demand, state) {
      state.send(['demand', demand]);
    },
  });
}

/** GenStageTest.Doubler: a producer_consumer emitting every event twice, reporting what it sees. */
export function Doubler(
  inbox: Inbox,
  options: ProducerOptions & { readonly subscribeTo?: readonly (StageAddress | SubscribeOptions)[] } = {},
) {
  return producerConsumer<Inbox, number, number, void>({
    init: () => ({ state: inbox, ...options }),
    handleSubscribe(side, options, subscription, state) {
      state.send(['producer_consumer_subscribed', side, subscription]);
      const demand = demandOption(options, 'producerConsumerDemand');
      return demand === undefined ? undefined : { demand };
    },
    handleCancel(info, subscription, state) {
      state.send(['producer_consumer_cancelled', subscription, info]);
    },
    handleEvents(events, _from, state) {
      state.send(['producer_consumed', events]);
      return { events: events.flatMap((e) => [e, e]) };
    },
    handleInfo(message, state) {
      state.send(message);
    },
  });
}

/** GenStageTest.Postponer: handles events by sending them to itself, then emits them from handleInfo. */
export function Postponer(inbox: Inbox, subscribeTo: readonly (StageAddress | SubscribeOptions)[]) {
  return producerConsumer<Inbox, number, number, void>({
    init: () => ({ state: inbox, subscribeTo }),
    handleEvents(events, _from, _state, ctx) {
      ctx.send(ctx.self, ['postponed', events]);
    },
    handleInfo(message, state) {
      const [, events] = message as [string, number[]];
      state.send(['postponed', events]);
      return { events };
    },
  });
}

/** GenStageTest.Discarder: a producer_consumer that emits nothing. */
export function Discarder(inbox: Inbox, subscribeTo: readonly (StageAddress | SubscribeOptions)[]) {
  return producerConsumer<Inbox, number, number, void>({
    init: () => ({ state: inbox, subscribeTo }),
    handleEvents(events, _from, state) {
      state.send(['discarded', events]);
    },
  });
}

/**
 * GenStageTest.Sleeper sleeps forever in its first handle_events, so it
 * never asks again and never handles another batch. Here: it takes its
 * demand in hand, asks maxDemand once, reports its first batch and ignores
 * the rest, which is what its producers and the inbox see of the original.
 */
export function Sleeper(inbox: Inbox, subscribeTo: readonly (StageAddress | SubscribeOptions)[] = []) {
  return consumer<{ slept: boolean }, unknown, void>({
    init: () => ({ state: { slept: false }, subscribeTo }),
    handleSubscribe(_side, options, subscription, _state, ctx) {
      ctx.ask(subscription, options.maxDemand ?? 1000);
      return { demand: 'manual' };
    },
    handleEvents(events, _from, state) {
      if (state.slept) return;
      state.slept = true;
      inbox.send(['sleep', events]);
    },
  });
}

/** GenStageTest.Forwarder: a consumer forwarding all it sees to the inbox. */
export function Forwarder(inbox: Inbox, subscribeTo: readonly (StageAddress | SubscribeOptions)[] = []) {
  return consumer<Inbox, unknown, void>({
    init: () => ({ state: inbox, subscribeTo }),
    handleCall(message, _from, _state, ctx) {
      const [, subscription, n] = message as [string, Subscription, number];
      ctx.ask(subscription, n);
      return { reply: 'ok' };
    },
    handleSubscribe(_side, options, subscription, state) {
      state.send(['consumer_subscribed', subscription]);
      const demand = demandOption(options, 'consumerDemand');
      return demand === undefined ? undefined : { demand };
    },
    handleInfo(message, state) {
      state.send(message);
    },
    handleEvents(events, _from, state) {
      state.send(['consumed', events]);
    },
    handleCancel(info, subscription, state) {
      state.send(['consumer_cancelled', subscription, info]);
    },
    terminate(reason, state) {
      state.send(['terminated', reason]);
    },
  });
}

/**
 * The test process subscribing by hand (`send(producer, {:"$gen_producer",
 * {self(), ref}, {:subscribe, nil, []}})`): a consumer that asks only when
 * told (sys.ask) and reports events as `['$gen_consumer', subscription, events]`.
 */
export function HandConsumer(inbox: Inbox) {
  return consumer<Inbox, unknown, void>({
    init: () => ({ state: inbox }),
    handleSubscribe: (_side, _options, subscription, state) => {
      state.send(['hand_subscribed', subscription]);
      return { demand: 'manual' };
    },
    handleEvents(events, from, state) {
      state.send(['$gen_consumer', from, events]);
    },
  });
}
