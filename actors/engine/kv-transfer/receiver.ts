/**
 * The receiver of KV transfers (docs/ARCHITECTURE.md, request lifecycle steps 3 and 5), owned by
 * the engine core the way its scheduler is:
 *
 * - `prep_recv`: match the prefix cache (at most min(end, len - 1) tokens, so the reserved range
 *   always holds the last prompt position privately), reserve pages for [matched, end), reply
 *   with every page id of [0, end). Refuses with KV_PAGES_EXHAUSTED. Reservations expire.
 * - `kv_write` (host transport): bytes into pages of that reservation only.
 * - `kv_push_begin` / `kv_push_end` (GPU push transports): a lease over the reserved pages while
 *   the sender's GPU writes into them (leases.ts).
 * - `claim` (start_generate on a reservation): positions [0, begin) come from the reservation;
 *   a page no transfer filled is recomputed. Refused while a push lease lives.
 *
 * Every path that fills pages ends in `countReceived`, the one place received bytes and tokens
 * are counted.
 */
import type { Backend } from '../../../native/backend.ts';
import { MicroserveError } from '../../../common/errors.ts';
import { log } from '../../../common/log.ts';
import type { KvCacheManager } from '../../kvcache/manager.ts';
import type { KvSeq } from '../../kvcache/types.ts';
import type { EngineCounters, KvAddr, KvIpcAddr, KvNvshmemAddr, KvPushBeginMsg, KvPushEndMsg, KvWriteMsg, PrepRecvMsg, PrepRecvResult } from '../../messages.ts';
import { checkFits, checkId, checkInt, checkTokens, type Capacity } from '../validate.ts';
import { checkPageIds } from './checks.ts';
import { PushLeases } from './leases.ts';
import { ReservationTable, type Reservation } from './reservations.ts';

/** [defaultTtlMs=30000] ttl of a prep_recv reservation when the message sets none. */
export const DEFAULT_TTL_MS = 30_000;

/** What the receiver asks of its engine. */
export interface ReceiverHooks {
  /** Whether a generate request `id` lives on the engine (prep_recv refuses a duplicate id). */
  hasRequest(id: string): boolean;
  /** Pages went back to the pool: the engine may schedule again. */
  onPagesReleased(): void;
}

export interface ReceiverOptions {
  name: string;
  kv: KvCacheManager;
  backend: Pick<Backend, 'pageBytes' | 'writePages'>;
  vocabSize: number;
  capacity: Capacity;
  counters: EngineCounters;
  /** Transports advertised in this engine's KvAddr, fastest first. */
  transports: string[];
  /** [ipc] this engine's pool over CUDA IPC, advertised in its KvAddr. */
  ipc?: KvIpcAddr;
  /** [nvshmem] this engine's place in an NVSHMEM job, advertised in its KvAddr. */
  nvshmem?: KvNvshmemAddr;
  /** [defaultTtlMs=DEFAULT_TTL_MS] */
  defaultTtlMs?: number;
  /** [pushLeaseGraceMs=LEASE_GRACE_MS] see leases.ts. */
  pushLeaseGraceMs?: number;
}

/** A reservation handed to start_generate: its pages, and the first position to compute. */
export interface Claim {
  seq: KvSeq;
  start: number;
  matchedLen: number;
}

export class KvReceiver {
  readonly reservations: ReservationTable;
  readonly leases: PushLeases;
  private isClosed = false;

  constructor(
    private readonly o: ReceiverOptions,
    private readonly hooks: ReceiverHooks,
  ) {
    this.reservations = new ReservationTable(o.kv, () => hooks.onPagesReleased());
    this.leases = new PushLeases(this.reservations, o.name, o.pushLeaseGraceMs);
  }

  prepRecv(msg: Omit<PrepRecvMsg, 'type'>): PrepRecvResult {
    const op = 'prep_recv';
    this.assertOpen();
    const id = checkId(msg.id, op);
    const promptIds = checkTokens(msg.promptIds, this.o.vocabSize, op);
    const end = checkInt(msg.end, op, 'end', 1, promptIds.length);
    const ttlMs = checkInt(msg.ttlMs ?? this.o.defaultTtlMs ?? DEFAULT_TTL_MS, op, 'ttlMs', 1);
    if (this.hooks.hasRequest(id) || this.reservations.has(id) || this.o.kv.getSeq(id)) {
      throw new MicroserveError('DUPLICATE_REQUEST', `${op}: request '${id}' already exists on ${this.o.name}`);
    }
    checkFits(promptIds.length, 0, this.o.capacity, op);
    const r = this.reservations.create(id, promptIds, end, ttlMs);
    this.o.counters.prefixHitTokens += r.matchedLen;
    const kvAddr: KvAddr = {
      engine: this.o.name,
      pageIds: [...r.seq.pageIds],
      pageSize: this.o.kv.pageSize,
      matchedLen: r.matchedLen,
      end,
      transports: this.o.transports,
      ...(this.o.ipc ? { ipc: this.o.ipc } : {}),
      ...(this.o.nvshmem ? { nvshmem: this.o.nvshmem } : {}),
    };
    return { matchedLen: r.matchedLen, kvAddr };
  }

