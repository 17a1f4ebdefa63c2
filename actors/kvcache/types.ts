/**
 * Types of the KV-cache manager: typed results of its operations and the per-sequence handle.
 *
 * Page states (each page is in exactly one):
 * - `free`: on the free list;
 * - `cached`: owned by the radix tree, no sequence locks it (evictable, LRU);
 * - `inUse`: owned by the radix tree and locked by at least one sequence, or owned privately by a
 *   running sequence;
 * - `reserved`: owned privately by a `prep_recv` reservation that has not started yet.
 * Invariant: `free + cached + inUse + reserved == total`, and no page has two owners.
 */
import type { RadixNode } from './radix-tree.ts';

export interface KvCacheOptions {
  /** Pages in the pool (the backend's `numPages`). */
  numPages: number;
  /** [pageSize=16] tokens per page. */
  pageSize?: number;
}

/** What the prefix cache holds for a token sequence. Pure lookup: nothing is locked or touched. */
export interface MatchResult {
  /** Matched tokens, a multiple of pageSize (only full pages are cached). */
  matchedLen: number;
  /** Pages holding positions [0, matchedLen): pageIds[i] holds [i*pageSize, (i+1)*pageSize). */
  pageIds: number[];
}

/** What `insert` did with the pages it was given. */
export interface InsertResult {
  /** Pages adopted by the tree (now `cached` or `inUse`). */
  numNewPages: number;
  /** Given pages whose tokens were already cached under other page ids; the caller frees them. */
  duplicatePageIds: number[];
}

export type SeqKind = 'inUse' | 'reserved';

/**
 * The pages of one sequence (a running request, a send, or a reservation).
 * Contract: `pageIds[0, numPrefixPages)` are radix-tree pages locked through `node`; they must not
 * be written (other sequences may read them). `pageIds[numPrefixPages, ...)` are private.
 */
export interface KvSeq {
  readonly id: string;
  kind: SeqKind;
  /** Deepest locked radix node (the root when nothing matched). */
  readonly node: RadixNode;
  readonly numPrefixPages: number;
  /** Page table: pageIds[i] holds positions [i*pageSize, (i+1)*pageSize). */
  readonly pageIds: number[];
  /** [deadline] epoch ms after which a reservation expires (reservations only). */
  deadline?: number;
  isClosed: boolean;
}

/** What `openSeq` found in the cache and locked. */
export interface OpenResult {
  seq: KvSeq;
  /** Tokens whose KV the locked prefix pages already hold (multiple of pageSize). */
  matchedLen: number;
}

/** Thrown by `checkIntegrity`: an invariant of the accounting does not hold (a bug, not input). */
export class KvIntegrityError extends Error {
  constructor(message: string) {
    super(`kv integrity: ${message}`);
    this.name = 'KvIntegrityError';
  }
}
