/**
 * KV transports: how the sender of a remote_send puts page bytes into the receiver's reserved
 * pages. One interface, one file per transport: `host.ts` (page bytes as binary msgpack frames
 * through the actor runtime; every engine has it), `cuda-ipc.ts` and `nvshmem.ts` (GPU push:
 * the sender's forwards write the pages layer by layer). `pick.ts` chooses one per receiver.
 *
 * This file also holds the two checks every transport shares: the deadline (`timeLeft`) and the
 * mapping of a failed hop to the transfer's typed error (`transferError`).
 */
import { MicroserveError, isMicroserveError } from '../../../common/errors.ts';
import type { KvAddr } from '../../messages.ts';
import type { ActorSystemApi } from '../../runtime/types.ts';

export interface KvTransport {
  readonly name: string;
  /** [maxChunkBytes] the sender splits `write` payloads to at most this many bytes (≥ one page). */
  readonly maxChunkBytes: number;
  /**
   * Writes `data` ((dstPageIds.length, pageBytes), wire layout) into the receiver's pages for
   * request `id`. Resolves once the bytes landed; rejects with TRANSFER_TIMEOUT after `deadline`
   * (epoch ms), TRANSFER_FAILED when the receiver is gone, or the receiver's typed error.
   * Push transports reject: they move pages with `push`.
   */
  write(id: string, dstPageIds: number[], data: Uint8Array, deadline: number): Promise<void>;
  /** [fallback] the transport to use when push setup fails (host). */
  readonly fallback?: KvTransport;
  /**
   * [push] GPU transports that write into the receiver's pool from this engine's GPU, layer by
   * layer during the forwards that compute the pages (leases.ts has the receiver's lease rules).
   * When present the sender uses it instead of `write`.
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

/** Picks the transport to reach `kvAddr.engine` (the first of its transports this engine has). */
export type TransportPicker = (kvAddr: KvAddr) => KvTransport;

/** Receiver errors that mean "the receiver is not there". */
const GONE = new Set(['ACTOR_NOT_FOUND', 'ACTOR_STOPPED', 'ACTOR_CRASHED', 'CONNECTION_LOST']);

/** Maps a failed hop to the transfer's typed error. */
export function transferError(e: unknown, dst: string): MicroserveError {
  if (isMicroserveError(e)) {
    if (e.code === 'QUERY_TIMEOUT' || e.code === 'TRANSFER_TIMEOUT') return deadlineError(dst);
    if (GONE.has(e.code)) return new MicroserveError('TRANSFER_FAILED', `KV transfer to ${dst} failed: ${e.code}: ${e.message}`);
    return e;
  }
  return new MicroserveError('TRANSFER_FAILED', `KV transfer to ${dst} failed: ${(e as Error)?.message ?? String(e)}`);
}

function deadlineError(dst: string): MicroserveError {
  return new MicroserveError('TRANSFER_TIMEOUT', `KV transfer to ${dst} passed its deadline`);
}

/** The deadline check: ms left until `deadline` (epoch ms), or TRANSFER_TIMEOUT when none is. */
export function timeLeft(deadline: number, dst: string): number {
  const left = deadline - Date.now();
  if (left <= 0) throw deadlineError(dst);
  return left;
}

/** One query to `engine/<dst>` bounded by `deadline`; failures mapped by transferError. */
export async function queryBefore<T>(system: ActorSystemApi, dst: string, msg: object, deadline: number): Promise<T> {
  const left = timeLeft(deadline, dst);
  try {
    return (await system.ref(`engine/${dst}`).query(msg, left)) as T;
  } catch (e) {
    throw transferError(e, dst);
  }
}

/** [endTimeoutMs=10000] how long the sender waits for the receiver's reply to kv_push_end. */
const PUSH_END_TIMEOUT_MS = 10_000;

/** kv_push_begin / kv_push_end queries to `engine/<dst>` (shared by the GPU push transports). */
export function pushMessages(system: ActorSystemApi, dst: string): Pick<PushOps, 'begin' | 'end'> {
  return {
    async begin(id, pageIds, deadline) {
      const ttlMs = timeLeft(deadline, dst);
      await queryBefore(system, dst, { type: 'kv_push_begin', id, pageIds, ttlMs }, deadline);
    },
    async end(id, ok) {
      const r = await queryBefore<{ bytes: number }>(system, dst, { type: 'kv_push_end', id, ok }, Date.now() + PUSH_END_TIMEOUT_MS);
      return r.bytes;
    },
  };
}

/** `write` of a transport that moves pages only by push. */
export function noWrite(name: string): KvTransport['write'] {
  return () => Promise.reject(new MicroserveError('TRANSFER_FAILED', `${name} moves pages by push, not write`));
}