  async kvWrite(msg: Omit<KvWriteMsg, 'type'>): Promise<{ ok: true }> {
    const op = 'kv_write';
    this.assertOpen();
    const id = checkId(msg.id, op);
    const pageIds = checkPageIds(msg.pageIds, op, id);
    const { data } = msg;
    const pageBytes = this.o.backend.pageBytes;
    if (!(data instanceof Uint8Array) || data.length !== pageIds.length * pageBytes) {
      throw new MicroserveError('BAD_MESSAGE', `${op} '${id}': data must be ${pageIds.length} pages of ${pageBytes} bytes`, { field: 'data' });
    }
    const { r, indexes } = this.reservations.beginWrite(id, pageIds, op);
    let isWritten = false;
    try {
      await this.o.backend.writePages(Int32Array.from(pageIds), data);
      isWritten = true;
    } finally {
      this.reservations.endWrite(r, isWritten ? indexes : null);
    }
    this.countReceived(r, indexes);
    return { ok: true };
  }

  pushBegin(msg: Omit<KvPushBeginMsg, 'type'>): { ok: true } {
    const op = 'kv_push_begin';
    this.assertOpen();
    const id = checkId(msg.id, op);
    const pageIds = checkPageIds(msg.pageIds, op, id);
    const ttlMs = checkInt(msg.ttlMs, op, 'ttlMs', 1);
    this.leases.begin(id, pageIds, ttlMs);
    return { ok: true };
  }

  pushEnd(msg: Omit<KvPushEndMsg, 'type'>): { ok: true; bytes: number } {
    const op = 'kv_push_end';
    const id = checkId(msg.id, op);
    if (typeof msg.ok !== 'boolean') throw new MicroserveError('BAD_MESSAGE', `${op} '${id}': ok must be a boolean`, { field: 'ok' });
    const ended = this.leases.end(id, msg.ok);
    if (!ended) throw new MicroserveError('TRANSFER_TIMEOUT', `${op}: no live push lease for '${id}' on ${this.o.name} (it ended at its deadline, or never began)`);
    return { ok: true, bytes: ended.isWritten ? this.countReceived(ended.r, ended.indexes) : 0 };
  }

  /**
   * start_generate `id`: its reservation's pages and the first position to compute, from
   * `begin` (capped at len - 1 and the reservation's end) or from the first page no transfer
   * filled. Null when there is no reservation. Typed refusals: expired, a prompt that differs
   * from the prep_recv prompt, a push still writing, pages still held by a released one.
   */
  claim(id: string, promptIds: readonly number[], begin: number, op: string): Claim | null {
    const r = this.reservations.get(id);
    if (!r) {
      if (this.reservations.isExpired(id)) throw new MicroserveError('RESERVATION_EXPIRED', `${op}: the reservation for '${id}' expired`);
      if (this.o.kv.getSeq(id)) throw new MicroserveError('DUPLICATE_REQUEST', `${op}: '${id}' still holds pages on ${this.o.name} (a released reservation finishing a write)`);
      return null;
    }
    if (this.leases.has(id)) {
      throw new MicroserveError('TRANSFER_IN_PROGRESS', `${op} '${id}': a KV push into its pages has not finished (wait for remote_send's reply)`);
    }
    for (let i = 0; i < r.end; i++) {
      if (r.promptIds[i] !== promptIds[i]) {
        throw new MicroserveError('BAD_REQUEST', `${op} '${id}': promptIds differ from the prep_recv prompt at position ${i}`, { field: 'promptIds' });
      }
    }
    return { seq: this.reservations.take(id).seq, start: this.firstToCompute(r, Math.min(begin, promptIds.length - 1)), matchedLen: r.matchedLen };
  }

  /** Abort: the reservation of `id` goes (its pages once pending writes end). */
  release(id: string): boolean {
    return this.reservations.release(id);
  }

  /** Refuses new transfers, ends every lease and reservation. */
  close(): void {
    this.isClosed = true;
    this.leases.endAll();
    this.reservations.releaseAll();
  }

  /** KV for [matchedLen, start) must have arrived: from the first page no transfer filled, it is recomputed. */
  private firstToCompute(r: Reservation, begin: number): number {
    const ps = this.o.kv.pageSize;
    const start = Math.max(r.matchedLen, Math.min(begin, r.end));
    for (let i = r.matchedLen / ps; i * ps < start; i++) {
      if (!r.written.has(i)) {
        log.warn('start_generate: KV not received, recomputing', { engine: this.o.name, id: r.id, from: i * ps, begin: start });
        return i * ps;
      }
    }
    return start;
  }

  /** The receiver's accounting, for every transport: pages `indexes` of `r` now hold their KV. */
  private countReceived(r: Reservation, indexes: number[]): number {
    const bytes = indexes.length * this.o.backend.pageBytes;
    this.o.counters.bytesReceived += bytes;
    for (const i of indexes) this.o.counters.tokensReceived += this.reservations.tokensInPage(r, i);
    return bytes;
  }

  private assertOpen(): void {
    if (this.isClosed) throw new MicroserveError('ACTOR_STOPPED', `engine ${this.o.name} is closed`);
  }
}
