export { decodeMessage, encodeEntries, encodeMessage } from './codec.js';
export { demandAuditFile } from './demand-audit.js';
export {
  FABRIC_DEFAULTS,
  type FabricEvent,
  FabricNode,
  type FabricNodeOptions,
  type FabricNodeStats,
  type NodeStatus,
  splitInstance,
} from './fabric-node.js';
export { FabricSecret, MIN_SECRET_CHARS, SECRET_ENV } from './fabric-secret.js';
export { type FabricStatus, type ReadFabricStatusOptions, readFabricStatus } from './fabric-status.js';
export { decodeHeartbeat, encodeHeartbeat, type Heartbeat, type HeartbeatReading, isRefused, type RefusedHeartbeat } from './heartbeat.js';
export { MemoryFabric, MemoryTransport, type MemoryTransportOptions } from './memory-transport.js';
export { checkName, isInstance, isName, NAME_RULE, splitKey } from './names.js';
export { openRedis, safeRedisError } from './redis-connection.js';
export { INBOX_GROUP, type RedisKeys, redisKeys } from './redis-keys.js';
export { REDIS_TRANSPORT_DEFAULTS, RedisTransport, type RedisTransportOptions } from './redis-transport.js';
export type { DemandRecord } from './remote-producer.js';
export {
  DEAD_LETTER_KINDS,
  type DeadLetter,
  type DeadLetterKind,
  type InboundEntry,
  type SendFailure,
  type Transport,
  type TransportEvents,
} from './transport.js';
export { checkWireMessage, WIRE_LIMITS, type WireMessage, type WireReason, type WireSubscribeOptions } from './wire.js';
