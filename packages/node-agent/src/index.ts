export { Agent, type AgentOptions, replicaName } from './agent.js';
export { decodeMessage, encodeMessage } from './fabric/codec.js';
export type { NodeStatus } from './fabric/fabric-node.js';
export { FABRIC_DEFAULTS, type FabricEvent, FabricNode, type FabricNodeOptions, splitInstance } from './fabric/fabric-node.js';
export { type FabricStatus, readFabricStatus } from './fabric/fabric-status.js';
export { MemoryFabric, MemoryTransport, type MemoryTransportOptions } from './fabric/memory-transport.js';
export { INBOX_GROUP, type RedisKeys, redisKeys } from './fabric/redis-keys.js';
export { REDIS_TRANSPORT_DEFAULTS, RedisTransport, type RedisTransportOptions } from './fabric/redis-transport.js';
export type { DeadLetter, InboundEntry, Transport, TransportEvents } from './fabric/transport.js';
export { checkWireMessage, type WireMessage, type WireReason, type WireSubscribeOptions } from './fabric/wire.js';
export { type HttpServerOptions, startHttpServer } from './http-server.js';
export { type CreateLoggerOptions, createLogger, type Logger } from './logger.js';
export { AgentMetrics, type AgentMetricsOptions, METRIC_NAMES, VERSION } from './metrics.js';
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
