export { Agent, type AgentOptions, replicaName } from './agent.js';
export { decodeMessage, encodeMessage } from './fabric/codec.js';
export { demandAuditFile } from './fabric/demand-audit.js';
export type { NodeStatus } from './fabric/fabric-node.js';
export { FABRIC_DEFAULTS, type FabricEvent, FabricNode, type FabricNodeOptions, splitInstance } from './fabric/fabric-node.js';
export { type FabricStatus, readFabricStatus } from './fabric/fabric-status.js';
export { MemoryFabric, MemoryTransport, type MemoryTransportOptions } from './fabric/memory-transport.js';
export { INBOX_GROUP, type RedisKeys, redisKeys } from './fabric/redis-keys.js';
export { REDIS_TRANSPORT_DEFAULTS, RedisTransport, type RedisTransportOptions } from './fabric/redis-transport.js';
export type { DemandRecord } from './fabric/remote-producer.js';
export type { DeadLetter, InboundEntry, Transport, TransportEvents } from './fabric/transport.js';
export { checkWireMessage, type WireMessage, type WireReason, type WireSubscribeOptions } from './fabric/wire.js';
export { type HttpServerOptions, startHttpServer } from './http-server.js';
export { type CreateLoggerOptions, createLogger, type Logger } from './logger.js';
export { AgentMetrics, type AgentMetricsOptions, METRIC_NAMES, VERSION } from './metrics.js';
export { loadStageSpec, StageLoadError } from './stage-loader.js';
export { BullMQTaskStore, type BullMQTaskStoreOptions } from './tasks/bullmq-task-store.js';
export { startLater } from './tasks/enqueue.js';
export {
  type OpenTaskStoreOptions,
  openTaskStore,
  TaskStoreConfigError,
  type TaskStoreKind,
} from './tasks/open-task-store.js';
export { PGliteTaskStore, type PGliteTaskStoreOptions } from './tasks/pglite-task-store.js';
export { PostgresTaskStore, type PostgresTaskStoreOptions, pgQuery } from './tasks/postgres-task-store.js';
export { type Query, type SqlDriver, SqlTaskStore, type SqlTaskStoreOptions } from './tasks/sql-task-store.js';
export { checkTasks, TASK_DEFAULTS, TaskInputError } from './tasks/task-input.js';
export { startTaskPipeline, type TaskPipeline, type TaskPipelineOptions } from './tasks/task-pipeline.js';
export { TASK_PRODUCER_DEFAULTS, type TaskProducerOptions, taskProducer } from './tasks/task-producer.js';
export { type TaskContext, type TaskHandler, TaskRegistry } from './tasks/task-registry.js';
export { type BackoffOptions, backoffDelayMs, TASK_RUNNER_DEFAULTS, type TaskRunnerOptions, taskRunner } from './tasks/task-runner.js';
export type {
  ClaimedTask,
  EnqueueOptions,
  EnqueueResult,
  NewTask,
  TaskCount,
  TaskOutcomeRecord,
  TaskRecord,
  TaskState,
  TaskStore,
} from './tasks/task-store.js';
export { FINAL_STATES } from './tasks/task-store.js';
export {
  loadTopology,
  parseTopology,
  type Topology,
  TopologyError,
  type TopologyIssue,
  type TopologyStage,
  type TopologySubscription,
  topologyJsonSchema,
} from './topology.js';
