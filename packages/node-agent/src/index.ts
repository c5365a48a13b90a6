export { Agent, type AgentOptions, replicaName } from './agent.js';
export { type CreateLoggerOptions, createLogger, type Logger } from './logger.js';
export { loadStageSpec, StageLoadError } from './stage-loader.js';
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
