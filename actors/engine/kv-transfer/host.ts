/**
 * The `host` KV transport: page bytes as binary msgpack frames through the actor runtime, one
 * `kv_write` query to `engine/<dst>` per chunk. Every engine has it (CPU engines, other hosts),
 * and it is the fallback of the GPU transports.
 */
import type { ActorSystemApi } from '../../runtime/types.ts';
import { queryBefore, type KvTransport } from './transport.ts';

/** Largest kv_write payload of the host transport. */
export const HOST_CHUNK_BYTES = 4 * 1024 * 1024;

export function hostTransport(system: ActorSystemApi, dst: string): KvTransport {
  return {
    name: 'host',
    maxChunkBytes: HOST_CHUNK_BYTES,
    async write(id, pageIds, data, deadline) {
      await queryBefore(system, dst, { type: 'kv_write', id, pageIds, data }, deadline);
    },
  };
}
