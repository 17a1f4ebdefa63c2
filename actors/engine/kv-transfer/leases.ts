/**
 * GPU push leases, receiver side (`kv_push_begin` / `kv_push_end`, see messages.ts).
 *
 * With cuda-ipc and nvshmem the sender writes into this engine's reserved pages from its own GPU
 * stream, layer by layer while it prefills, so the writes are not this process's to wait for.
 * A lease makes that safe: it registers the push as a pending write of the reservation
 * (reservations.ts), so an abort or an expiry meanwhile keeps the pages out of the pool
 * (quarantined) until the lease ends; `start_generate` on it is refused while it lives. A lease
 * whose end never comes (the sender died or hung) ends by itself at the sender's deadline plus
 * the grace: a live sender stops issuing writes at its deadline and one forward step finishes
 * well within the grace. The receiver (receiver.ts) owns one PushLeases and counts what landed.
 */
import { MicroserveError } from '../../../common/errors.ts';
import { log } from '../../../common/log.ts';
import type { Reservation, ReservationTable } from './reservations.ts';

/** [EngineCoreOptions.pushLeaseGraceMs=10000] how long after the sender's deadline an unfinished push lease still quarantines its pages. */
export const LEASE_GRACE_MS = 10_000;

/** A live lease: the reservation, the page indexes it covers, its own end timer. */
export interface Lease {
  readonly r: Reservation;
  readonly indexes: number[];
  readonly timer: NodeJS.Timeout;
}

/** A lease that ended: `written` when the pages now hold the KV (sender ok, reservation live). */
export interface EndedLease {
  r: Reservation;
  indexes: number[];
  isWritten: boolean;
}

export class PushLeases {
  private readonly live = new Map<string, Lease>();

  constructor(
    private readonly reservations: ReservationTable,
    private readonly engine: string,
    /** [graceMs=LEASE_GRACE_MS] */
    private readonly graceMs = LEASE_GRACE_MS,
  ) {}

  get size(): number {
    return this.live.size;
  }

  has(id: string): boolean {
    return this.live.has(id);
  }

  /** Leases `pageIds` of reservation `id` for `ttlMs` + grace (typed refusals as kv_write's). */
  begin(id: string, pageIds: number[], ttlMs: number): void {
    if (this.live.has(id)) throw new MicroserveError('DUPLICATE_REQUEST', `kv_push_begin: a push for '${id}' is already running into ${this.engine}`);
    const { r, indexes } = this.reservations.beginWrite(id, pageIds, 'kv_push_begin');
    const timer = setTimeout(() => {
      log.warn('KV push lease ended without kv_push_end; pages released unwritten', { engine: this.engine, id, pages: indexes.length });
      this.end(id, false);
    }, ttlMs + this.graceMs);
    timer.unref?.();
    this.live.set(id, { r, indexes, timer });
  }

  /** Ends the lease of `id` (null when none lives); with `written` its pages count as filled. */
  end(id: string, written: boolean): EndedLease | null {
    const l = this.live.get(id);
    if (!l) return null;
    clearTimeout(l.timer);
    this.live.delete(id);
    const isWritten = written && !l.r.isClosing;
    this.reservations.endWrite(l.r, isWritten ? l.indexes : null);
    return { r: l.r, indexes: l.indexes, isWritten };
  }

  /** Ends every lease unwritten (the engine closes). */
  endAll(): void {
    for (const id of [...this.live.keys()]) this.end(id, false);
  }
}
