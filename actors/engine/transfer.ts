/**
 * KV transports: how the sender of a remote_send puts page bytes into the receiver's reserved
 * pages. One interface; `host` (page bytes as binary msgpack frames through the actor runtime)
 * is the one every engine has. GPU transports (cuda-ipc, nvshmem) slot in behind the same
 * interface.
 */
import { MicroserveError, isMicroserveError } from '../../common/errors.ts';
import type { KvAddr } from '../messages.ts';
import type { ActorSystemApi } from '../runtime/types.ts';

/** Largest kv_write payload of the host transport. */
export const HOST_CHUNK_BYTES = 4 * 1024 * 1024;

export interface KvTransport {
  readonly name: string;
  /** [maxChunkBytes] the sender splits payloads to at most this many bytes (≥ one page). */
  readonly maxChunkBytes: number;
  /**
   * Writes `data` ((dstPageIds.length, pageBytes), wire layout) into the receiver's pages for
   * request `id`. Resolves once the bytes landed; rejects with TRANSFER_TIMEOUT after `deadline`
   * (epoch ms), TRANSFER_FAILED when the receiver is gone, or the receiver's typed error.
   */
  write(id: string, dstPageIds: number[], data: Uint8Array, deadline: number): Promise<void>;
  /**
   * [copyPages] device-to-device transports: copy the sender's `srcPageIds` into the receiver's
   * `dstPageIds` without staging bytes on the host; resolves to the bytes moved. When present the
   * sender uses it instead of readPages + write, and on a failure other than the deadline falls
   * back to `fallback`.
   */
  copyPages?(id: string, srcPageIds: number[], dstPageIds: number[], deadline: number): Promise<number>;
  /** [fallback] the transport to use when copyPages or push setup fails (host). */
  readonly fallback?: KvTransport;
  /**
   * [push] GPU transports that write into the receiver's pool from this engine's GPU, layer by
   * layer during the forwards that compute the pages (push.ts has the receiver's lease rules).
   * When present the sender prefers it to copyPages.
   */
  readonly push?: PushOps;
}

export interface PushOps {
  /** This backend's peer id of the receiver's pool (opened once, cached by the backend). */
  openPeer(): Promise<number>;
  /** Leases the receiver's `dstPageIds` of request `id` until `end` (or deadline + grace). */
  begin(id: string, dstPageIds: number[], deadline: number): Promise<void>;
  /** Ends the lease; `ok`: every write completed. Resolves to the bytes the receiver counted. */
  end(id: string, ok: boolean): Promise<number>;
}

/** kv_push_begin / kv_push_end queries to `engine/<dstEngine>` (shared by the GPU transports). */
export function pushMessages(system: ActorSystemApi, dstEngine: string): Pick<PushOps, 'begin' | 'end'> {
  const ref = system.ref(`engine/${dstEngine}`);
  return {
    async begin(id, pageIds, deadline) {
      const left = deadline - Date.now();
      if (left <= 0) throw new MicroserveError('TRANSFER_TIMEOUT', `KV transfer to ${dstEngine} passed its deadline`);
      try {
        await ref.query({ type: 'kv_push_begin', id, pageIds, ttlMs: left }, left);
      } catch (e) {
        throw transferError(e, dstEngine);
      }
    },
    async end(id, ok) {
      try {
        const r = (await ref.query({ type: 'kv_push_end', id, ok }, 10_000)) as { bytes: number };
        return r.bytes;
      } catch (e) {
        throw transferError(e, dstEngine);
      }
    },
  };
}

/** Picks the transport to reach `kvAddr.engine` (the first of its transports this engine has). */
export type TransportPicker = (kvAddr: KvAddr) => KvTransport;

/** Receiver errors that mean "the receiver is not there". */
const GONE = new Set(['ACTOR_NOT_FOUND', 'ACTOR_STOPPED', 'ACTOR_CRASHED', 'CONNECTION_LOST']);

/** Maps a failed write to the transfer's typed error. */
export function transferError(e: unknown, dst: string): MicroserveError {
  if (isMicroserveError(e)) {
    if (e.code === 'QUERY_TIMEOUT' || e.code === 'TRANSFER_TIMEOUT') return new MicroserveError('TRANSFER_TIMEOUT', `KV transfer to ${dst} passed its deadline`);
    if (GONE.has(e.code)) return new MicroserveError('TRANSFER_FAILED', `KV transfer to ${dst} failed: ${e.code}: ${e.message}`);
    return e;
  }
  return new MicroserveError('TRANSFER_FAILED', `KV transfer to ${dst} failed: ${(e as Error)?.message ?? String(e)}`);
}

/** The host transport over the actor runtime: `kv_write` queries to `engine/<dst>`. */
export function hostTransport(system: ActorSystemApi, dstEngine: string): KvTransport {
  const ref = system.ref(`engine/${dstEngine}`);
  return {
    name: 'host',
    maxChunkBytes: HOST_CHUNK_BYTES,
    async write(id, dstPageIds, data, deadline) {
      const left = deadline - Date.now();
      if (left <= 0) throw new MicroserveError('TRANSFER_TIMEOUT', `KV transfer to ${dstEngine} passed its deadline`);
      try {
        await ref.query({ type: 'kv_write', id, pageIds: dstPageIds, data }, left);
      } catch (e) {
        throw transferError(e, dstEngine);
      }
    },
  };
}
