/**
 * Messages between a grammar client (worker-client.ts) and its worker thread (grammar-worker.ts).
 * The worker owns one xgrammar instance (compiled grammars and every request's matcher), so
 * compiling a schema, which can take seconds, never blocks the engine's or the router's event
 * loop (nor their heartbeats).
 */
import type { WireError } from '../../../common/errors.ts';
import type { GrammarSpec } from '../../messages.ts';
import type { TokenizerSource } from '../../text/tokenizer.ts';

/** What the worker is for: checking specs only (the router), or serving an engine's requests. */
export interface GrammarWorkerInit {
  /** null: check only (no vocabulary). */
  tokenizer: TokenizerSource | null;
  vocabSize: number;
  /** Tokens that end generation (allowed where a grammar is complete). */
  eosTokenIds: number[];
  /** [cacheSize=64] compiled grammars kept (LRU by spec text). */
  cacheSize?: number;
}

/** A request's grammar state after an open or an advance: the next mask (transferred), or done. */
export interface GrammarStep {
  handle: number;
  /** ceil(vocabSize / 32) words; null when complete. */
  mask: Uint32Array | null;
  isComplete: boolean;
  error?: WireError;
}

export type GrammarCall =
  | { seq: number; op: 'check'; spec: GrammarSpec; field: string }
  | { seq: number; op: 'open'; handle: number; spec: GrammarSpec; field: string; replay: number[] }
  | { seq: number; op: 'advance'; items: { handle: number; token: number }[] }
  | { seq: number; op: 'close'; handles: number[] };

export type GrammarReply = { seq: number; steps?: GrammarStep[]; error?: WireError; info?: Record<string, unknown> };
