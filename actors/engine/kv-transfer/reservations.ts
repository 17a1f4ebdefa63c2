/**
 * The reservation table of the receiver (receiver.ts owns it): `prep_recv` reservations and the
 * pending writes (kv_write, push leases) that fill them.
 *
 * A reservation holds pages for positions [0, end) of a prompt: the cached prefix [0, matchedLen)
 * locked in the radix tree, and private `reserved` pages for [matchedLen, end) that only a
 * kv_write for the same id may fill. It ends one of three ways: `take` (start_generate turns it
 * into a running request), `release` (abort), or expiry after its ttl. Pages are never freed
 * while a write into them is still running on the backend, or while a sender's GPU push into
 * them may still land (leases.ts: a lease is a pending write): the release waits for them.
 */
import { MicroserveError } from '../../../common/errors.ts';
import type { KvCacheManager } from '../../kvcache/manager.ts';
import type { KvSeq } from '../../kvcache/types.ts';
import { log } from '../../../common/log.ts';

export interface Reservation {
  readonly id: string;
  readonly promptIds: number[];
  readonly end: number;
  readonly matchedLen: number;
  readonly seq: KvSeq;
  /** Indexes (into seq.pageIds) of the pages a kv_write has filled. */
  readonly written: Set<number>;
  numPendingWrites: number;
  /** Set once the reservation is released or expired (its pages go back when writes finish). */
  isClosing: boolean;
  timer: NodeJS.Timeout | null;
}

/** Ids of expired reservations are remembered (bounded) so a late message gets RESERVATION_EXPIRED. */
const MAX_EXPIRED_IDS = 4096;

export class ReservationTable {
  private readonly live = new Map<string, Reservation>();
  private readonly expired = new Set<string>();

  constructor(
    private readonly kv: KvCacheManager,
    /** Called when pages went back to the pool (the engine may schedule again). */
    private readonly onPagesReleased: () => void,
  ) {}

  get size(): number {
    return this.live.size;
  }

  has(id: string): boolean {
    return this.live.has(id);
  }

  get(id: string): Reservation | undefined {
    return this.live.get(id);
  }

  isExpired(id: string): boolean {
    return this.expired.has(id);
  }

  /** Throws KV_PAGES_EXHAUSTED (and holds nothing) when the pages cannot be had now. */
  create(id: string, promptIds: number[], end: number, ttlMs: number): Reservation {
    this.expired.delete(id);
    const maxMatchLen = Math.min(end, promptIds.length - 1);
    const { seq, matchedLen } = this.kv.openSeq(id, promptIds, { maxMatchLen, kind: 'reserved', deadline: Date.now() + ttlMs });
    if (!this.kv.canGrow(seq, end)) {
      const need = this.kv.pagesFor(end) - seq.pageIds.length;
      this.kv.closeSeq(seq);
      const st = this.kv.stats();
      throw new MicroserveError('KV_PAGES_EXHAUSTED', `prep_recv '${id}': needs ${need} pages, ${st.free} free + ${st.cached} evictable`);
    }
    this.kv.grow(seq, end);
    const r: Reservation = { id, promptIds, end, matchedLen, seq, written: new Set(), numPendingWrites: 0, isClosing: false, timer: null };
    r.timer = setTimeout(() => this.expire(id), ttlMs);
    r.timer.unref?.();
    this.live.set(id, r);
    return r;
  }

  /**
   * Validates a kv_write: pages of a live reservation for `id`, only its private pages.
   * Returns the page indexes and marks a write pending; call `endWrite` when it is done.
   */
  beginWrite(id: string, pageIds: number[], op = 'kv_write'): { r: Reservation; indexes: number[] } {
    const r = this.live.get(id);
    if (!r || r.isClosing) {
      if (this.expired.has(id)) throw new MicroserveError('RESERVATION_EXPIRED', `${op}: the reservation for '${id}' expired`);
      throw new MicroserveError('UNKNOWN_REQUEST', `${op}: no live reservation for '${id}'`);
    }
    const indexes = pageIds.map((p) => {
      const i = r.seq.pageIds.indexOf(p);
      if (i < r.seq.numPrefixPages) throw new MicroserveError('BAD_MESSAGE', `${op} '${id}': page ${p} is not one of the pages reserved for it`, { field: 'pageIds' });
      return i;
    });
    r.numPendingWrites++;
    return { r, indexes };
  }

  endWrite(r: Reservation, indexes: number[] | null): void {
    r.numPendingWrites--;
    if (indexes) for (const i of indexes) r.written.add(i);
    if (r.isClosing && r.numPendingWrites === 0) this.free(r);
  }

  /** Tokens of [matchedLen, end) held by the page at `index`. */
  tokensInPage(r: Reservation, index: number): number {
    const ps = this.kv.pageSize;
    return Math.max(0, Math.min(r.end, (index + 1) * ps) - Math.max(r.matchedLen, index * ps));
  }

  /** Hands the reservation's pages over (start_generate); the caller owns `seq` from now on. */
  take(id: string): Reservation {
    const r = this.live.get(id)!;
    if (r.timer) clearTimeout(r.timer);
    this.live.delete(id);
    this.kv.activate(r.seq);
    return r;
  }

  /** Abort: the pages go back (once pending writes end). */
  release(id: string): boolean {
    const r = this.live.get(id);
    if (!r) return false;
    this.close(r);
    return true;
  }

  releaseAll(): void {
    for (const r of [...this.live.values()]) this.close(r);
  }

  private expire(id: string): void {
    const r = this.live.get(id);
    if (!r) return;
    log.info('prep_recv reservation expired', { id, pages: r.seq.pageIds.length - r.seq.numPrefixPages });
    this.expired.add(id);
    if (this.expired.size > MAX_EXPIRED_IDS) this.expired.delete(this.expired.values().next().value!);
    this.close(r);
  }

  private close(r: Reservation): void {
    if (r.timer) clearTimeout(r.timer);
    this.live.delete(r.id);
    r.isClosing = true;
    if (r.numPendingWrites === 0) this.free(r);
  }

  private free(r: Reservation): void {
    if (r.seq.isClosed) return;
    this.kv.closeSeq(r.seq);
    this.onPagesReleased();
  }
}
