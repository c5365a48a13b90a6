export { EventBuffer, type BufferKeep } from './buffer.js';
export { FakeClock, systemClock, type Clock, type TimerHandle } from './clock.js';
export { BroadcastDispatcher } from './dispatchers/broadcast-dispatcher.js';
export { DemandDispatcher } from './dispatchers/demand-dispatcher.js';
export type { Dispatcher, DispatcherSpec, SendEvents } from './dispatchers/dispatcher.js';
export { PartitionDispatcher, hashEvent } from './dispatchers/partition-dispatcher.js';
export { FabricError, describeValue, isFabricError, type FabricErrorCode } from './errors.js';
export { PRODUCER_DEFAULTS, SUBSCRIPTION_DEFAULTS } from './options.js';
export {
  consumer,
  producer,
  producerConsumer,
  type AnyStageSpec,
  type ConsumerSpec,
  type ProducerConsumerSpec,
  type ProducerSpec,
  type StageContext,
} from './spec.js';
export type { StageStats } from './stage.js';
export { StageSystem, type StageSystemOptions, type StartOptions, type SystemEvent } from './system.js';
export {
  isCleanExit,
  type CallFrom,
  type CallResult,
  type CallbackResult,
  type CancelInfo,
  type CancelMode,
  type ConsumerOptions,
  type ExitReason,
  type InitResult,
  type ProducerOptions,
  type StageAddress,
  type StageKind,
  type StageRef,
  type SubscribeOptions,
  type SubscribeResult,
  type Subscription,
} from './types.js';
export {
  CONCURRENT_CONSUMER_DEFAULTS,
  concurrentConsumer,
  type ConcurrentConsumerOptions,
  type ConcurrentConsumerState,
  type TaskOutcome,
  type TaskStatus,
} from './concurrent-consumer.js';
export { fromIterable, pipeline, toAsyncIterable, type PipelineStep, type ToAsyncIterableOptions } from './interop.js';
export {
  SUPERVISOR_DEFAULTS,
  Supervisor,
  type ChildSpec,
  type RestartPolicy,
  type SupervisorEvent,
  type SupervisorOptions,
} from './supervisor.js';
