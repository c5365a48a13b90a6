export { type BackoffBounds, backoffMs } from './backoff.js';
export { type BufferKeep, EventBuffer } from './buffer.js';
export { type Clock, FakeClock, systemClock, type TimerHandle } from './clock.js';
export {
  CONCURRENT_CONSUMER_DEFAULTS,
  type ConcurrentConsumerOptions,
  type ConcurrentConsumerState,
  concurrentConsumer,
  type TaskOutcome,
  type TaskStatus,
} from './concurrent-consumer.js';
export { BroadcastDispatcher } from './dispatchers/broadcast-dispatcher.js';
export { DemandDispatcher } from './dispatchers/demand-dispatcher.js';
export type { Dispatcher, DispatcherHost, DispatcherSpec } from './dispatchers/dispatcher.js';
export { hashEvent, PartitionDispatcher } from './dispatchers/partition-dispatcher.js';
export { describeValue, ERROR_CODES, FabricError, type FabricErrorCode, type FabricErrorOptions, isFabricError } from './errors.js';
export { fromIterable, type PipelineStep, pipeline, type ToAsyncIterableOptions, toAsyncIterable } from './interop.js';
export { PRODUCER_DEFAULTS, SUBSCRIPTION_DEFAULTS } from './options.js';
export {
  type RedisConnectionOptions,
  redactCredentials,
  redactError,
  redactUrl,
  redisConnectionOptions,
  redisPassword,
} from './redis-url.js';
export {
  type AnyStageSpec,
  type ConsumerSpec,
  consumer,
  type ProducerConsumerSpec,
  type ProducerSpec,
  producer,
  producerConsumer,
  type StageContext,
} from './spec.js';
export type { StageStats } from './stage.js';
export type { StageMessage, StagePeer } from './stage-protocol.js';
export {
  type ChildSpec,
  type RestartPolicy,
  SUPERVISOR_DEFAULTS,
  Supervisor,
  type SupervisorEvent,
  type SupervisorOptions,
} from './supervisor.js';
export { type StageObserver, StageSystem, type StageSystemOptions, type StartOptions, type SystemEvent } from './system.js';
export { isTraceparent, type StartSpanOptions, startSpan, TRACER_NAME, type TraceSpan } from './tracing.js';
export {
  type CallbackResult,
  type CallFrom,
  type CallResult,
  type CancelInfo,
  type CancelMode,
  type ConsumerOptions,
  type ExitReason,
  type InitResult,
  isCleanExit,
  type ProducerOptions,
  type StageAddress,
  type StageKind,
  type StageRef,
  type SubscribeOptions,
  type SubscribeResult,
  type Subscription,
} from './types.js';
