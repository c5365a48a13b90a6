export { startLater } from './enqueue.js';
export {
  type OpenTaskStoreOptions,
  openTaskStore,
  TaskStoreConfigError,
  type TaskStoreKind,
} from './open-task-store.js';
export { type Query, type SqlDriver, SqlTaskStore, type SqlTaskStoreOptions } from './sql-task-store.js';
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
export { type TaskContext, type TaskHandler, TaskRegistry } from './task-registry.js';
export {
  type BackoffOptions,
  backoffDelayMs,
  type LeaseLossPhase,
  type RefusalReason,
  TASK_RUNNER_DEFAULTS,
  type TaskInHand,
  type TaskRunnerOptions,
  taskRunner,
} from './task-runner.js';
export {
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
