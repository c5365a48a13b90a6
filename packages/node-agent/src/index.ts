export { Agent, replicaName, type AgentOptions } from './agent.js';
export { createLogger, type CreateLoggerOptions, type Logger } from './logger.js';
export { StageLoadError, loadStageSpec } from './stage-loader.js';
export {
  TopologyError,
  loadTopology,
  parseTopology,
  topologyJsonSchema,
  type Topology,
  type TopologyIssue,
  type TopologyStage,
  type TopologySubscription,
} from './topology.js';
