export { startLater } from './enqueue.js';
export {
  type OpenTaskStoreOptions,
  openTaskStore,
  TaskStoreConfigError,
  type TaskStoreKind,
} from './open-task-store.js';
export {
  FINISHED_STATES,
  type FinishedState,
  type PruneCount,
  RETENTION_DEFAULTS,
  type RetentionPolicy,
  type RetentionRule,
  type RetentionStore,
  resolveRetention,
  startTaskRetention,
  type TaskRetention,
  type TaskRetentionOptions,
} from './retention.js';
export {
  checkSchedule,
  nextFire,
  planFires,
  SCHEDULE_DEFAULTS,
  type ScheduleDefinition,
  ScheduleError,
  type ScheduleRecord,
  type ScheduleStore,
  taskForFire,
} from './schedules.js';
export { type Query, type SqlDriver, SqlTaskStore, type SqlTaskStoreOptions } from './sql-task-store.js';
export type { StandardSchemaV1 } from './standard-schema.js';
export {
  checkTaskArgs,
  enqueueTasks,
  TaskArgsError,
  type TaskArgsIssue,
  type TaskOf,
  validateTaskArgs,
} from './task-args.js';
export {
  BACKOFF_DEFAULTS,
  type BackoffOptions,
  backoffDelayMs,
  checkBackoff,
  retryDelayMs,
  type StoredBackoff,
  storedBackoffProblem,
  type TaskBackoff,
} from './task-backoff.js';
export {
  decodeEvent,
  decodeEvents,
  EVENT_BUFFER_DEFAULT,
  type TaskEvent,
  type TaskEventReason,
  type TaskEventsOptions,
  type TaskEventsOverflow,
  type TaskEventsStore,
  type TaskEventType,
} from './task-events.js';
export { checkLimits, checkTasks, TASK_DEFAULTS, TaskInputError } from './task-input.js';
export {
  startTaskPipeline,
  startTaskWorker,
  type TaskPipeline,
  type TaskPipelineOptions,
  type TaskWorker,
  type TaskWorkerOptions,
} from './task-pipeline.js';
export { TASK_PRODUCER_DEFAULTS, type TaskProducerOptions, taskProducer } from './task-producer.js';
export {
  defineTask,
  type RegisteredTask,
  type TaskContext,
  type TaskDefinition,
  type TaskHandler,
  type TaskHandlerOptions,
  TaskRegistry,
  type TypedTask,
} from './task-registry.js';
export {
  type LeaseLossPhase,
  type RefusalReason,
  TASK_RUNNER_DEFAULTS,
  type TaskInHand,
  type TaskRunnerOptions,
  taskRunner,
} from './task-runner.js';
export {
  startTaskScheduler,
  TASK_SCHEDULER_DEFAULTS,
  type TaskScheduler,
  type TaskSchedulerOptions,
} from './task-scheduler.js';
export {
  type ClaimBatch,
  type ClaimedTask,
  type EnqueueOptions,
  type EnqueueResult,
  FINAL_STATES,
  type NewTask,
  type QueueLimits,
  type RateLimit,
  RETRYABLE_STATES,
  type TaskAttempt,
  type TaskClaim,
  type TaskCount,
  type TaskFilter,
  type TaskListFilter,
  type TaskOutcomeRecord,
  type TaskProgress,
  type TaskRecord,
  type TaskState,
  type TaskStore,
} from './task-store.js';
