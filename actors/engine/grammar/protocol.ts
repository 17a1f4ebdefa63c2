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

/**
 * A request's grammar state after an open (its first mask, transferred), an accept or a fill
 * (mask null: a fill writes it into the step's shared matrix).
 */
export interface GrammarStep {
  handle: number;
  /** ceil(vocabSize / 32) words (open only); null otherwise or when complete. */
  mask: Uint32Array | null;
  /** Nothing but a stop token can follow (or one was taken): the request ends with `stop`. */
  isComplete: boolean;
  error?: WireError;
}

/** One row's sampled token for `accept`; `isLast`: the request ends at this token unless its grammar completes (so completion is decided now). */
export interface AcceptItem {
  handle: number;
  token: number;
  isLast: boolean;
}

/** One row of a step's mask matrix for `fill`: handle's next mask goes to row `row`. */
export interface FillItem {
  handle: number;
  row: number;
}

/**
 * - `accept`: each handle takes its sampled token (cheap: no mask); answers completion where the
 *   matcher terminated, or was asked (`isLast`), and out-of-grammar tokens.
 * - `fill`: each handle's next mask written into its row of `target` ((rows, words) uint32, shared
 *   with the engine, which hands it to the step's mask gate); rows whose grammar completed or
 *   failed are written all-allowed (their token is discarded). With `accepts`, those are taken
 *   first, as an `accept` call would, and answered at once in a partial reply (`accepted`, before
 *   the masks are computed, so their tokens can be streamed meanwhile): the engine sends the previous
 *   step's tokens with the next step's fill, in one call, while that step's forward runs.
 */
export type GrammarCall =
  | { seq: number; op: 'check'; spec: GrammarSpec; field: string }
  | { seq: number; op: 'open'; handle: number; spec: GrammarSpec; field: string; replay: number[] }
  | { seq: number; op: 'accept'; items: AcceptItem[] }
  | { seq: number; op: 'fill'; items: FillItem[]; target: SharedArrayBuffer; words: number; accepts?: AcceptItem[] }
  | { seq: number; op: 'close'; handles: number[] };

/** `steps`: one per item of the call; `accepted` (in a partial reply, `isPartial`, that the call's final one follows): one per item of a fill's `accepts`. */
export type GrammarReply = { seq: number; steps?: GrammarStep[]; accepted?: GrammarStep[]; isPartial?: boolean; error?: WireError; info?: Record<string, unknown> };
