/**
 * KvCacheManager: the page accounting and prefix index of one engine, used synchronously by the
 * engine (the `kv/<name>` actor exposes it read-only). The pages' bytes live in the backend.
 *
 * Lifecycle of a sequence's pages:
 *   1. `openSeq` matches the longest cached prefix and locks it (those pages become `inUse`);
 *   2. `canGrow`/`grow` add private pages (evicting LRU cached pages when the free list is short);
 *   3. `closeSeq` inserts the full pages that hold valid KV into the tree (they become `cached`
 *      once no one locks them), frees duplicates and the rest, and drops the lock.
 * A reservation (`prep_recv`) is a sequence of kind `reserved` with a deadline; `activate`
 * turns it into a running one.
 */
import { MicroserveError } from '../../common/errors.ts';
import type { KvPageStats } from '../messages.ts';
import { checkIntegrity } from './integrity.ts';
import { RadixTree } from './radix-tree.ts';
import type { InsertResult, KvCacheOptions, KvSeq, MatchResult, OpenResult, SeqKind } from './types.ts';

export class KvCacheManager {
  readonly numPages: number;
  readonly pageSize: number;
  /** Pages evicted from the prefix cache since start. */
  numEvictedPages = 0;
  /** @internal read by the integrity check */
  readonly freeList: number[];
  /** @internal */
  readonly tree: RadixTree;
  /** @internal open sequences by id */
  readonly seqs = new Map<string, KvSeq>();
  private numPrivateInUse = 0;
  private numReserved = 0;

  constructor(opts: KvCacheOptions) {
    const pageSize = opts.pageSize ?? 16;
    if (!Number.isInteger(opts.numPages) || opts.numPages < 1) throw new TypeError(`kv numPages must be a positive integer, got ${opts.numPages}`);
    if (!Number.isInteger(pageSize) || pageSize < 1) throw new TypeError(`kv pageSize must be a positive integer, got ${pageSize}`);
    this.numPages = opts.numPages;
    this.pageSize = pageSize;
    this.tree = new RadixTree(pageSize);
    // Reversed so pop() hands out low page ids first (easier to read in logs).
    this.freeList = Array.from({ length: this.numPages }, (_, i) => this.numPages - 1 - i);
  }

  stats(): KvPageStats {
    return {
      total: this.numPages,
      free: this.freeList.length,
      cached: this.tree.numCachedPages,
      inUse: this.tree.numLockedPages + this.numPrivateInUse,
      reserved: this.numReserved,
    };
  }

  /** Pages needed to hold `numTokens` positions. */
  pagesFor(numTokens: number): number {
    return Math.ceil(numTokens / this.pageSize);
  }

  /** Longest cached prefix of `tokens[0, maxLen)` in full pages. Pure: locks and touches nothing. */
  match(tokens: ArrayLike<number>, maxLen = tokens.length): MatchResult {
    const w = this.tree.match(tokens, Math.floor(Math.min(maxLen, tokens.length) / this.pageSize));
    return { matchedLen: w.numPages * this.pageSize, pageIds: w.pageIds };
  }

  /**
   * Evicts every cached page no request holds (benchmarks flush between runs so a later
   * strategy does not profit from an earlier one's prefixes). Returns how many were freed.
   */
  flush(): number {
    const evicted = this.tree.evict(this.tree.numCachedPages);
    this.numEvictedPages += evicted.length;
    for (const p of evicted) this.freeList.push(p); // a spread of a whole pool's ids overflows the stack
    return evicted.length;
  }

  /** True when `n` pages can be allocated now (free plus evictable cached pages). */
  canAllocate(n: number): boolean {
    return this.freeList.length + this.tree.numCachedPages >= n;
  }

  /** Adds `n` private pages to `seq`, evicting LRU cached pages if the free list is short. */
  allocate(seq: KvSeq, n: number): number[] {
    this.assertOpen(seq);
    if (!this.canAllocate(n)) {
      throw new MicroserveError('KV_PAGES_EXHAUSTED', `need ${n} KV pages, ${this.freeList.length} free + ${this.tree.numCachedPages} evictable`);
    }
    if (this.freeList.length < n) {
      const evicted = this.tree.evict(n - this.freeList.length);
      this.numEvictedPages += evicted.length;
      for (const p of evicted) this.freeList.push(p);
    }
    const pages = this.freeList.splice(this.freeList.length - n, n).reverse();
    for (const p of pages) seq.pageIds.push(p);
    this.addPrivate(seq.kind, n);
    return pages;
  }

