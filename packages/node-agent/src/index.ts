export { AGENT_DEFAULTS, Agent, type AgentOptions, replicaName } from './agent.js';
export { CONSOLE_DEFAULTS, type ConsoleOptions, startConsole, type WebConsole } from './console/console-server.js';
export { type FabricRates, fabricRates, type StageRate, type StatusSample, type SubscriptionRate } from './fabric-rates.js';
export { HTTP_DEFAULTS, type HttpServerOptions, startHttpServer } from './http-server.js';
export { type CreateLoggerOptions, createLogger, type Logger } from './logger.js';
export { AgentMetrics, type AgentMetricsOptions, METRIC_NAMES, METRICS_SOURCE_TIMEOUT_MS, VERSION } from './metrics.js';
export { loadStageSpec, StageLoadError } from './stage-loader.js';
export { TaskHost, type TaskHostOptions } from './task-host.js';
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
