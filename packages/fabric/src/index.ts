export { decodeMessage, encodeMessage } from './codec.js';
export { demandAuditFile } from './demand-audit.js';
export {
  FABRIC_DEFAULTS,
  type FabricEvent,
  FabricNode,
  type FabricNodeOptions,
  type NodeStatus,
  splitInstance,
} from './fabric-node.js';
export { type FabricStatus, readFabricStatus } from './fabric-status.js';
export { MemoryFabric, MemoryTransport, type MemoryTransportOptions } from './memory-transport.js';
export { INBOX_GROUP, type RedisKeys, redisKeys } from './redis-keys.js';
export { REDIS_TRANSPORT_DEFAULTS, RedisTransport, type RedisTransportOptions } from './redis-transport.js';
export type { DemandRecord } from './remote-producer.js';
export type { DeadLetter, InboundEntry, Transport, TransportEvents } from './transport.js';
export { checkWireMessage, type WireMessage, type WireReason, type WireSubscribeOptions } from './wire.js';