  /**
   * Opens a sequence: matches `tokens[0, maxMatchLen)` in whole pages and locks that prefix.
   * `kind` 'reserved' makes its private pages count as reserved (prep_recv).
   */
  openSeq(id: string, tokens: ArrayLike<number>, opts: { maxMatchLen?: number; kind?: SeqKind; deadline?: number } = {}): OpenResult {
    if (this.seqs.has(id)) throw new MicroserveError('DUPLICATE_REQUEST', `kv sequence '${id}' is already open`);
    const maxLen = Math.min(opts.maxMatchLen ?? tokens.length, tokens.length);
    const { node, pageIds } = this.tree.matchAndSplit(tokens, Math.floor(Math.max(0, maxLen) / this.pageSize));
    this.tree.lock(node);
    const seq: KvSeq = { id, kind: opts.kind ?? 'inUse', node, numPrefixPages: pageIds.length, pageIds, deadline: opts.deadline, isClosed: false };
    this.seqs.set(id, seq);
    return { seq, matchedLen: pageIds.length * this.pageSize };
  }

  getSeq(id: string): KvSeq | undefined {
    return this.seqs.get(id);
  }

  /** True when `seq` can be grown to hold `numTokens` positions. */
  canGrow(seq: KvSeq, numTokens: number): boolean {
    return this.canAllocate(Math.max(0, this.pagesFor(numTokens) - seq.pageIds.length));
  }

  /** Grows `seq`'s page table to hold `numTokens` positions (throws KV_PAGES_EXHAUSTED). */
  grow(seq: KvSeq, numTokens: number): void {
    const need = this.pagesFor(numTokens) - seq.pageIds.length;
    if (need > 0) this.allocate(seq, need);
  }

  /** Turns a reservation into a running sequence: its private pages go from reserved to inUse. */
  activate(seq: KvSeq): void {
    this.assertOpen(seq);
    if (seq.kind === 'inUse') return;
    const n = seq.pageIds.length - seq.numPrefixPages;
    this.addPrivate('reserved', -n);
    seq.kind = 'inUse';
    seq.deadline = undefined;
    this.addPrivate('inUse', n);
  }

  /**
   * Closes `seq`. With `cache`, the full pages holding `tokens[0, numValid)` go into the prefix
   * cache (`numValid` = positions whose KV is computed); everything else is freed. The lock on
   * the matched prefix is dropped. Returns what the insert did (null without `cache`).
   */
  closeSeq(seq: KvSeq, cache?: { tokens: ArrayLike<number>; numValid: number }): InsertResult | null {
    this.assertOpen(seq);
    const numPrivate = seq.pageIds.length - seq.numPrefixPages;
    let result: InsertResult | null = null;
    let firstFree = seq.numPrefixPages;
    const toFree: number[] = [];
    if (cache) {
      const numValid = Math.min(cache.numValid, cache.tokens.length, seq.pageIds.length * this.pageSize);
      const numFull = Math.max(seq.numPrefixPages, Math.floor(numValid / this.pageSize));
      if (numFull > seq.numPrefixPages) {
        result = this.tree.insert(cache.tokens, seq.pageIds.slice(0, numFull));
        toFree.push(...result.duplicatePageIds);
        firstFree = numFull;
      } else {
        result = { numNewPages: 0, duplicatePageIds: [] };
      }
    }
    for (let i = firstFree; i < seq.pageIds.length; i++) toFree.push(seq.pageIds[i]);
    this.addPrivate(seq.kind, -numPrivate);
    for (const p of toFree) this.freeList.push(p);
    this.tree.unlock(seq.node);
    seq.isClosed = true;
    this.seqs.delete(seq.id);
    return result;
  }

  /** Throws KvIntegrityError naming the first failed equation. */
  checkIntegrity(): void {
    checkIntegrity(this);
  }

  private addPrivate(kind: SeqKind, n: number): void {
    if (kind === 'reserved') this.numReserved += n;
    else this.numPrivateInUse += n;
  }

  private assertOpen(seq: KvSeq): void {
    if (seq.isClosed || this.seqs.get(seq.id) !== seq) throw new Error(`kv sequence '${seq.id}' is not open`);
  }
}
